"""The benchmark scripts run end to end (tiny settings: the numbers are not checked, only that they are made)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bounds  # noqa: E402
import throughput  # noqa: E402

TINY = ["--batch", "2", "--threads", "1"]


def test_throughput_reports_ratios_with_fused_inference(tmp_path):
    out = tmp_path / "tp.json"
    res = throughput.main(["--model", "dhvt_tiny_cifar_patch4", *TINY, "--steps", "1", "--rounds", "1",
                           "--warmup", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == res
    train, infer = res["modes"]["train"], res["modes"]["infer"]
    assert train["ratio_vs_timm_vit"] > 0 and "official_ratio_vs_timm_vit" in train
    assert "dhvtlib_fused_bn_img_s" in infer and "dhvtlib_fused_bn_img_s" not in train
    assert {"git_commit", "versions", "hardware", "wall_s"} <= set(res)
    # precision: auto by default, resolved as training resolves it, with the CPU's bf16 capability recorded
    from dhvtlib.run.runtime import cpu_bf16_capability, resolve_precision

    assert res["precision_requested"] == "auto" and res["precision"] == resolve_precision("auto", res["device"])[0]
    assert res["cpu_bf16"] == dict(zip(("native", "detail"), cpu_bf16_capability()))


def test_bounds_reports_one_ratio_per_row(tmp_path):
    res = bounds.main(["--model", "dhvt_tiny_cifar_patch4", *TINY, "--rounds", "1",
                       "--rows", "dhvt", "daff_no_bn", "--json", str(tmp_path / "b.json")])
    rows = res["modes"]["train"]["rows"]
    assert list(rows) == ["dhvt", "daff_no_bn"] and all(r["ratio_vs_timm_vit"] > 0 for r in rows.values())
    assert res["bandwidth_gb_s"]["copy"] > 0


def test_daff_layouts_reports_each_layout_against_the_official(tmp_path):
    import daff_layouts

    res = daff_layouts.main(["--batch", "2", "--threads", "1", "--dim", "16", "--grid", "2", "--rounds", "1",
                             "--steps", "1", "--warmup", "1", "--precision", "fp32", "--json", str(tmp_path / "d.json")])
    assert set(res["rows"]) == {"fp32/train", "fp32/infer"} and res["scope"] == "block"
    assert all(r[f"{lay}_vs_official"] > 0 for r in res["rows"].values() for lay in daff_layouts.LAYOUTS)
    res = daff_layouts.main(["--scope", "model", "--batch", "2", "--threads", "1", "--rounds", "1", "--steps", "1",
                             "--warmup", "1", "--precision", "fp32", "--mode", "train"])
    assert set(res["rows"]) == {"fp32/train"} and res["model"] == "dhvt_tiny_cifar_patch4"
    assert set(res["rows"]["fp32/train"]) == {f"{k}_ms" for k in (*daff_layouts.LAYOUTS, "official")} | {
        f"{k}_vs_official" for k in daff_layouts.LAYOUTS}
