"""dhvtlib.results: reported.csv against the spec's tables, the exported paper tables, and the run pipeline
(load, aggregate, compare, write, figures) on fabricated run directories."""
import json
import math
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dhvtlib import results, table_display, viz  # noqa: E402
from dhvtlib.paper import reported  # noqa: E402
from dhvtlib.report import main, make_figures, report_experiment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION4 = ROOT / "tests" / "fixtures" / "paper-section4.md"


# ---------------------------------------------------------------------------------------------------------------
# reported.csv against the spec's section 4 (tests/fixtures/paper-section4.md, a verbatim copy)
# ---------------------------------------------------------------------------------------------------------------
def _sections() -> dict[str, dict]:
    """'4.5' -> {'text': the section's text, 'tables': [[{header: cell}, ...], ...]}."""
    out = {}
    for block in re.split(r"^### ", SECTION4.read_text(encoding="utf-8"), flags=re.M)[1:]:
        number, text = block.split(" ", 1)[0], block
        tables, current = [], None
        for line in text.splitlines() + [""]:
            if line.startswith("|"):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if current is None:
                    current = {"header": cells, "rows": []}
                elif not set("".join(cells)) <= set("-: "):
                    current["rows"].append(dict(zip(current["header"], cells)))
            elif current is not None:
                tables.append(current["rows"])
                current = None
        out[number] = {"text": text, "tables": tables}
    return out


SECTIONS = _sections()


def _number(cell: str) -> str:
    """The first number printed in a cell, as printed ('67.59 (+0.00)' -> '67.59', '29M' -> '29')."""
    return re.search(r"\d+(?:\.\d+)?", cell).group()


def _norm(label: str) -> str:
    label = re.sub(r"\*\*|\(.*?\)", "", label)
    return " ".join(label.replace("★", "*").replace("×", "x").replace("↑", "").split())


def _find(rows: list[dict], key: str, label: str, **cells: str) -> dict:
    """The one row whose `key` cell names `label` (exactly after normalising, else by prefix) and whose other
    cells equal `cells`."""
    rows = [r for r in rows if all(r[c] == v for c, v in cells.items())]
    hits = [r for r in rows if _norm(r[key]) == _norm(label)]
    hits = hits or [r for r in rows if _norm(r[key]).startswith(_norm(label)) or
                    _norm(label).startswith(_norm(r[key]))]
    assert len(hits) == 1, f"{len(hits)} spec rows match {label!r} {cells}"
    return hits[0]


DOMAINS = dict(clipart="C", painting="P", sketch="S", infograph="I", real="R", quickdraw="Q")
FLAGS = {"table5": {"Abs. PE": {"pe"}, "SOPE": {"sope"}, "DAFF": {"daff"}},
         "table6": {"Abs. PE": {"pe"}, "SOPE & DAFF": {"sope", "daff"}, "Head token": {"ht"}}}
LABEL_ALIASES = {("table9", "no_dw_shortcut"): "DHVT without the DWConv shortcut"}
CHECK = "✓"


def _spec_row(r: dict) -> tuple[dict, str]:
    """(spec row, column holding r's value) for a reported row; table 3 and the affine rows are handled apart."""
    t, label = r["table"], LABEL_ALIASES.get((r["table"], r["row"]), r["label"])
    if t == "table1":
        cols = dict(train_images="Train", test_images="Test", classes="Classes")
        return _find(SECTIONS["4.1"]["tables"][0], "Dataset", label), cols[r["metric"]]
    if t == "table4":
        return _find(SECTIONS["4.2"]["tables"][0], "Method", label, Patch=r["patch"]), "Acc (%)"
    if t == "table13":
        return _find(SECTIONS["4.3"]["tables"][0], "Method", label), DOMAINS[r["setting"]]
    if t == "table15":
        return _find(SECTIONS["4.4"]["tables"][0], "Method", label), "Top-1"
    if t in FLAGS:
        parts = set(r["row"].split("_"))
        rows = [s for s in SECTIONS["4.5" if t == "table5" else "4.6"]["tables"][0]
                if all((s[col] == CHECK) == (need <= parts) for col, need in FLAGS[t].items())]
        assert len(rows) == 1
        return rows[0], "Acc (%)"
    if t in ("table8", "table9"):
        return _find(SECTIONS["4.7" if t == "table8" else "4.8"]["tables"][0], "Variant", label), "Acc"
    if t == "table10":
        model, heads = re.fullmatch(r"(.+) (\d+) heads", label).groups()
        return _find(SECTIONS["4.10"]["tables"][0], "Model", model, Heads=heads), "Acc"
    if t == "table11":
        return _find(SECTIONS["4.11"]["tables"][0], "Variant", label), f"BS {r['setting'].removeprefix('bs')}"
    if t == "table7":
        return _find(SECTIONS["4.12"]["tables"][0], "Method", label), "CIFAR-100"
    if t == "table14":
        return _find(SECTIONS["4.12"]["tables"][1], "Method", label), r["setting"].title()
    if t == "table16":
        return _find(SECTIONS["4.13"]["tables"][0], "Method", label), \
            "CIFAR-100" if r["setting"] == "cifar100" else r["setting"].title()
    if t == "table17":  # the variants' params and GFLOPs, as printed in Tables 4, 13 and 15
        section, cells = dict(cifar100=("4.2", dict(Patch=r["patch"])), domainnet=("4.3", {}),
                              imagenet=("4.4", {}))[r["setting"]]
        return _find(SECTIONS[section]["tables"][0], "Method", label, **cells), \
            dict(params_m="Params", gflops="GFLOPs")[r["metric"]]
    raise KeyError(t)


