"""Every notebook runs under papermill with smoke parameters (kernel from .venv, passed with -k) and writes the
files it must, with no warning, stderr text or progress bar in its outputs; paths resolve against the project root
whatever the working directory; an interrupted run ends in one sentence; notebooks are committed without outputs,
in nbformat's normalised form; validation rejects unknown values clearly."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from clitools import signal_cell
from dhvtlib import experiments, report
from dhvtlib.data.folder import check_folder
from fakedata import MODES, fake_fashion_mnist, image_folder

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "dhvtlib"
TABLE_COLUMNS = {"tag", "label", "paper_top1", "ours_mean", "ours_std", "n_seeds", "ours_best_of_n", "delta"}


@pytest.fixture(scope="module")
def kernel() -> str:
    """The project's kernel, registered into the running environment if missing (`make setup` registers it)."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", sys.prefix, "--name", KERNEL,
                        "--display-name", "dhvtlib (.venv)"], check=True, capture_output=True)
    return KERNEL


def _papermill(kernel: str, name: str, out_dir: Path, *, cwd: Path | None = None, env: dict | None = None,
               ok: bool = True, first_cell: str | None = None, **params) -> Path:
    """Run a notebook (with `first_cell` run before its own cells); unless told otherwise (`cwd`), from `out_dir`,
    and check its outputs are clean."""
    out = out_dir / f"{name}.out.ipynb"
    cwd = cwd or out_dir
    source = ROOT / "notebooks" / f"{name}.ipynb"
    if first_cell:
        import nbformat

        nb = nbformat.read(source, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell(first_cell))
        source = out_dir / f"{name}.in.ipynb"
        nbformat.write(nb, source)
    args = [sys.executable, "-m", "papermill", str(source), str(out), "-k", kernel,
            "--cwd", str(cwd), "--no-progress-bar", "-y", json.dumps(params)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=cwd, env={**os.environ, **(env or {})})
    assert (r.returncode == 0) == ok, r.stderr[-4000:]
    if ok:
        _assert_clean_outputs(out)
    return out


WARNING = re.compile(r"warn|deprecat|IProgress|Traceback", re.IGNORECASE)
TQDM = re.compile(r"\d+%\||it/s|s/it")


def _outputs(path: Path) -> list[tuple[int, dict]]:
    nb = json.loads(path.read_text())
    return [(i, o) for i, c in enumerate(nb["cells"]) for o in c.get("outputs", [])]


def _text(output: dict) -> str:
    """An output's text (streams, text/* and JSON data, tracebacks); images are not text (base64 may spell 'warn')."""
    data = [v for k, v in output.get("data", {}).items() if not k.startswith("image/")]
    parts = [output.get("text", ""), *data, *output.get("traceback", [])]
    return "".join("".join(p) if isinstance(p, list) else p if isinstance(p, str) else json.dumps(p) for p in parts)


def _assert_clean_outputs(path: Path) -> None:
    """No stderr stream, no warning text, no progress bar (text or widget) in any output cell."""
    for i, o in _outputs(path):
        assert not (o["output_type"] == "stream" and o["name"] == "stderr"), (path.name, i, _text(o)[:500])
        assert not WARNING.search(_text(o)), (path.name, i, _text(o)[:500])
        assert not TQDM.search(_text(o)), (path.name, i, _text(o)[:500])
        widget = o.get("data", {}).get("text/plain", "")
        assert "HBox(children=(HTML(value=" not in "".join(widget), (path.name, i)  # tqdm's widget bar


def _all_text(path: Path) -> str:
    return "\n".join(_text(o) for _, o in _outputs(path))


def _table(path: Path) -> pd.DataFrame:
    assert path.with_suffix(".md").is_file()
    df = pd.read_csv(path.with_suffix(".csv"))
    assert TABLE_COLUMNS <= set(df.columns), set(df.columns)
    return df


