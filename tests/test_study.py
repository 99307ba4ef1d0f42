"""The title-claim study (dhvtlib.study): the CNN's SGD preset, the same schedule shape at every size, the verdict
statistics on a fixed table, the plan, and the per-update schedule resuming bitwise."""
from __future__ import annotations

import json
import re
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from dhvtlib import experiments, launch, paths, study
from dhvtlib.run.build import build_optimizer
from dhvtlib.checkpoint import load_checkpoint
from dhvtlib.files import sha256
from dhvtlib.recipe import PRESETS, resolve
from dhvtlib.results import RUN_COLUMNS
from dhvtlib.runspec import run_dir
from clitools import read_metrics, run_module as _cli


def test_cnn_sgd_preset_is_the_standard_cnn_recipe():
    r = PRESETS["cnn_sgd"]
    assert (r.opt, r.lr, r.lr_scale_batch, r.batch_size, r.momentum, r.nesterov) == ("sgd", 0.1, 128, 128, 0.9, True)
    assert (r.weight_decay, r.min_lr, r.epochs, r.model) == (5e-4, 0.0, 200, "resnet18_cifar")
    assert (r.mixup, r.cutmix, r.rand_augment, r.random_erasing, r.smoothing, r.drop_path) == (0, 0, None, 0, 0, 0)
    assert (r.hflip, r.model_ema, r.repeated_aug, r.virtual_gpus) == (0.5, False, False, 1)
    assert resolve("cnn_sgd", batch_size=64).effective_lr == pytest.approx(0.05)
    opt, _ = build_optimizer(torch.nn.Linear(3, 2), resolve("cnn_sgd", batch_size=64))
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    with pytest.raises(ValueError, match="opt 'lamb' is not an optimiser here; choose one of: adamw, sgd"):
        resolve("quick", opt="lamb")
    with pytest.raises(ValueError, match="sched_unit 'iter' is not a schedule unit"):
        resolve("quick", sched_unit="iter")