def _check_table3(r: dict) -> None:
    assert f"{r['label']} {r['params_m']}M, {r['value']}" in SECTIONS["4.4"]["text"]


def _check_affine(r: dict) -> None:
    (dhvt, dhvt_no), (vit, vit_no) = re.findall(r"(\d+\.\d+) to (\d+\.\d+)", SECTIONS["4.9"]["text"])
    expected = dict(dhvt=dhvt, dhvt_no_affine=dhvt_no, vit_pe_sope=vit, vit_pe_sope_no_affine=vit_no)
    assert r["value"] == expected[r["row"]]


SPEC_SECTION = dict(table1="4.1", table4="4.2", table13="4.3", table3="4.4", table15="4.4", table5="4.5",
                    table6="4.6", table8="4.7", table9="4.8", affine="4.9", table10="4.10", table11="4.11",
                    table7="4.12", table14="4.12", table16="4.13", table17="4.2/4.3/4.4")
EXTRA_CELLS = dict(params_m="Params", gflops="GFLOPs")


def test_fixture_is_section_4():
    text = SECTION4.read_text(encoding="utf-8")
    assert text.startswith("## 4. Every number the paper reports") and "\n## 5." not in text
    assert len(SECTIONS) == 15


def test_every_reported_table_is_covered():
    assert set(SPEC_SECTION) == {r["table"] for r in reported()}


@pytest.mark.parametrize("table", list(SPEC_SECTION))
def test_reported_matches_spec(table):
    """Every number of reported.csv for `table` (value, params, GFLOPs, fine-tuning columns) equals the printed
    number in the right cell of the spec's table (section `SPEC_SECTION[table]`)."""
    rows = reported(table)
    assert rows
    for r in rows:
        if table == "table3":
            _check_table3(r)
            continue
        if table == "affine":
            _check_affine(r)
            continue
        spec, col = _spec_row(r)
        assert r["value"] == _number(spec[col]), (r, spec)
        for field, spec_col in EXTRA_CELLS.items():
            if r[field] and spec_col in spec:
                assert float(r[field]) == float(_number(spec[spec_col])), (r, spec)
        if table == "table7":  # the note repeats the IN-1K, FT epochs and image size columns
            for pattern, spec_col in ((r"IN-1K ([\d.]+)", "IN-1K"), (r"FT (\d+)", "FT epochs"), (r"(\d+) px", "Img")):
                if m := re.search(pattern, r["note"]):
                    assert m.group(1) == spec[spec_col], (r, spec)


def test_reported_notes_match_spec():
    """The draft (4.14) and README (4.4) numbers quoted in reported.csv's notes are the spec's."""
    draft = [line for line in SECTIONS["4.14"]["text"].splitlines() if line.startswith("- ")]
    readme = " ".join(SECTIONS["4.4"]["text"].split("README \"model zoo\" gives:")[1].split("\n-")[0].split())
    checked = 0
    for r in reported():
        if m := re.search(r"draft: ([^;]*)", r["note"]):
            bullet, = [b for b in draft if b.startswith(f"- {r['label'].rstrip('*')} ")]
            assert all(n in bullet for n in re.findall(r"\d+\.\d+", m.group(1))), (r, bullet)
            checked += 1
        if m := re.search(r"README:? ([^;]*)", r["note"]):
            part, = [p for p in readme.split(";") if r["label"] in p]
            assert all(n in part for n in re.findall(r"\d+\.\d+", m.group(1))), (r, part)
            checked += 1
    assert checked == 9  # 4 draft notes, 5 README notes