def test_notebooks_are_committed_clean_and_parameterised():
    assert [p.stem for p in NOTEBOOKS] == ["00_quickstart", "01_cifar100", "02_ablation", "03_domainnet",
                                          "04_imagenet", "05_head_tokens", "06_your_data", "07_data_efficiency"]
    for p in NOTEBOOKS:
        text = p.read_text()
        nb = json.loads(text)
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), p.name
        assert "parameters" in code[0]["metadata"].get("tags", []), p.name
        assert "validate(" in "".join(code[1]["source"]), p.name  # one validation call right after the parameters
        assert nb["metadata"]["kernelspec"] == {"display_name": "dhvtlib (.venv)", "language": "python", "name": KERNEL}


def test_opening_a_notebook_does_not_modify_it():
    """Jupyter saves nbformat's normalised form (plus a newline), and JupyterLab overwrites language_info with the
    kernel's on opening: both must already equal what is committed, or opening marks the notebook modified."""
    import nbformat
    from ipykernel.ipkernel import IPythonKernel

    kernel_info = dict(IPythonKernel.language_info)
    for p in NOTEBOOKS:
        text = p.read_text()
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
        assert nbformat.writes(nb) + "\n" == text, p.name
        assert (nb.nbformat, nb.nbformat_minor) == (4, 5) and all(c.get("id") for c in nb.cells), p.name
        stored = dict(nb.metadata["language_info"])
        assert stored.pop("version").split(".")[:2] == kernel_info.pop("version").split(".")[:2], p.name
        assert stored == kernel_info, p.name
        kernel_info = dict(IPythonKernel.language_info)


def test_validation_rejects_unknown_values_listing_valid_ones():
    """The builders check their own arguments (table, variant, rows, domains); validate the shared ones."""
    with pytest.raises(ValueError, match=r"unknown ablation table 'table7'; choose one of table5, "):
        experiments.ablation_runs("7")
    with pytest.raises(ValueError, match="unknown variant 'huge'; choose 'tiny' or 'small'"):
        experiments.ablation_runs("5", variant="huge")
    with pytest.raises(ValueError, match="row 'nope' is not in table5; choose from: pe, none, "):
        experiments.ablation_runs("5", rows=["nope"])
    with pytest.raises(ValueError, match="domain 'photo' is not a DomainNet domain; choose from: clipart"):
        experiments.domainnet_runs(["photo"])
    with pytest.raises(ValueError, match="model 'dhvt_huge' is not in Table 4; choose from: deit_tiny_cifar_patch4"):
        experiments.cifar100_runs(["dhvt_huge"])
    with pytest.raises(ValueError, match="seeds"):
        experiments.validate(seeds=[-1])
    with pytest.raises(ValueError, match="preset 'fast' is not a valid preset; choose from: .*quick"):
        experiments.validate(preset="fast")
    assert experiments.ablation_table(5) == experiments.ablation_table("5") == "table5"
    assert [s.tag for s in experiments.ablation_runs(5)] == [s.tag for s in experiments.ablation_runs("table5")]


SMOKE = dict(preset="smoke", device="cpu")


def test_00_quickstart_from_another_working_directory(kernel, fmnist, tmp_path):
    """As JupyterLab runs it (working directory notebooks/), with the project root elsewhere (DHVTLIB_ROOT) and
    the default output_dir: runs, tables and figures land under <root>/outputs/results (git-ignored), data_dir
    resolves under <root>."""
    root, cwd = tmp_path / "project", tmp_path / "project" / "notebooks"
    cwd.mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "fm").symlink_to(fmnist)
    out = _papermill(kernel, "00_quickstart", tmp_path, cwd=cwd, env={"DHVTLIB_ROOT": str(root)}, **SMOKE,
                     data_dir="data/fm")
    res = root / "outputs" / "results"
    df = _table(res / "quick" / "table")
    assert set(df["tag"]) == {"dhvt_tiny_cifar_patch4", "deit_tiny_cifar_patch4"}
    for stem in ("quick_curves", "quick_head_tokens"):
        assert (res / "figures" / f"{stem}.png").is_file()
        assert (res / "figures" / f"{stem}.pdf").is_file()
    assert len(list((res / "quick").rglob("manifest.json"))) == 2
    assert sorted(p.name for p in cwd.iterdir()) == []  # nothing written beside the notebook
    assert {p.name for p in (res / "quick").iterdir()} >= {"table.csv", "table.md", "table.tex"}
    text = _all_text(out)
    assert "quick: Fashion-MNIST, preset smoke (" in text and ", seeds 0, commit" in text  # the caption line
    assert "not in the paper" in text and "paper_top1" not in text.split("quick: Fashion-MNIST")[1][:2000]
    epochs = json.loads(next((res / "quick").rglob("manifest.json")).read_text())["config"]["epochs"]
    assert "best_epoch" in text and f"{epochs}/{epochs}" in text  # 1-based, as the log


