"""Every notebook runs under papermill with smoke parameters (kernel from .venv, passed with -k) and writes the
files it must; notebooks are committed without outputs; validation rejects unknown values clearly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dhvtlib import experiments, results
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


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory) -> Path:
    return fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"), train_per_class=16, test_per_class=4)


def _papermill(kernel: str, name: str, out_dir: Path, **params) -> Path:
    out = out_dir / f"{name}.out.ipynb"
    args = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / f"{name}.ipynb"), str(out), "-k", kernel,
            "--cwd", str(out_dir), "--no-progress-bar", "-y", json.dumps(params)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=out_dir)
    assert r.returncode == 0, r.stderr[-4000:]
    return out


def _table(path: Path) -> pd.DataFrame:
    assert path.with_suffix(".md").is_file()
    df = pd.read_csv(path.with_suffix(".csv"))
    assert TABLE_COLUMNS <= set(df.columns), set(df.columns)
    return df


def test_notebooks_are_committed_clean_and_parameterised():
    assert [p.stem for p in NOTEBOOKS] == ["00_quickstart", "01_cifar100", "02_ablation", "03_domainnet",
                                          "04_imagenet", "05_head_tokens", "06_your_data", "07_data_efficiency"]
    for p in NOTEBOOKS:
        nb = json.loads(p.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), p.name
        assert "parameters" in code[0]["metadata"].get("tags", []), p.name
        assert "validate(" in "".join(code[1]["source"]), p.name  # one validation call right after the parameters
        assert nb["metadata"]["kernelspec"]["name"] == KERNEL


def test_validation_rejects_unknown_values_listing_valid_ones():
    with pytest.raises(ValueError, match=r"table 'table7' is not valid for 02_ablation; choose from: table5, "):
        experiments.validate("02_ablation", table="7")
    with pytest.raises(ValueError, match="variant 'huge' is not valid for 02_ablation; choose from: tiny, small"):
        experiments.validate("02_ablation", variant="huge")
    with pytest.raises(ValueError, match="row 'nope' is not in table5; choose from: pe, none, "):
        experiments.validate("02_ablation", table="5", rows=["nope"])
    with pytest.raises(ValueError, match="domains 'photo' is not valid"):
        experiments.validate("03_domainnet", domains=["photo"])
    with pytest.raises(ValueError, match="seeds"):
        experiments.validate("02_ablation", seeds=[-1])
    with pytest.raises(ValueError, match="preset 'fast' is not valid .*quick"):
        experiments.validate("00_quickstart", preset="fast")
    assert experiments.validate("02_ablation", table=5)["table"] == "table5"


SMOKE = dict(preset="smoke", device="cpu")


def test_00_quickstart(kernel, fmnist, tmp_path):
    _papermill(kernel, "00_quickstart", tmp_path, **SMOKE, data_dir=str(fmnist), output_dir="res")
    df = _table(tmp_path / "res" / "quick" / "table")
    assert set(df["tag"]) == {"dhvt_tiny_cifar_patch4", "deit_tiny_cifar_patch4"}
    for stem in ("quick_curves", "quick_head_tokens"):
        assert (tmp_path / "res" / "figures" / f"{stem}.png").is_file()
        assert (tmp_path / "res" / "figures" / f"{stem}.pdf").is_file()
    assert len(list((tmp_path / "res" / "quick").rglob("manifest.json"))) == 2


def test_01_cifar100(kernel, fmnist, tmp_path):
    _papermill(kernel, "01_cifar100", tmp_path, **SMOKE, data_dir=str(fmnist), output_dir="res",
               dataset="fashion_mnist", seeds=[0], models=["dhvt_tiny_cifar_patch4", "deit_tiny_cifar_patch2"])
    df = _table(tmp_path / "res" / "cifar100" / "table")
    assert df.set_index("tag").loc["table4/dhvt_tiny_cifar_patch4", "paper_top1"] == 80.93


def test_02_ablation_two_seeds(kernel, fmnist, tmp_path):
    _papermill(kernel, "02_ablation", tmp_path, **SMOKE, data_dir=str(fmnist), output_dir="res",
               dataset="fashion_mnist", table="5", rows=["pe", "sope_daff"], seeds=[0, 1])
    df = _table(tmp_path / "res" / "ablation" / "table5_tiny" / "table").set_index("tag")
    assert df.loc["table5/sope_daff", "paper_top1"] == 80.35 and list(df["n_seeds"]) == [2, 2]
    assert {"paper_delta_vs_baseline", "ours_delta_vs_baseline"} <= set(df.columns)
    assert df.loc["table5/sope_daff", "paper_delta_vs_baseline"] == pytest.approx(12.76)
    assert (tmp_path / "res" / "figures" / "ablation_table5_tiny_paper_vs_ours.png").is_file()


def test_03_domainnet(kernel, fmnist, tmp_path):
    _papermill(kernel, "03_domainnet", tmp_path, **SMOKE, data_dir=str(fmnist), output_dir="res",
               dataset="fashion_mnist", seeds=[0], domains=["clipart"], models=["dhvt_tiny_domain_patch16"])
    df = _table(tmp_path / "res" / "domainnet" / "table")
    assert df["paper_top1"].tolist() == [71.73]


def test_04_imagenet_and_finetune(kernel, fmnist, tmp_path):
    _papermill(kernel, "04_imagenet", tmp_path, **SMOKE, data_dir=str(fmnist), output_dir="res",
               dataset="fashion_mnist", models=["dhvt_tiny_imagenet_patch16"], finetune=True,
               finetune_preset="smoke", finetune_targets=["clipart"], finetune_data_dir=str(fmnist),
               finetune_dataset="fashion_mnist")
    assert _table(tmp_path / "res" / "imagenet" / "table")["paper_top1"].tolist() == [76.5]
    ft = _table(tmp_path / "res" / "finetune" / "table")
    assert ft["tag"].tolist() == ["table14/dhvt_tiny_imagenet_patch16/clipart"] and ft["paper_top1"].tolist() == [77.88]
    manifest = json.loads(next((tmp_path / "res" / "finetune").rglob("manifest.json")).read_text())
    assert manifest["config"]["finetune"].endswith("model.safetensors")


def test_05_head_tokens(kernel, fmnist, tmp_path):
    _papermill(kernel, "05_head_tokens", tmp_path, **SMOKE, data_dir=str(fmnist), output_dir="res", n_images=2,
               n_steps=4)
    figs = tmp_path / "res" / "figures"
    for stem in ("head_tokens_0", "head_tokens_1", "class_attention_0", "attributions_0", "attributions_1"):
        assert (figs / f"{stem}.png").is_file() and (figs / f"{stem}.pdf").is_file(), stem


def test_07_data_efficiency(kernel, fmnist, tmp_path):
    _papermill(kernel, "07_data_efficiency", tmp_path, **SMOKE, data_dir=str(fmnist), results_root="res",
               samples_per_class=[4, 8], seeds=[0], steps=2, batch_size=16, embed_dim=32, depth=2,
               test_samples_per_class=4)
    out = tmp_path / "res" / "efficiency" / "fmnist"
    table = pd.read_csv(out / "efficiency.csv")
    assert set(zip(table["model"], table["samples_per_class"])) == {(m, n) for m in ("deit", "dhvt", "resnet")
                                                                     for n in (4, 8)}
    assert (table["n_seeds"] == 1).all() and (table["steps"] == table["samples_per_class"] * 10 // 16).all()
    assert set(pd.read_csv(out / "gaps.csv")["samples_per_class"]) == {4, 8}
    assert all((out / f"top1_vs_samples.{ext}").is_file() for ext in ("png", "pdf"))
    assert (out / "efficiency.md").read_text().count("| deit |") == 2
    assert len(list(out.rglob("manifest.json"))) == 6
    (out / "efficiency.csv").unlink()
    results.make_figures(tmp_path / "res")  # `make figures` rebuilds the study's table from the stored runs
    assert pd.read_csv(out / "efficiency.csv").equals(table)
    assert not (tmp_path / "res" / "figures" / "efficiency_fmnist_curves.png").exists()


def test_finetune_specs_cover_tables_7_and_14():
    specs = experiments.finetune_runs({"dhvt_small_imagenet_patch16": "w.safetensors"}, ["sketch", "cifar100"])
    assert [(s.tag, s.paper_top1) for s in specs] == [("table14/dhvt_small_imagenet_patch16/sketch", 73.32),
                                                      ("table7/dhvt_small_imagenet_patch16", 88.87)]
    assert specs[1].recipe == {"dataset": "cifar100", "img_size": 224, "finetune": "w.safetensors"}
    assert experiments.validate("04_imagenet", finetune_targets=["cifar100"])


def test_06_your_data_on_a_mixed_folder(kernel, tmp_path):
    """A flat folder of PNG/JPEG files of mixed sizes and modes: split, decoded once, two models x two seeds, the
    mean +- std table, curves and head-token maps on the folder's own images."""
    data = image_folder(tmp_path / "mine", classes=3, per_class=10, layout="flat", sizes=(18, 36), modes=MODES)
    _papermill(kernel, "06_your_data", tmp_path, **SMOKE, data_dir=str(data), output_dir="res", seeds=[0, 1],
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
        experiments.validate("06_your_data", data_dir=str(image_folder(tmp_path / "one", classes=1, per_class=2)))
    with pytest.raises(ValueError, match="img_size 0 must be a positive integer"):
        experiments.validate("06_your_data", data_dir=str(data), img_size=0)