@pytest.mark.parametrize("table,section", [("table5", "4.5"), ("table6", "4.6"), ("table8", "4.7"),
                                           ("table9", "4.8")])
def test_paper_deltas_match_printed(table, section):
    """paper_delta_vs_baseline, relative to each table's first row, reproduces the printed (+x.xx) deltas."""
    paper = results.ablation_paper_frame(table)
    agg = pd.DataFrame({"tag": paper["tag"], "mean": 50.0, "std": math.nan, "n_seeds": 1, "best_of_n": 50.0})
    out = results.paper_vs_reproduced(agg, paper, baseline=paper["tag"][0])
    printed = [float(re.search(r"\(([+−-]\d+\.\d+)\)", row["Acc (%)" if "Acc (%)" in row else "Acc"]).group(1)
                     .replace("−", "-")) for row in SECTIONS[section]["tables"][0]]
    assert sorted(out["paper_delta_vs_baseline"].round(2)) == sorted(printed)
    assert out["ours_delta_vs_baseline"].eq(0).all() and out["delta"].eq(50.0 - out["paper_top1"]).all()


def test_exported_paper_tables_are_current(tmp_path):
    written = results.export_paper_tables(tmp_path)
    committed = ROOT / "results" / "paper"
    assert sorted(p.name for p in written) == sorted(p.name for p in committed.glob("*.csv"))
    for p in written:
        assert p.read_bytes() == (committed / p.name).read_bytes(), p.name
    table5 = pd.read_csv(tmp_path / "table5.csv", dtype=str)
    assert table5.loc[table5["row"] == "sope", "value"].item() == "69.65"
    assert (table5["source"] == results.PAPER_SOURCE).all()
    assert len(pd.read_csv(tmp_path / "all.csv")) == len(reported())


# ---------------------------------------------------------------------------------------------------------------
# fabricated runs
# ---------------------------------------------------------------------------------------------------------------
BESTS = {"table5/pe": [67.0, 68.0, 69.5], "table5/sope": [70.0, 70.5, 71.5], "table5/sope_daff": [80.0, 81.0, 79.0]}