def test_01_cifar100(kernel, fmnist, tmp_path):
    _papermill(kernel, "01_cifar100", tmp_path, **SMOKE, data_dir=str(fmnist), output_dir=str(tmp_path / "res"),
               dataset="fashion_mnist", seeds=[0], models=["dhvt_tiny_cifar_patch4", "deit_tiny_cifar_patch2"])
    df = _table(tmp_path / "res" / "cifar100" / "table")
    assert df.set_index("tag").loc["table4/dhvt_tiny_cifar_patch4", "paper_top1"] == 80.93


def test_02_ablation_two_seeds(kernel, fmnist, tmp_path):
    _papermill(kernel, "02_ablation", tmp_path, **SMOKE, data_dir=str(fmnist), output_dir=str(tmp_path / "res"),
               dataset="fashion_mnist", table="5", rows=["pe", "sope_daff"], seeds=[0, 1])
    df = _table(tmp_path / "res" / "ablation" / "table5_tiny" / "table").set_index("tag")
    assert df.loc["table5/sope_daff", "paper_top1"] == 80.35 and list(df["n_seeds"]) == [2, 2]
    assert {"paper_delta_vs_baseline", "ours_delta_vs_baseline"} <= set(df.columns)
    assert df.loc["table5/sope_daff", "paper_delta_vs_baseline"] == pytest.approx(12.76)
    assert (tmp_path / "res" / "figures" / "ablation_table5_tiny_paper_vs_ours.png").is_file()


def test_03_domainnet(kernel, fmnist, tmp_path):
    _papermill(kernel, "03_domainnet", tmp_path, **SMOKE, data_dir=str(fmnist), output_dir=str(tmp_path / "res"),
               dataset="fashion_mnist", seeds=[0], domains=["clipart"], models=["dhvt_tiny_domain_patch16"])
    df = _table(tmp_path / "res" / "domainnet" / "table")
    assert df["paper_top1"].tolist() == [71.73]


def test_04_imagenet_and_finetune(kernel, fmnist, tmp_path):
    _papermill(kernel, "04_imagenet", tmp_path, **SMOKE, data_dir=str(fmnist), output_dir=str(tmp_path / "res"),
               dataset="fashion_mnist", models=["dhvt_tiny_imagenet_patch16"], finetune=True,
               finetune_preset="smoke", finetune_targets=["clipart"], finetune_data_dir=str(fmnist),
               finetune_dataset="fashion_mnist")
    assert _table(tmp_path / "res" / "imagenet" / "table")["paper_top1"].tolist() == [76.5]
    ft = _table(tmp_path / "res" / "finetune" / "table")
    assert ft["tag"].tolist() == ["table14/dhvt_tiny_imagenet_patch16/clipart"] and ft["paper_top1"].tolist() == [77.88]
    manifest = json.loads(next((tmp_path / "res" / "finetune").rglob("manifest.json")).read_text())
    assert manifest["config"]["finetune"].endswith("model.safetensors")