def _lrs(recipe, steps_per_epoch: int) -> list[float]:
    """The lr of every update of a run with the per-update schedule, as train.py steps it."""
    opt, sched = build_optimizer(torch.nn.Linear(2, 2), recipe, steps_per_epoch=steps_per_epoch)
    lrs = []
    for u in range(recipe.epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step_update(u + 1)
    return lrs


@pytest.mark.parametrize("preset", ["quick", "cnn_sgd"])
def test_the_schedule_has_the_same_shape_at_every_size(preset):
    shapes = {}
    for n in study.SIZES:
        b = study.budget(n)
        assert b.steps >= 2000 and b.epochs >= 50 and b.warmup_epochs * 10 == b.epochs  # warmup: 10%, exactly
        assert 2 <= b.epochs // b.eval_every <= 20  # evaluations (plus the last epoch, always evaluated)
        r = resolve(preset, batch_size=64, **b.recipe())
        lrs = np.asarray(_lrs(r, b.steps_per_epoch))
        warm = b.steps // 10
        # timm's (DeiT's) cosine runs over the whole run, warmup included: at the end of warmup it is at cos(0.1 pi)
        peak = r.min_lr + 0.5 * (r.effective_lr - r.min_lr) * (1 + np.cos(np.pi * 0.1))
        assert lrs[0] == pytest.approx(r.warmup_lr) and lrs[warm] == pytest.approx(peak, rel=1e-6)
        assert warm - 1 <= lrs.argmax() <= warm and lrs.max() <= r.effective_lr
        assert lrs[-1] == pytest.approx(r.min_lr, abs=2e-5 * r.effective_lr)  # the cosine ends at min_lr
        shapes[n] = lrs[np.linspace(0, b.steps - 1, 41).astype(int)] / r.effective_lr
    for n in study.SIZES:  # the same curve against the fraction of the run, whatever the size
        np.testing.assert_allclose(shapes[n], shapes[10], atol=0.01)


def test_budget_values():
    assert study.GRID_SCALE == 8  # the update floor, doubled three times after its convergence checks
    # the grid: max(16,000 updates, 100 epochs) in whole epochs rounded up to a multiple of 10
    assert [study.budget(n).steps for n in study.SIZES] == [16000, 16000, 16050, 16100, 17160]
    assert [study.budget(n).epochs for n in study.SIZES] == [16000, 4000, 1070, 350, 110]
    assert [study.budget(n, scale=16).epochs for n in study.SIZES] == [32000, 8000, 2140, 700, 220]  # the 2x check
    # the budgets before the doublings at 30 per class (the committed scale1/2/4 records): 2000, 4000, 8000
    assert [study.budget(30, scale=k).steps for k in (1, 2, 4)] == [2000, 4000, 8000]
    assert study.budget(10000, min_steps=10).epochs == 100  # where the epoch floor binds
    assert [study.seeds_for(n) for n in (10, 30, 100)] == [(0, 1, 2, 3, 4)] * 2 + [(0, 1, 2)]
    with pytest.raises(ValueError, match="fewer than batch_size 64"):
        study.budget(5)


def test_plan_rows_models_and_order(fmnist, monkeypatch):
    monkeypatch.setattr(study.design, "GRID_SCALE_AT", {})  # the plan as designed, before the rule at 1000 applied
    plan = study.study_plan(data_dir=str(fmnist))
    tags = [s.tag for s in plan]
    assert tags[:8] == [f"{m}/{n}pc/scale8" for n in (10, 30) for m in study.MODELS]
    assert tags[20:28] == [f"{m}/{n}pc/scale16" for n in (30, 1000) for m in study.MODELS]  # every seed 0 first
    assert tags[-1] == "dhvt/30pc/scale8/fp32" and len(plan) == 5 * 4 + 2 * 4 + 1
    by_tag = {s.tag: s for s in plan}
    sgd, vit = by_tag["resnet_sgd/100pc/scale8"], by_tag["resnet/100pc/scale8"]
    assert (sgd.preset, vit.preset, sgd.model_kwargs, sgd.recipe) == ("cnn_sgd", "quick", vit.model_kwargs, vit.recipe)
    assert by_tag["dhvt/1000pc/scale16"].recipe["epochs"] == 2 * by_tag["dhvt/1000pc/scale8"].recipe["epochs"] == 220
    assert [study.late(s) for s in plan].count(True) == 1 and study.late(by_tag["dhvt/30pc/scale8/fp32"])
    assert by_tag["dhvt/10pc/scale8"].seeds == (0, 1, 2, 3, 4) and by_tag["dhvt/1000pc/scale16"].seeds == (0,)
    assert by_tag["dhvt/30pc/scale8/fp32"].recipe["precision"] == "fp32"
    # a run's name relative to the grid: a doubling of GRID_SCALE renames no record
    assert [study.variant(f"deit/30pc/scale{k}") for k in (1, 2, 4, 8, 16, 3)] == \
        ["eighth", "quarter", "half", "", "x2", "scale3"]
    assert study.variant("dhvt/30pc/scale8/fp32") == "fp32" and study.variant("dhvt/30pc/scale4/fp32") == "half/fp32"
    with pytest.raises(ValueError, match="model 'vit' is not in the study; choose from: deit, dhvt"):
        study.efficiency_runs([10], ["vit"], data_dir=str(fmnist))
    # the checks test a budget at a size in the plan: none at sizes not asked for
    assert [s.tag for s in study.study_plan(data_dir=str(fmnist), models=["dhvt"], samples_per_class=[10, 100])] == \
        ["dhvt/10pc/scale8", "dhvt/100pc/scale8"]
    assert [s.tag for s in study.study_plan(data_dir=str(fmnist), models=["dhvt"], samples_per_class=[30])] == \
        ["dhvt/30pc/scale8", "dhvt/30pc/scale16", "dhvt/30pc/scale8/fp32"]


def test_the_study_queues_every_run_in_one_call_the_fp32_check_last(fmnist, tmp_path, monkeypatch):
    """One queue for the workers: every row's first seed, then the later seeds, then the fp32 check (a worker free
    while the last of the others trains takes it; no second queue that waits for the first to drain)."""
    calls = []
    monkeypatch.setattr(launch, "launch",
                        lambda tasks, cfg, root, verbose=True: calls.append([(t.tag, t.seed) for t in tasks]) or {})
    plan = study.study_plan(data_dir=str(fmnist), models=["dhvt"], samples_per_class=[10, 30])
    study.run_study(plan, tmp_path, launcher="local", data_dir=str(fmnist), store=None)
    grid = [("dhvt/10pc/scale8", s) for s in range(5)], [("dhvt/30pc/scale8", s) for s in range(5)]
    assert calls == [[grid[0][0], grid[1][0], ("dhvt/30pc/scale16", 0)] + [r for s in range(1, 5) for r in
                                                                          (grid[0][s], grid[1][s])]
                     + [("dhvt/30pc/scale8/fp32", s) for s in range(3)]]
    assert [study.study_order(s, s.seeds[-1]) for s in plan] == [(False, 4), (False, 4), (False, 0), (True, 2)]
    with pytest.raises(ValueError, match=re.escape("order 'fast' is not an order of runs; use 'row', 'seed' or a")):
        study.runs.execute(plan, results_root=tmp_path, order="fast")


def test_a_failed_check_at_1000_doubles_that_size_once(fmnist):
    assert study.GRID_SCALE_AT == {1000: 16}  # set by the README's rule: DeiT's check at 1000 failed (+4.60)
    rows = study.study_plan(data_dir=str(fmnist))
    assert len(rows) == 5 * 4 + 4 + 1  # the grid, the 2x checks at 30 (none at 1000 now), the fp32 check
    plan = {s.tag: s for s in rows}
    assert plan["dhvt/1000pc/scale16"].seeds == (0, 1, 2) and plan["dhvt/1000pc/scale16"].recipe["epochs"] == 220
    assert "dhvt/1000pc/scale8" not in plan and not any("scale32" in t for t in plan)  # not checked again
    assert plan["dhvt/30pc/scale16"].seeds == (0,) and plan["dhvt/300pc/scale8"].recipe["epochs"] == 350
    assert [study.variant(t) for t in ("deit/1000pc/scale16", "deit/1000pc/scale8", "deit/30pc/scale16")] == \
        ["", "half", "x2"]


def _runs(done: dict[tuple[str, int], float]) -> pd.DataFrame:
    """A manifests frame (load_runs' columns) of completed runs: (tag, seed) -> last-epoch top-1."""
    rows = [dict(tag=tag, seed=seed, status="completed", samples_per_class=int(tag.split("/")[1][:-2]),
                 final_top1=top1, best_top1=top1, epochs_run=int(tag.split("scale")[1].split("/")[0]),
                 train_images=640, wall_s=1.0, config={"batch_size": 64}) for (tag, seed), top1 in done.items()]
    runs = pd.DataFrame(rows)
    for col in RUN_COLUMNS:
        if col not in runs:
            runs[col] = None
    return runs


def test_the_doubling_rule_at_1000_is_read_from_the_records(fmnist, monkeypatch):
    monkeypatch.setattr(study.design, "GRID_SCALE_AT", {})  # as before the rule applied (every size at GRID_SCALE)
    plan = study.study_plan(data_dir=str(fmnist))
    grid0 = {(s.tag, 0): 80.0 for s in plan if study.variant(s.tag) == ""}
    # no check at 1000 completed yet: the grid there trains seed 0 only; the other sizes keep their seeds
    now, held, due = study.doubling_rule(plan, _runs(grid0))
    by_tag = {s.tag: s for s in now}
    assert held == [f"{m}/1000pc/scale8" for m in study.MODELS] and due is None
    assert by_tag["deit/1000pc/scale8"].seeds == (0,) and by_tag["deit/300pc/scale8"].seeds == (0, 1, 2)
    assert by_tag["deit/30pc/scale16"].seeds == (0,) and len(now) == len(plan)
    # every check at 1000 completed, each within a point (one at 30 failed: capped there, no rule): nothing held
    checks = {(f"{m}/1000pc/scale16", 0): 80.5 for m in study.MODELS} | {("deit/30pc/scale16", 0): 83.0}
    now, held, due = study.doubling_rule(plan, _runs(grid0 | checks))
    assert held == [] and due is None and {s.tag: s for s in now}["deit/1000pc/scale8"].seeds == (0, 1, 2)
    # DHVT's check at 1000 moved by +1.25: the rule asks for GRID_SCALE_AT, and training refuses until it is set
    runs = _runs(grid0 | checks | {("dhvt/1000pc/scale16", 0): 81.25})
    _, held, due = study.doubling_rule(plan, runs)
    assert due == ("the 2x check at 1000 per class moved by 1 point or more (dhvt +1.25): by the README's rule every "
                   "model's grid there moves to the check's budget; set GRID_SCALE_AT = {1000: 16} in "
                   "dhvtlib/study/design.py and run again.")
    monkeypatch.setattr(study.runs, "_execute", lambda specs, root, **kw: runs.copy())
    with pytest.raises(ValueError, match=re.escape(due)):
        study.run_study(plan, "unused")
    assert study.run_study(plan, "unused", train=False).attrs["rule_due"] == due  # reported, not refused
    monkeypatch.setattr(study.design, "GRID_SCALE_AT", {1000: 16})  # set: the check runs are the new grid's seed 0
    assert study.doubling_rule(study.study_plan(data_dir=str(fmnist)), runs)[1:] == ([], None)


def _table() -> pd.DataFrame:
    """A fixed study frame: the gap shrinks by 8.5 points per decade, DHVT within 1 point of the CNN at 1000."""
    rows = []
    for n, (deit, dhvt, cnn) in {10: (40, 55, 60), 100: (70, 78, 80), 1000: (85, 87, 88)}.items():
        for seed in (0, 1, 2):
            for m, acc in (("deit", deit + 0.5 * seed), ("dhvt", dhvt + seed), ("resnet_sgd", cnn + seed)):
                rows.append(dict(model=m, samples_per_class=n, variant="", seed=seed, top1=float(acc),
                                 best_top1=float(acc), steps=10, wall_s=1.0))
    rows.append(dict(model="dhvt", samples_per_class=1000, variant="x2", seed=0, top1=87.5, best_top1=88.0, steps=20,
                     wall_s=2.0))
    return pd.DataFrame(rows)


def test_verdict_statistics_on_a_fixed_table():
    claim1, per = study.verdicts(_table())
    assert claim1["slope"] == pytest.approx(-8.5) and claim1["holds"]  # gaps 20.5, 10.5, 3.5 over 3 decades
    assert claim1["ci_low"] <= -8.5 <= claim1["ci_high"] < 0
    # 3 seeds everywhere: enough at 100 and 1000 (3 planned), short of the 5 planned at 10, so provisional
    from dhvtlib.report import claim1_sentence
    assert claim1["short"] == {10: (3, 5)}
    assert claim1_sentence(claim1) == ("claim 1 holds here: slope of the gap vs log10(images per class) -8.50 points "
                                       f"per decade, 95% CI [{claim1['ci_low']:.2f}, {claim1['ci_high']:.2f}] "
                                       "(provisional: 3 of the 5 planned paired seeds at 10 images per class)")
    two = study.verdicts(_table()[lambda f: f["seed"] < 2])[0]
    assert two["short"] == {10: (2, 5), 100: (2, 3), 1000: (2, 3)} and claim1_sentence(two).endswith(
        "(provisional: 2 of the 5 planned paired seeds at 10; 2 of the 3 planned paired seeds at 100, 1000 images per "
        "class)")
    full = pd.concat([_table(), _table()[lambda f: (f["samples_per_class"] == 10) & (f["seed"] < 2)].assign(
        seed=lambda f: f["seed"] + 3)], ignore_index=True)  # seeds 3 and 4 at 10 per class: the whole plan
    assert study.verdicts(full)[0]["short"] == {} and "provisional" not in claim1_sentence(study.verdicts(full)[0])
    per = per.set_index("samples_per_class")
    assert per.loc[10, "gap"] == pytest.approx(20.5) and per.loc[10, "gain"] == pytest.approx(15.5)
    assert per.loc[1000, "hybrid_minus_cnn"] == pytest.approx(-1.0) and per.loc[1000, "claim2_holds"]
    assert not per.loc[10, "claim2_holds"] and per.loc[10, "gap_seeds"] == 3
    assert per.loc[10, "share"] == pytest.approx(15.5 / 20.5) and per.loc[10, "share_low"] <= per.loc[10, "share"]
    mean, lo, hi = study.paired_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and 1.0 <= lo < 2.0 < hi <= 3.0
    summary = study.summary_table(_table()).set_index(["model", "samples_per_class"])
    assert summary.loc[("dhvt", 10), "top1_mean"] == 56 and summary.loc[("dhvt", 10), "top1_std"] == 1
    half = pd.DataFrame([dict(model="dhvt", samples_per_class=1000, variant="half", seed=0, top1=80.0,
                              best_top1=80.0, steps=5, wall_s=1.0)])
    conv = study.convergence_table(pd.concat([_table(), half], ignore_index=True)).set_index("steps")
    assert conv.loc[10, ["model", "samples_per_class", "change"]].tolist() == ["dhvt", 1000, 0.5]  # grid vs x2
    assert bool(conv.loc[10, "accepted"]) and not conv.loc[5, "accepted"]
    assert conv.loc[5, "change"] == pytest.approx(7.0)  # half (80, 5 steps) -> the grid (87, 10 steps), seed 0
    # the models whose grid budget failed its 2x check, per size (the earlier half -> grid check does not count)
    deit_x2 = pd.DataFrame([dict(model="deit", samples_per_class=1000, variant="x2", seed=0, top1=86.0,
                                 best_top1=86.0, steps=20, wall_s=1.0)])
    both = pd.concat([_table(), half, deit_x2], ignore_index=True)
    assert study.not_converged(both) == {1000: ["deit"]} and study.not_converged(_table()) == {1000: []}
    assert study.verdicts(both)[1].set_index("samples_per_class")["not_converged"].to_dict() == \
        {10: "", 100: "", 1000: "deit"}
    assert study.verdicts(_table())[1]["not_converged"].tolist() == ["", "", "none"]


def test_slope_needs_two_sizes():
    assert np.isnan(study.slope_ci({10: [1.0, 2.0]})[0])
    claim1, _ = study.verdicts(_table()[lambda f: f["samples_per_class"] == 10])
    assert claim1["holds"] is None
    one_seed = _table()[lambda f: f["seed"] == 0]  # two or more sizes, one seed each: no CI, no verdict
    claim1, per = study.verdicts(one_seed)
    assert claim1["holds"] is None and "fewer than two paired seeds" in claim1["undecided_why"]
    assert per["claim2_holds"].isna().all() and not np.isnan(claim1["slope"])


def test_report_writes_tables_and_figures(tmp_path, monkeypatch):
    from dhvtlib import report
    monkeypatch.setattr(study.design, "GRID_SCALE_AT", {})  # the fixed table has a grid and a 2x check at 1000

    rows = []
    for r in _table().to_dict("records"):
        scale = study.GRID_SCALE * (2 if r["variant"] == "x2" else 1)
        tag = f"{r['model']}/{r['samples_per_class']}pc/scale{scale}"
        rows.append(dict(tag=tag, status="completed", samples_per_class=r["samples_per_class"], seed=r["seed"],
                         final_top1=r["top1"], best_top1=r["best_top1"],
                         epochs_run=4 if r["variant"] == "x2" else 2, train_images=640,
                         wall_s=1.0, config={"batch_size": 64}, run_dir=str(tmp_path / "none")))
    runs = pd.DataFrame(rows)
    for col in RUN_COLUMNS:  # the columns load_runs gives every frame
        if col not in runs:
            runs[col] = None
    claim1, per, files = report.report_efficiency(tmp_path, "efficiency/x", runs)
    names = {p.name for p in files}
    assert {"table.md", "table.tex", "verdicts.md", "convergence.md", "efficiency_x_top1_vs_samples.png"} <= names
    assert "claim 1 holds here: slope of the gap vs log10(images per class) -8.50" in \
        (tmp_path / "efficiency/x/verdicts.md").read_text()


def test_the_share_ci_is_unbounded_where_resamples_reach_a_gap_of_zero_not_cut_at_the_point():
    """A resample whose mean gap is 0 or below has no finite share: it is kept as +inf, not dropped (dropping
    them left the upper bound at the point estimate)."""
    rows = [dict(model=m, samples_per_class=30, variant="", seed=seed, top1=acc, best_top1=acc, steps=10, wall_s=1.0)
            for seed, (deit, dhvt, cnn) in enumerate([(70.0, 75.0, 69.0), (70.0, 74.0, 71.0), (70.0, 76.0, 71.5)])
            for m, acc in (("deit", deit), ("dhvt", dhvt), ("resnet_sgd", cnn))]
    rows += [dict(r, samples_per_class=100, top1=r["top1"] + 2 * (r["model"] == "resnet_sgd") + 5) for r in rows]
    # at 300 DHVT gains nothing over DeiT on one seed whose gap is below 0: a share of 0 there, and no warning
    rows += [dict(r, samples_per_class=300, top1=70.0 + (r["model"] == "resnet_sgd") * (2.0 - 3 * (r["seed"] == 0))
                  + (r["model"] == "dhvt") * (r["seed"] > 0)) for r in rows[:9]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        per = study.verdicts(pd.DataFrame(rows))[1].set_index("samples_per_class")
    assert per.loc[300, "share"] == pytest.approx((2 / 3) / 1.0) and per.loc[300, "share_high"] == np.inf
    # at 30 the mean gap is +0.5 but one seed in three has -1: about 30% of resamples have a mean gap <= 0
    assert per.loc[30, "share"] == pytest.approx(5.0 / 0.5) and per.loc[30, "gap_low"] < 0
    assert per.loc[30, "share_high"] == np.inf and 0 < per.loc[30, "share_low"] < per.loc[30, "share"]
    # at 100 every seed's gap is positive (+1, +3, +3.5): a finite CI around the point
    assert per.loc[100, "share_low"] < per.loc[100, "share"] < per.loc[100, "share_high"] < np.inf


def test_the_efficiency_figure_tells_models_apart_and_marks_a_share_over_a_gap_near_zero():
    import matplotlib.pyplot as plt
    from dhvtlib.viz import plot_efficiency

    claim1, per = study.verdicts(_table())
    per.loc[per["samples_per_class"] == 100, "gap_low"] = -0.5  # the gap's CI reaches 0 at 100 per class
    fig = plot_efficiency(study.summary_table(_table()), per)
    left, right = fig.axes[:2]
    assert len({line.get_marker() for line in left.get_lines()}) == 3  # a marker per model, not only a colour
    shares = {t.get_text(): t.get_color() for t in right.texts}
    assert shares["76%"] != "0.5" and shares[f"{100 * per.loc[1, 'share']:.0f}%*"] == "0.5"  # starred, in grey
    assert "*: the gap's CI reaches 0" in right.get_title()
    plt.close(fig)


def test_what_is_left_is_priced_in_cpu_seconds_where_recorded(fmnist):
    plan = study.study_plan(data_dir=str(fmnist), models=["deit"], samples_per_class=[10], convergence=False,
                            precision=False)
    runs = _runs({("deit/10pc/scale8", 0): 70.0})  # 8 epochs x 10 updates, wall_s 1.0
    left = study.remaining(runs, plan)
    assert (left["runs"], left["done"], left["updates"]) == (5, 1, 4 * 16_000)
    assert left["core_hours"] == pytest.approx(4 * 16_000 * (1.0 / 80) / 3600)  # no cpu_s: wall seconds
    runs["cpu_s"] = 8.0  # contention or a pause inflates wall_s, not cpu_s
    assert study.remaining(runs, plan)["core_hours"] == pytest.approx(4 * 16_000 * (8.0 / 80) / 3600)
    started = pd.DataFrame([dict(tag="deit/10pc/scale8", seed=1, status="interrupted", epochs_run=3,
                                 config={"epochs": 16_000}), dict(tag="deit/10pc/scale8", seed=2, status="running",
                                                                  epochs_run=None, config={"epochs": 16_000})])
    line = study.progress_line(pd.concat([runs, started], ignore_index=True), plan)
    assert line.startswith("5 runs in the plan: 1 completed, 4 not yet (64,000 updates, about 2 core-hours")
    assert line.endswith("; started, not completed (each resumes from its checkpoint where it ran): "
                         "deit/10pc/scale8 s1 (epoch 3/16000), deit/10pc/scale8 s2 (running)")


def test_status_names_the_runs_started_and_not_completed(fmnist, tmp_path):
    """`python -m dhvtlib.study --status` (run_study without training) reads an interrupted run's record and says
    where it stopped; it counts as not completed and nothing trains."""
    plan = study.study_plan(data_dir=str(fmnist), models=["deit"], samples_per_class=[10], convergence=False,
                            precision=False)
    out = run_dir(tmp_path, plan[0], 1)
    out.mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps(dict(tag="deit/10pc/scale8", seed=1, status="interrupted",
                                                       epochs_run=3, output=str(out), config={"epochs": 16_000})))
    runs = study.run_study(plan, tmp_path, train=False, launcher="inline", data_dir=str(fmnist), store=None)
    assert runs.attrs["missing"] == [("deit/10pc/scale8", s) for s in range(5)]
    line = study.progress_line(runs, plan)
    assert line.startswith("5 runs in the plan: 0 completed, 5 not yet")
    assert line.endswith("; started, not completed (each resumes from its checkpoint where it ran): "
                         "deit/10pc/scale8 s1 (epoch 3/16000)")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["manifest.json"]  # nothing trained


def test_loss_curve_legend_names_every_model_and_budget():
    """One legend for all panels: every model (also those missing from the last panel) and each line style used."""
    from dhvtlib.viz.figures import plot_loss_curves

    rows = [dict(model=m, samples_per_class=n, variant=v, progress=p, train_loss=2.0 - p)
            for m, n, v in (("deit", 10, ""), ("dhvt", 10, ""), ("deit", 10, "x2"), ("deit", 100, ""))
            for p in (0.5, 1.0)]
    import matplotlib.pyplot as plt

    fig = plot_loss_curves(pd.DataFrame(rows), labels=study.LABELS)
    try:
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["DeiT", "DHVT", "the grid's budget",
                                                                      "2x budget"]
        assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3
    finally:
        plt.close(fig)  # no open figure left for later tests


@pytest.mark.slow
def test_per_update_schedule_resumes_bitwise(fmnist, tmp_path):
    """The study's schedule (per update) and checkpoint cadence (every 2nd epoch): killed mid-run, resumed from the
    last checkpoint (a whole epoch back), the run ends bitwise equal to an uninterrupted one."""
    args = ["--preset", "smoke", "--data-dir", str(fmnist), "--no-progress", "--epochs", "4", "--threads", "1",
            "--sched-unit", "step", "--warmup-epochs", "1", "--checkpoint-every-epochs", "2",
            "--checkpoint-every-steps", "0"]
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert _cli(*args, "--output", str(ref)).returncode == 0
    lrs = [json.loads(line)["lr"] for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert lrs[0] == pytest.approx(1e-6) and lrs[1] > lrs[2] > lrs[3] > 0  # warmup per update, then the cosine
    killed = _cli(*args, "--output", str(out), signal_after=(2, 3, "KILL"))
    assert killed.returncode == -9, killed.stderr
    assert load_checkpoint(out / "checkpoint-last.pt")["epoch"] == 2  # the checkpoint after epochs 1-2
    assert _cli(*args, "--output", str(out), "--resume").returncode == 0
    assert read_metrics(ref) == read_metrics(out)
    assert sha256(ref / "model.safetensors") == sha256(out / "model.safetensors")


def test_short_deit_schedules_say_so_and_smoke_learns(fmnist, tmp_path, capsys):
    """DeiT's per-epoch schedule keeps epochs 1 and 2 at warmup_lr: a run where that is a quarter or more of it
    says so in one line (and in its manifest); the paper presets and quick's 10 epochs do not; smoke has no warmup,
    so its 2 epochs train at the full lr."""
    from dhvtlib.recipe import idle_warning
    from dhvtlib.run.train import run

    note = idle_warning(resolve("quick", epochs=3))
    assert note.startswith("note: with epochs 3 and warmup_epochs 1, DeiT's per-epoch schedule runs epochs 1 and 2 "
                           "at warmup_lr 1e-06") and "sched_unit='step'" in note
    assert idle_warning(resolve("quick")) is None and idle_warning(resolve("cifar100")) is None
    assert idle_warning(resolve("quick", epochs=3, sched_unit="step")) is None
    assert PRESETS["smoke"].warmup_epochs == 0 and idle_warning(PRESETS["smoke"]) is None
    m = run("quick", output=tmp_path / "q", data_dir=fmnist, epochs=3, samples_per_class=8, test_samples_per_class=4,
            batch_size=16, model_kwargs={"embed_dim": 32, "depth": 1}, progress=False)
    assert m["notes"] == [note] and note in capsys.readouterr().out
    smoke = run("smoke", output=tmp_path / "s", data_dir=fmnist, progress=False, verbose=False)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert lrs[0] == pytest.approx(resolve("smoke").effective_lr) and "notes" not in smoke


def test_the_command_reports_what_is_left_without_training(fmnist, tmp_path, capsys, monkeypatch):
    # a store holding part of the plan (the committed DeiT runs at 10 per class), whatever the committed tree holds
    store, committed = tmp_path / "store", paths.store_root() / "efficiency" / "fmnist"
    shutil.copytree(committed / "deit__10pc__scale8", store / "efficiency" / "fmnist" / "deit__10pc__scale8")
    monkeypatch.setattr(experiments, "store_root", lambda: store)
    out_dir = tmp_path / "out"
    study.main(["--status", "--output-dir", str(out_dir), "--data-dir", str(fmnist), "--models", "deit", "dhvt",
                "--sizes", "10", "30"])
    out = capsys.readouterr().out
    # 2 models x (5 + 5 seeds) + their 2x checks at 30 (none at 1000: not asked for) + the fp32 check's 3 seeds
    assert out.startswith("25 runs in the plan: 5 completed, 20 not yet")
    # nothing trained: the only runs in the output are the stored records it reuses (copied, completed)
    manifests = sorted(p.relative_to(out_dir).parent.as_posix() for p in out_dir.rglob("manifest.json"))
    assert manifests == [f"efficiency/fmnist/deit__10pc__scale8/s{s}" for s in range(5)]
    assert not list(out_dir.rglob("checkpoint-*.pt"))
    with pytest.raises(SystemExit, match="model 'vit' is not in the study"):
        study.main(["--status", "--output-dir", str(tmp_path), "--data-dir", str(fmnist), "--models", "vit"])