def _make_run(root: Path, experiment: str, tag: str, seed: int, best: float, status: str = "completed",
              ended: str = "2025-01-01T00:00:00") -> Path:
    run = root / experiment / tag.replace("/", "-") / f"seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    curve = [best - 10, best, best - 0.5]  # best at epoch 1, final = best - 0.5
    with open(run / "metrics.jsonl", "w") as f:
        for epoch, top1 in enumerate(curve):
            f.write(json.dumps(dict(epoch=epoch, train_loss=4.0 - epoch, test_loss=3.0, top1=top1, top5=top1 + 10,
                                    lr=1e-3, epoch_s=1.0, img_s=100.0)) + "\n")
    manifest = dict(run_id=f"{experiment}-{tag}-{seed}", experiment=experiment, tag=tag, model="dhvt_tiny_cifar_patch4",
                    model_kwargs={"embed_layer": "sope"}, dataset="cifar100", preset="ablation", seed=seed,
                    config={"epochs": 3, "lr": 1e-3}, samples_per_class=None, train_images=50000, test_images=10000,
                    params=6_000_000, git_commit="abc1234", git_dirty=False,
                    versions=dict(python="3.11", torch="2.x"), device="cpu",
                    hardware=dict(cpu="x", threads=2, cuda_device=None), world_size=1, precision="fp32",
                    started="2025-01-01T00:00:00", ended=ended, wall_s=3.0, epochs_run=3, best_top1=best,
                    best_top5=best + 10, best_epoch=1, final_top1=best - 0.5, final_top5=best + 9.5, status=status)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "results"
    for tag, bests in BESTS.items():
        for seed, best in enumerate(bests):
            _make_run(root, "ablation", tag, seed, best)
    _make_run(root, "ablation", "table5/sope", 3, 99.0, status="interrupted")
    _make_run(root, "quick", "fmnist-dhvt", 0, 90.0)
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{not json")
    return root


def test_load_runs(runs_root):
    with pytest.warns(UserWarning, match="unreadable run manifest"):
        runs = results.load_runs(runs_root)
    assert len(runs) == 11 and runs["completed"].sum() == 10
    assert set(results.RUN_COLUMNS) <= set(runs.columns) and "versions.torch" in runs
    assert json.loads(runs["config"][0]) == {"epochs": 3, "lr": 1e-3}
    assert set(runs["experiment"]) == {"ablation", "quick"}
    assert (runs["status"] == "interrupted").sum() == 1


def test_load_metrics(runs_root):
    with pytest.warns(UserWarning):
        runs = results.load_runs(runs_root)
    metrics = results.load_metrics(runs)
    assert len(metrics) == 11 * 3 and {"run_id", "tag", "seed", "epoch", "top1"} <= set(metrics.columns)
    one = results.load_metrics(runs_root / "quick" / "fmnist-dhvt" / "seed0")
    assert list(one["top1"]) == [80.0, 90.0, 89.5] and set(one["tag"]) == {"fmnist-dhvt"}


def test_aggregate_exact(runs_root):
    with pytest.warns(UserWarning):
        runs = results.load_runs(runs_root)
    agg = results.aggregate(runs).set_index("tag")
    for tag, bests in BESTS.items():
        row = agg.loc[tag]
        assert row["n_seeds"] == 3 and row["seeds"] == "0, 1, 2"  # the interrupted seed 3 is left out
        assert row["mean"] == pytest.approx(statistics.mean(bests))
        assert row["std"] == pytest.approx(statistics.stdev(bests))
        assert (row["min"], row["max"], row["best_of_n"]) == (min(bests), max(bests), max(bests))
        assert row["final_mean"] == pytest.approx(statistics.mean(bests) - 0.5)
        assert row["final_best_of_n"] == max(bests) - 0.5
    assert math.isnan(agg.loc["fmnist-dhvt", "std"]) and agg.loc["fmnist-dhvt", "n_seeds"] == 1
    assert agg.loc["table5/pe", "git_commit"] == "abc1234" and agg.loc["table5/pe", "dataset"] == "cifar100"
    everything = results.aggregate(runs, completed_only=False).set_index("tag")
    assert everything.loc["table5/sope", "n_seeds"] == 4 and everything.loc["table5/sope", "best_of_n"] == 99.0


def test_aggregate_repeated_seed_keeps_last(tmp_path):
    _make_run(tmp_path, "a", "x", 0, 50.0, ended="2025-01-01T00:00:00")
    _make_run(tmp_path / "rerun", "a", "x", 0, 60.0, ended="2025-02-01T00:00:00")
    with pytest.warns(UserWarning, match="repeat a seed"):
        agg = results.aggregate(results.load_runs(tmp_path))
    assert agg["n_seeds"].item() == 1 and agg["mean"].item() == 60.0


def test_paper_vs_reproduced(runs_root):
    with pytest.warns(UserWarning):
        agg = results.aggregate(results.load_runs(runs_root))
    table = results.paper_vs_reproduced(agg, baseline="table5/pe").set_index("tag")
    assert list(table.columns) == ["label", "paper_top1", "paper_statistic", "ours_statistic", "ours_mean", "ours_std", "n_seeds",
                                   "ours_best_of_n", "ours_final_mean", "delta", "paper_delta_vs_baseline", "ours_delta_vs_baseline",
                                   "seeds", "note"]
    sope = table.loc["table5/sope"]
    assert sope["paper_top1"] == 69.65 and sope["label"] == "SOPE"
    assert sope["delta"] == pytest.approx(statistics.mean(BESTS["table5/sope"]) - 69.65)
    assert sope["paper_delta_vs_baseline"] == pytest.approx(69.65 - 67.59)
    assert sope["ours_delta_vs_baseline"] == pytest.approx(
        statistics.mean(BESTS["table5/sope"]) - statistics.mean(BESTS["table5/pe"]))
    assert table.loc["table5/pe", "note"] == "baseline"
    assert math.isnan(table.loc["fmnist-dhvt", "paper_top1"]) and "not in the paper" in table.loc["fmnist-dhvt", "note"]
    # explicit paper rows: paper keys, numbers, or a frame; the baseline's paper number even if it was not run
    keyed = results.paper_vs_reproduced(agg[agg["tag"] == "table5/sope"],
                                        {"table5/sope": "table11/bn_ln_bs256"}, baseline="table5/pe")
    assert keyed["paper_top1"].item() == 79.55 and keyed["paper_delta_vs_baseline"].item() == pytest.approx(
        79.55 - 67.59) and math.isnan(keyed["ours_delta_vs_baseline"].item())
    numbers = results.paper_vs_reproduced(agg, {"fmnist-dhvt": 91.0}, notes={"fmnist-dhvt": "quick preset"})
    fm = numbers.set_index("tag").loc["fmnist-dhvt"]
    assert fm["delta"] == pytest.approx(-1.0) and fm["note"] == "quick preset; one seed"
    framed = results.paper_vs_reproduced(agg, results.ablation_paper_frame("table5"))
    assert framed.set_index("tag").loc["table5/pe", "label"] == "Abs. PE (DeiT-T)"
    with pytest.raises(KeyError):
        results.paper_vs_reproduced(agg, {"table5/pe": "table5/nope"})


def test_ablation_paper_frame():
    t11 = results.ablation_paper_frame("table11").set_index("tag")
    assert len(t11) == 12 and t11.loc["table11/bn_ln_bs256", "paper_top1"] == 79.55
    with pytest.raises(ValueError):
        results.ablation_paper_frame("table4")


def test_provenance_names_every_session_of_a_resumed_run():
    resumed = [{"git_commit": "aaa1111", "git_dirty": False, "hardware": {"cpu": "CPU A", "cuda_device": None}},
               {"git_commit": None, "note": "written before sessions were recorded"},
               {"git_commit": "bbb2222", "git_dirty": True, "hardware": {"cpu": "CPU B", "cuda_device": "H100"}}]
    runs = pd.DataFrame({"git_commit": ["bbb2222", "ccc3333"], "git_dirty": [False, math.nan],
                         "hardware.cpu": ["CPU B", "CPU C"], "hardware.cuda_device": [None, None],
                         "sessions": [json.dumps(resumed), math.nan], "dataset": ["d", "d"], "preset": ["p", "p"],
                         "seed": [0, 1]})
    prov = results.provenance(runs)
    assert prov["git commits"] == "aaa1111, bbb2222, ccc3333 (some runs from a dirty tree)"
    assert prov["hardware"] == "CPU A, CPU B, CPU C, H100" and prov["runs"] == "2"
    clean = results.provenance(runs.drop(columns=["sessions", "hardware.cpu", "hardware.cuda_device"]))
    assert clean["git commits"] == "bbb2222, ccc3333" and clean["hardware"] == ""  # older manifests: no sessions


def test_write_table(tmp_path):
    df = pd.DataFrame({"tag": ["a|b", "c"], "mean": [1.23456, math.nan], "n": [3, 1]})
    paths = results.write_table(df, tmp_path / "out" / "table", title="T",
                                provenance={"git commits": "abc1234", "dataset": "cifar100", "seeds": "0, 1"})
    assert [p.name for p in paths] == ["table.csv", "table.md"]
    assert list(pd.read_csv(paths[0]).columns) == ["tag", "mean", "n"]
    md = paths[1].read_text()
    assert md.startswith("## T\n\n| tag | mean | n |\n|---|---:|---:|\n| a\\|b | 1.23 | 3 |\n| c |  | 1 |")
    assert md.rstrip().endswith("_Provenance: git commits: abc1234; dataset: cifar100; seeds: 0, 1._")
    assert not list(tmp_path.rglob("*.tmp"))


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.csv"
    target.write_text("old")

    def fail(f):
        f.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        results._atomic_write(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_make_figures(runs_root):
    with pytest.warns(UserWarning):
        written = make_figures(runs_root)
    rel = {str(p.relative_to(runs_root)) for p in written}
    expected = {*(f"{e}/table.{ext}" for e in ("ablation", "quick") for ext in ("csv", "md", "tex")), "report.md",
                *(f"figures/{name}.{ext}" for name in ("ablation_curves", "ablation_paper_vs_ours", "quick_curves")
                  for ext in ("png", "pdf")),
                *(f"paper/{t}.csv" for t in [*SPEC_SECTION, "all"])}
    assert rel == expected and all((runs_root / p).stat().st_size > 0 for p in rel)
    table = pd.read_csv(runs_root / "ablation" / "table.csv").set_index("tag")
    assert table.loc["table5/sope", "paper_delta_vs_baseline"] == pytest.approx(69.65 - 67.59)
    md = (runs_root / "ablation" / "table.md").read_text()
    assert "git commits: abc1234" in md and "preset: ablation" in md and "seeds: 0, 1, 2" in md
    assert not list(runs_root.rglob("*.tmp"))


def test_make_figures_without_runs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "missing", tmp_path / "empty"):
        written = make_figures(root)
        assert {p.parent.name for p in written} == {"paper"}
        assert sorted(p.name for p in root.iterdir()) == ["paper"]
    main(["figures", "--root", str(tmp_path / "empty")])
    assert "all.csv" in capsys.readouterr().out


def test_baseline_falls_back_to_an_identical_run_row():
    from dhvtlib.results import _ablation_baselines

    ladder = ["table5/none", "table5/pe", "table5/sope", "table6/sope_daff_ht"]
    assert _ablation_baselines(ladder) == {t: "table5/pe" for t in ladder}  # table6/pe (not run) is DeiT-T too
    assert _ablation_baselines(["table6/pe", "table6/sope_daff_ht"])["table6/sope_daff_ht"] == "table6/pe"
    assert _ablation_baselines(["table9/se_all"]) == {"table9/se_all": "table9/dhvt"}  # not run: no fallback


def test_delta_uses_the_papers_statistic_per_table():
    """Table 4 reports the best of 5 seeds, the ablations the mean of 4: delta compares like with like."""
    runs = pd.DataFrame({"tag": ["table4/dhvt_tiny_cifar_patch4"] * 2 + ["table5/sope"] * 2,
                         "seed": [0, 1, 0, 1], "best_top1": [80.0, 82.0, 79.0, 81.0], "final_top1": [79.0, 81.0, 78.0, 80.0],
                         "status": ["completed"] * 4, "run_dir": ["a", "b", "c", "d"], "dataset": ["cifar100"] * 4,
                         "preset": ["cifar100"] * 4, "model": ["m"] * 4, "git_commit": ["c"] * 4})
    table = results.paper_vs_reproduced(results.aggregate(runs)).set_index("tag")
    t4, t5 = table.loc["table4/dhvt_tiny_cifar_patch4"], table.loc["table5/sope"]
    assert t4["paper_statistic"] == "best of 5" and t4["delta"] == pytest.approx(82.0 - 80.93)
    assert t5["paper_statistic"] == "mean of 4" and t5["delta"] == pytest.approx(80.0 - t5["paper_top1"])
    assert t4["ours_final_mean"] == pytest.approx(80.0)
    assert t4["ours_statistic"] == "best of 2" and t5["ours_statistic"] == "mean of 2"  # the seeds that ran


def test_ablation_deltas_below_the_papers_own_spread_say_so(runs_root):
    """The paper prints one DHVT-T/4 CIFAR-100 setting as 80.85, 80.90 and 80.98 (and 80.93 as Table 4's best of
    5): a delta smaller than that spread (0.13) is flagged in the row's note, and an ablation table's caption says
    so."""
    from dhvtlib.paper import paper_spread, spread_sentence

    assert paper_spread() == pytest.approx(0.13)
    sentence = spread_sentence()
    for text in ("80.85 (Tables 6, 9)", "80.90 (appendix B.2.2)", "80.98 (Tables 10, 11)", "best of 5 as 80.93",
                 "smaller than 0.13"):
        assert text in sentence, text
    runs = pd.DataFrame({"tag": ["table10/dhvt_t_h4"] * 2 + ["table10/dhvt_t_h3"] * 2 + ["table10/vit_t_h3"] * 2,
                         "seed": [0, 1] * 3, "best_top1": [80.0, 81.0, 80.5, 80.6, 70.0, 70.0],
                         "final_top1": [80.0] * 6, "status": ["completed"] * 6, "run_dir": list("abcdef"),
                         "dataset": ["cifar100"] * 6, "preset": ["ablation"] * 6, "model": ["m"] * 6,
                         "git_commit": ["c"] * 6})
    table = results.paper_vs_reproduced(results.aggregate(runs), baseline="table10/dhvt_t_h4").set_index("tag")
    h3 = table.loc["table10/dhvt_t_h3"]  # paper 80.92 - 80.98 = -0.06; ours 80.55 - 80.50 = 0.05
    assert h3["note"] == "paper delta within the paper's spread (0.13); our delta within the paper's spread (0.13)"
    assert table.loc["table10/vit_t_h3", "note"] == ""  # deltas of 14 points say something
    with pytest.warns(UserWarning):
        all_runs = results.load_runs(runs_root)
    table, _ = report_experiment(runs_root, "ablation", all_runs)
    assert table.attrs["caption"].endswith(sentence) and sentence in (runs_root / "ablation" / "table.md").read_text()
    quick, _ = report_experiment(runs_root, "quick", all_runs)
    assert sentence not in quick.attrs["caption"]  # no ablation rows, no deltas


# ---------------------------------------------------------------------------------------------------------------
# captions, hidden columns, LaTeX, 1-based epochs, the report
# ---------------------------------------------------------------------------------------------------------------
def test_table_caption_and_hidden_columns(runs_root):
    with pytest.warns(UserWarning):
        runs = results.load_runs(runs_root)
    quick = runs[runs["experiment"].eq("quick")]
    caption = results.table_caption(quick, "quick")
    assert caption == "quick: CIFAR-100, preset ablation (3 epochs, all training images), seeds 0, commit abc1234"
    table, _ = report_experiment(runs_root, "quick", runs)
    assert table.attrs["caption"] == caption and table["paper_top1"].isna().all()
    shown = results.captioned(table)
    assert "paper_top1" not in shown.table and "delta" not in shown.table and "note" in shown.table
    html = shown._repr_html_()
    assert caption in html and "white-space: nowrap" in html  # the note column does not wrap word by word
    assert repr(shown).splitlines()[0] == caption and caption in shown._repr_markdown_()
    md = (runs_root / "quick" / "table.md").read_text()
    assert f"_{caption}_" in md and "paper_top1" not in md
    assert "paper_top1" in pd.read_csv(runs_root / "quick" / "table.csv")  # the CSV keeps every column


def test_show_experiment_is_a_notebooks_report_cell(runs_root, capsys, monkeypatch):
    """The report and curves cells of notebooks 00-04 and 06 in one call: `report_experiment`'s files, the captioned
    table (06: top-1 as mean +- std over seeds, as Markdown), the paths written, the curves of the runs given."""
    import IPython.display
    import matplotlib.pyplot as plt

    from dhvtlib import report

    shown, titles = [], []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    monkeypatch.setattr(plt, "show", lambda: titles.extend(plt.figure(n).axes[0].get_title()
                                                        for n in plt.get_fignums()))
    with pytest.warns(UserWarning):
        runs = results.load_runs(runs_root)
        table, files = report.show_experiment(runs_root, "ablation", curves=runs[runs["experiment"].eq("ablation")])
        expected, _ = report_experiment(runs_root, "ablation")
    pd.testing.assert_frame_equal(table, expected)
    assert isinstance(shown[0], results.CaptionedTable) and shown[0].caption == table.attrs["caption"]
    assert capsys.readouterr().out.splitlines() == [str(p) for p in files]
    assert titles == ["ablation: test top-1 per epoch"] and plt.get_fignums() == []
    with pytest.warns(UserWarning):
        report.show_experiment(runs_root, "ablation", mean_std=True)
    sope = statistics.mean(BESTS["table5/sope"]), statistics.stdev(BESTS["table5/sope"])
    assert shown[1].data.splitlines()[:2] == ["| tag | top-1 (mean ± std) | n_seeds | ours_best_of_n |",
                                              "|---|---|---:|---:|"]
    assert f"| table5/sope | {sope[0]:.2f} ± {sope[1]:.2f} | 3 | 71.50 |" in shown[1].data
    assert len(titles) == 1  # no curves without runs
    one = table_display.mean_std_table(pd.DataFrame({"tag": ["a"], "ours_mean": [80.0], "ours_std": [math.nan],
                                                     "n_seeds": [1], "ours_best_of_n": [80.0]}))
    assert one["top-1 (mean ± std)"].tolist() == ["80.00"]  # one seed: the mean alone
    # no completed run yet (06 submitted with wait=False): one sentence, nothing shown, no KeyError
    table, files = report.show_experiment(runs_root, "your_data", curves=runs.iloc[:0], mean_std=True)
    assert table.empty and files == [] and len(shown) == 2
    assert "no completed run of your_data under" in capsys.readouterr().out
    moved = set(table_display.__all__) - {"mean_std_table"}  # results' own names before table_display.py
    assert all(getattr(results, n) is getattr(table_display, n) for n in moved) and moved <= set(results.__all__)


def test_to_latex_booktabs():
    df = pd.DataFrame({"tag": ["table5/sope_daff", "a & b"], "top1": [80.351, math.nan], "note": ["100% _x_", ""]})
    tex = results.to_latex(df, caption="ladder: Fashion-MNIST", label="tab:ladder")
    assert tex.splitlines() == [
        r"\begin{table}[ht]", r"\centering", r"\caption{ladder: Fashion-MNIST}", r"\label{tab:ladder}",
        r"\begin{tabular}{lrl}", r"\toprule", r"tag & top1 & note \\", r"\midrule",
        r"table5/sope\_daff & 80.35 & 100\% \_x\_ \\", r"a \& b &  &  \\", r"\bottomrule", r"\end{tabular}",
        r"\end{table}"]


def test_epochs_display_one_based(runs_root):
    with pytest.warns(UserWarning):
        runs = results.load_runs(runs_root)
    summary = results.runs_summary(runs[runs["completed"]])
    assert summary["best_epoch"].unique().tolist() == [2]  # stored 1 (0-based): the second of 3 epochs
    assert runs["best_epoch"].unique().tolist() == [1]  # the stored field is left as it is
    import matplotlib

    matplotlib.use("Agg")
    fig = viz.plot_curves(results.load_metrics(runs[runs["experiment"].eq("quick")]))
    xs = fig.axes[0].lines[0].get_xdata()
    assert list(xs) == [1, 2, 3]
    legend = fig.axes[0].get_legend()
    assert legend.get_bbox_to_anchor().x0 > fig.axes[0].get_window_extent().x1 - 1  # right of the axes


def test_make_figures_is_deterministic_and_writes_the_report(runs_root):
    with pytest.warns(UserWarning):
        first = {p: p.read_bytes() for p in make_figures(runs_root)}
    with pytest.warns(UserWarning):
        second = {p: p.read_bytes() for p in make_figures(runs_root)}
    assert first == second
    report = (runs_root / "report.md").read_text()
    assert report.count("## Table: ") == 2 and "## Table: ablation" in report and "## Table: quick" in report
    assert "![quick: test top-1 per epoch" in report and "(figures/quick_curves.png)" in report
    assert "quick: CIFAR-100, preset ablation" in report and "[quick/table.tex](quick/table.tex)" in report


def test_committed_results_are_current(tmp_path):
    """`make figures` on a copy of results/ changes nothing: the committed tables, report and figures are what the
    stored runs give."""
    import shutil

    copy = tmp_path / "results"
    shutil.copytree(ROOT / "results", copy, ignore=shutil.ignore_patterns("*.pt", "*.safetensors*"))
    import matplotlib

    matplotlib.use("Agg")
    for path in make_figures(copy):
        rel = path.relative_to(copy)
        if path.suffix in (".md", ".tex", ".csv"):
            assert path.read_text().replace(str(copy), "<root>") == (ROOT / "results" / rel).read_text(), rel


def test_names_from_a_shared_results_tree_never_lead_outside_it(tmp_path, capsys):
    root = tmp_path / "shared" / "results"
    _make_run(root, "quick", "fmnist-dhvt", 0, 90.0)
    _make_run(root, "quick", "$x^$ <script>alert(1)</script>", 1, 80.0)  # mathtext that fails, HTML
    planted = _make_run(root, "planted", "t", 0, 70.0)
    manifest = json.loads((planted / "manifest.json").read_text())
    for name in ("../../escaped", "/abs/x", "a/./b"):
        (planted / "manifest.json").write_text(json.dumps({**manifest, "experiment": name}))
        before = set(tmp_path.rglob("*"))
        with pytest.warns(UserWarning, match="could leave its folder") as record:
            written = make_figures(root)
        assert all(root in p.parents for p in written) and {p for p in set(tmp_path.rglob("*")) - before
                                                            if root not in p.parents} == set()
        assert not [w for w in record if "was not written" in str(w.message)]
        assert (root / "figures" / "quick_curves.png").exists()  # a '$' in a tag is shown as written
        assert (root / "report.md").exists() and (root / "quick" / "table.md").exists()
    md = (root / "quick" / "table.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md
    untagged = _make_run(root, "plain", "x", 0, 60.0)  # a dhvt-train run without --tag
    (untagged / "manifest.json").write_text(json.dumps({**manifest, "experiment": "plain", "tag": None}))
    with pytest.warns(UserWarning, match="'a/./b' could leave its folder"):  # the last planted name
        make_figures(root)
    assert "| dhvt_tiny_cifar_patch4 |" in (root / "plain" / "table.md").read_text()
    with pytest.raises(ValueError, match="experiment name '../../escaped' could leave its folder"):
        report_experiment(root, "../../escaped")
    with pytest.raises(SystemExit, match="no runs found under .*typo \\(no such folder\\); check --root"):
        main(["figures", "--root", str(tmp_path / "typo")])
    assert not (tmp_path / "typo").exists()


def test_report_figures_on_a_read_only_root_is_one_sentence(runs_root, monkeypatch):
    import errno

    from dhvtlib import report

    def read_only(root):
        raise OSError(errno.EROFS, "Read-only file system", str(runs_root / "report.md"))
    monkeypatch.setattr(report, "make_figures", read_only)
    with pytest.raises(SystemExit) as e:
        main(["figures", "--root", str(runs_root)])
    assert e.value.code == (f"python -m dhvtlib.report: cannot write {runs_root / 'report.md'} (Read-only file "
                            "system); make the results folder writable or pass another --root.")