def test_05_head_tokens(kernel, fmnist, tmp_path):
    out = _papermill(kernel, "05_head_tokens", tmp_path, **SMOKE, data_dir=str(fmnist),
                     output_dir=str(tmp_path / "res"), n_images=2, n_steps=4)
    figs = tmp_path / "res" / "figures" / "head_tokens"
    for stem in ("head_tokens_0", "head_tokens_1", "class_attention_0", "attributions_0", "attributions_1"):
        assert (figs / f"{stem}.png").is_file() and (figs / f"{stem}.pdf").is_file(), stem
    text = _all_text(out)
    from dhvtlib.data.datasets import FASHION_MNIST_CLASSES

    table = re.findall(r"<td>([^<]+)</td>", text)  # the true / predicted table shows class names, not indices
    assert table and set(table) <= {*FASHION_MNIST_CLASSES, "0", "1"}, table
    assert "VBox" in text  # the explorer was built and drawn headless without error


def test_interrupted_run_ends_in_one_sentence(kernel, fmnist, tmp_path):
    """A Ctrl-C / Kernel > Interrupt mid-epoch (a real SIGINT): the cell ends in the stop sentence, no traceback,
    no stderr progress text; re-running resumes and completes."""
    params = dict(**SMOKE, data_dir=str(fmnist), output_dir=str(tmp_path / "res"), dataset="fashion_mnist",
                  seeds=[0], models=["dhvt_tiny_cifar_patch4"])
    out = _papermill(kernel, "01_cifar100", tmp_path, ok=False, first_cell=signal_cell(0, 1, "INT"), **params)
    errors = [o for _, o in _outputs(out) if o["output_type"] == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "RunInterrupted"
    assert len(errors[0]["traceback"]) == 1 and errors[0]["traceback"][0].endswith("Re-run this cell to resume.")
    for _, o in _outputs(out):
        assert "Traceback" not in _text(o) and not TQDM.search(_text(o))
    _papermill(kernel, "01_cifar100", tmp_path, **params)
    assert _table(tmp_path / "res" / "cifar100" / "table")["n_seeds"].tolist() == [1]


def test_07_data_efficiency(kernel, fmnist, tmp_path):
    """The study's notebook with a tiny budget: every model at two sizes trains (train=True, inline), the table,
    verdicts and figures are written, `make figures` rebuilds the table from the stored runs; with the defaults
    (train=False) nothing trains and the progress line counts what is there."""
    res = tmp_path / "res"
    small = dict(epochs=2, warmup_epochs=0, eval_every=1, checkpoint_every_epochs=1, test_samples_per_class=4)
    _papermill(kernel, "07_data_efficiency", tmp_path, device="cpu", data_dir=str(fmnist), output_dir=str(res),
               samples_per_class=[10, 16], seeds=[0], convergence=False, precision_check=False, train=True,
               launcher="inline", overrides=small)
    out = res / "efficiency" / "fmnist"
    table = pd.read_csv(out / "table.csv")
    assert set(zip(table["model"], table["samples_per_class"])) == {(m, n) for m in ("deit", "dhvt", "resnet",
                                                                                     "resnet_sgd") for n in (10, 16)}
    assert (table["n_seeds"] == 1).all() and set(table["steps"]) == {2, 4}  # 2 epochs of 1 and 2 updates
    assert set(pd.read_csv(out / "verdicts.csv")["samples_per_class"]) == {10, 16}
    assert (res / "figures" / "efficiency_fmnist_top1_vs_samples.png").is_file()
    assert (res / "figures" / "efficiency_fmnist_loss_curves.png").is_file()
    assert len(list(out.rglob("manifest.json"))) == 8
    (out / "table.csv").unlink()
    report.make_figures(res)  # `make figures` rebuilds the study's table from the stored runs
    assert pd.read_csv(out / "table.csv").equals(table)
    nb = _papermill(kernel, "07_data_efficiency", tmp_path, device="cpu", data_dir=str(fmnist), output_dir=str(res),
                    samples_per_class=[10, 16], seeds=[0, 1], convergence=False, precision_check=False,
                    overrides=small)
    assert "16 runs in the plan: 8 completed, 8 not yet" in _all_text(nb)
    assert len(list(out.rglob("manifest.json"))) == 8  # train=False trained nothing


def test_finetune_specs_cover_tables_7_and_14():
    specs = experiments.finetune_runs({"dhvt_small_imagenet_patch16": "w.safetensors"}, ["sketch", "cifar100"])
    assert [(s.tag, s.paper_top1) for s in specs] == [("table14/dhvt_small_imagenet_patch16/sketch", 73.32),
                                                      ("table7/dhvt_small_imagenet_patch16", 88.87)]
    assert specs[1].recipe == {"dataset": "cifar100", "img_size": 224, "finetune": "w.safetensors"}
    assert experiments.finetune_runs(dict.fromkeys(["dhvt_small_imagenet_patch16"]), ["cifar100"])
    with pytest.raises(ValueError, match="finetune target 'photo' is not a fine-tuning target; choose from: clipart"):
        experiments.finetune_runs({}, ["photo"])


def test_06_your_data_on_a_mixed_folder(kernel, tmp_path):
    """A flat folder of PNG/JPEG files of mixed sizes and modes: split, decoded once, two models x two seeds, the
    mean +- std table, curves and head-token maps on the folder's own images."""
    data = image_folder(tmp_path / "mine", classes=3, per_class=10, layout="flat", sizes=(18, 36), modes=MODES)
    _papermill(kernel, "06_your_data", tmp_path, **SMOKE, data_dir=str(data), output_dir=str(tmp_path / "res"), seeds=[0, 1],
               epochs=1, n_images=2, models=["dhvt_tiny_cifar_patch4", "deit_tiny_cifar_patch4"])
    df = _table(tmp_path / "res" / "your_data" / "table").set_index("tag")
    assert set(df.index) == {"dhvt_tiny_cifar_patch4", "deit_tiny_cifar_patch4"} and list(df["n_seeds"]) == [2, 2]
    assert df["paper_top1"].isna().all() and df["ours_std"].notna().all()
    manifest = json.loads(next((tmp_path / "res" / "your_data").rglob("manifest.json")).read_text())
    assert manifest["data"]["layout"] == "split" and manifest["model_config"]["img_size"] == 24  # inferred
    assert len(manifest["data"]["split"]["test_files"]) == 6
    for stem in ("your_data_curves", "your_data_head_tokens_0", "your_data_head_tokens_1"):
        assert (tmp_path / "res" / "figures" / f"{stem}.png").is_file(), stem
    with pytest.raises(ValueError, match="has one class folder"):
        check_folder(str(image_folder(tmp_path / "one", classes=1, per_class=2)))
    with pytest.raises(ValueError, match="data_dir is not set; point it at your folder"):
        check_folder(None)
    with pytest.raises(ValueError, match="img_size 0 must be a positive integer"):
        experiments.validate(img_size=0)


@pytest.mark.parametrize("name", ["00_quickstart", "02_ablation"])
def test_default_parameters_validate_from_the_notebooks_folder(name, monkeypatch):
    """The committed defaults (what `make demo` and a JupyterLab user run) pass the parameters and validation
    cells, and the results root resolves to the project's, from notebooks/ as the working directory."""
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"][:2]
    monkeypatch.chdir(ROOT / "notebooks")
    monkeypatch.delenv("DHVTLIB_RESULTS", raising=False)
    scope: dict = {}
    for source in code:
        exec(compile(source, f"{name}.ipynb", "exec"), scope)
    assert scope["preset"] is None and Path(scope["output_dir"]) == ROOT / "outputs" / "results"


def test_each_row_reads_its_own_data_folder():
    """A DomainNet domain is its own data set (<folder>/<domain>); a mixed table takes {family: folder}; the data
    set override keeps the folder as given."""
    from dhvtlib import viz

    specs = experiments.domainnet_runs(["clipart", "sketch"], ["dhvt_tiny_domain_patch16"])
    assert [experiments.spec_data_dir(s, "/d") for s in specs] == [Path("/d/clipart"), Path("/d/sketch")]
    assert experiments.spec_data_dir(specs[0], "/d", dataset="fashion_mnist") == Path("/d")
    assert experiments.spec_data_dir(specs[0], None) is None
    ft = experiments.finetune_runs({"dhvt_tiny_imagenet_patch16": None}, ["painting", "cifar100"])
    assert [experiments.spec_data_dir(s, {"domainnet": "/dn", "cifar100": "/c"}) for s in ft] == [
        Path("/dn/painting"), Path("/c")]
    assert experiments.spec_data_dir(experiments.cifar100_runs(["dhvt_tiny_cifar_patch4"])[0], "/c") == Path("/c")
    with pytest.raises(ValueError, match="unknown attribution method 'saliency'; choose one of integrated_gradients"):
        viz.check_methods(["occlusion", "saliency"])


def _clean_copy(tmp_path: Path) -> Path:
    """The repository's tracked files (as they are in this checkout) in a new git repository: a fresh clone."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    copy = tmp_path / "clone"
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).write_bytes(src.read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run(["git", "add", "-A"], cwd=copy, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "copy"], cwd=copy, check=True)
    return copy


@pytest.mark.slow
def test_00_then_05_with_their_defaults_on_a_fresh_clone(kernel, tmp_path):
    """A new user: Run All on 00 then 05 with their defaults, from notebooks/, on a fresh clone whose committed
    results/quick has no weights. 00 trains (a reused run without weights would break its last cell), 05 finds
    00's model, nothing tracked changes, and everything lands in the git-ignored outputs/results."""
    copy = _clean_copy(tmp_path)
    (copy / "data").mkdir()
    fake_fashion_mnist(copy / "data" / "fashion-mnist", train_per_class=100, test_per_class=200)
    env = {"DHVTLIB_ROOT": str(copy), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env = {**env, "DHVTLIB_RESULTS": ""}  # (unset: the default)
    out00 = _papermill(kernel, "00_quickstart", tmp_path, cwd=copy / "notebooks", env=env)
    out05 = _papermill(kernel, "05_head_tokens", tmp_path, cwd=copy / "notebooks", env=env)
    res = copy / "outputs" / "results"
    weights = res / "quick" / "dhvt_tiny_cifar_patch4" / "s0" / "model.safetensors"
    assert weights.is_file() and (res / "figures" / "quick_head_tokens.png").is_file()
    assert f"model: {weights}" in _all_text(out05) and "VBox" in _all_text(out05)
    assert (res / "figures" / "head_tokens" / "head_tokens_0.png").is_file()
    for out in (out00, out05):
        assert "Traceback" not in _all_text(out)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=copy, capture_output=True, text=True).stdout
    assert status == "", status


def test_refusals_name_every_run_in_one_sentence(kernel, fmnist, tmp_path):
    """Re-running 00 with other epochs over completed runs: one sentence (no traceback) naming both runs, with the
    notebook's parameter names and the non-destructive ways first."""
    params = dict(**SMOKE, data_dir=str(fmnist), output_dir=str(tmp_path / "res"), dataset="fashion_mnist")
    _papermill(kernel, "00_quickstart", tmp_path, **params)
    out = _papermill(kernel, "00_quickstart", tmp_path, ok=False, **{**params, "epochs": 3})
    errors = [o for _, o in _outputs(out) if o["output_type"] == "error"]
    assert len(errors) == 1 and len(errors[0]["traceback"]) == 1, errors
    text = errors[0]["traceback"][0]
    assert text.startswith("ValueError: 2 completed run(s) under ") and "epochs 2 -> 3" in text
    assert "quick/dhvt_tiny_cifar_patch4/s0" in text and "quick/deit_tiny_cifar_patch4/s0" in text
    assert text.index("experiment") < text.index("output_dir") < text.index("delete")
    assert "results_root" not in text
