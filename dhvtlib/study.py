"""The title claim, tested: does a plain ViT fall further behind a CNN as data shrinks, and does DHVT close the gap?

One file holds the study's design, its plan and its pre-registered verdicts (README "The title claim"):

- **Models** (`MODELS`): DeiT (absolute position embedding) and DHVT at the ladder's small width (embed 64, depth 4,
  4 heads, patch 4), and the small-image ResNet-18 at the base width whose parameter count is closest to that
  DHVT's, (a) on the same ViT recipe (`resnet`) and (b) on the standard CNN recipe (`resnet_sgd`, preset
  `cnn_sgd`), the reference CNN for the gap.
- **Sizes** (`SIZES`): 10, 30, 100, 300 and 1000 training images per class; `seeds_for(n)` seeds each (5 at 10 and
  30, 3 above). A seed picks the subset and the initialisation, paired across models. Test: a fixed stratified half
  of the test set (500 per class, the same for every run).
- **Budget** (`budget`): the same schedule shape at every size: max(`min_steps`, `min_epochs` epochs) updates at
  batch 64, times `GRID_SCALE`, warmup 10% of them, one cosine over all of them, stepped per update
  (`sched_unit="step"`: with 1-4 updates per epoch at the small sizes, a per-epoch schedule would be a staircase
  of a few steps). Evaluation every k epochs (about every 500 updates, at most 20 times, always at the end), so
  it costs a few % of training.
- **Convergence** (`convergence_runs`): one seed at 30 and 1000 per class with 2x the budget (tags `.../x2`); the
  budget is accepted when the last-epoch top-1 moves by less than `CONVERGENCE_POINTS`, else doubled. The first
  budget (max(2000 updates, 50 epochs), scale 1) failed: DeiT at 30 per class, seed 0, went from 65.38 to 71.14
  with twice the updates; doubled (scale 2), it failed again (71.14 -> 73.50 at 8000 updates). So `GRID_SCALE` is
  4. Runs of the smaller budgets keep their records under the tags `.../half` (scale 2) and `.../quarter`
  (scale 1), and the check is repeated at twice the current budget (`.../x2`).
- **Precision** (`precision_runs`): bf16 (what `precision="auto"` picks on a CPU with native bf16) against fp32 for
  one configuration at 3 seeds (tags `.../fp32`).
- **Verdicts** (`verdicts`), with x = log10(images per class) and gap = top1(CNN-SGD) - top1(DeiT) paired by seed:
  claim 1 holds if the least-squares slope of the per-size mean gap against x is negative and its 95% bootstrap CI
  (resampling seeds within each size) excludes 0; claim 2 holds at a size if the 95% CI of top1(DHVT) -
  top1(CNN-SGD) (paired, bootstrap) reaches -1 point or above; the share of the gap DHVT closes, (DHVT - DeiT) /
  (CNN-SGD - DeiT), is reported with its CI wherever the gap is positive.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .data import dataset_info
from .experiments import RunSpec, execute
from .models import create_model, matched_width
from .paths import output_dir

__all__ = ["SIZES", "MODELS", "CNN_REFERENCE", "CONVERGENCE_SIZES", "CONVERGENCE_POINTS", "LABELS", "Budget",
           "budget", "seeds_for", "efficiency_runs", "convergence_runs", "precision_runs", "study_plan",
           "run_study", "late", "progress_line", "study_frame", "summary_table", "convergence_table", "precision_table", "slope_ci", "paired_ci",
           "verdicts"]

SIZES = (10, 30, 100, 300, 1000)
# name -> (registered model, preset): the ViT recipe is `quick`'s (the paper's recipe at a CPU scale)
MODELS = {"deit": ("deit_tiny_cifar_patch4", "quick"), "dhvt": ("dhvt_tiny_cifar_patch4", "quick"),
          "resnet": ("resnet18_cifar", "quick"), "resnet_sgd": ("resnet18_cifar", "cnn_sgd")}
LABELS = {"deit": "DeiT", "dhvt": "DHVT", "resnet": "ResNet-18, ViT recipe", "resnet_sgd": "ResNet-18, SGD recipe"}
CNN_REFERENCE = "resnet_sgd"
CONVERGENCE_SIZES = (30, 1000)
CONVERGENCE_POINTS = 1.0
GRID_SCALE = 4  # the first budget doubled twice after its convergence checks (see the module docstring)
SMALLER_BUDGETS = {"half": 2, "quarter": 4}  # tag variant -> how many times smaller than the grid's budget
PRECISION_CHECK = ("dhvt", 30)  # (model, images per class) trained in fp32 beside bf16 at seeds 0-2
VIT = dict(embed_dim=64, depth=4, num_heads=4)
BATCH = 64


def seeds_for(samples_per_class: int) -> tuple[int, ...]:
    """5 seeds at 10 and 30 images per class (where the variance is largest), 3 above."""
    return tuple(range(5 if samples_per_class <= 30 else 3))


@dataclass(frozen=True)
class Budget:
    epochs: int
    warmup_epochs: int
    eval_every: int
    checkpoint_every_epochs: int
    steps_per_epoch: int

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def recipe(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "warmup_epochs": self.warmup_epochs, "eval_every": self.eval_every,
                "checkpoint_every_epochs": self.checkpoint_every_epochs, "sched_unit": "step"}


def budget(samples_per_class: int, num_classes: int = 10, batch_size: int = BATCH, *, min_steps: int = 2000,
           min_epochs: int = 50, scale: int = 1, eval_steps: int = 500, max_evals: int = 20,
           checkpoint_steps: int = 200) -> Budget:
    """The run length at a size: max(min_steps updates, min_epochs epochs), in whole epochs rounded up to a multiple
    of 10 (so that the 10% warmup is whole epochs, the same fraction at every size), times `scale` (the grid runs
    at `GRID_SCALE`, the convergence check at twice that). Evaluation about every `eval_steps` updates (at least twice, at most `max_evals` times),
    checkpoints about every `checkpoint_steps` updates."""
    spe = samples_per_class * num_classes // batch_size  # updates per epoch (the loader drops the last partial batch)
    if spe < 1:
        raise ValueError(f"{samples_per_class} images per class x {num_classes} classes is fewer than batch_size "
                         f"{batch_size}; lower batch_size or raise samples_per_class.")
    epochs = max(math.ceil(min_steps / spe), min_epochs)
    epochs = 10 * math.ceil(epochs / 10) * scale
    evals = min(max(2, epochs * spe // eval_steps), max_evals)
    return Budget(epochs=epochs, warmup_epochs=epochs // 10, eval_every=max(1, epochs // evals),
                  checkpoint_every_epochs=max(1, checkpoint_steps // spe), steps_per_epoch=spe)


def _spec(model: str, n: int, *, experiment: str, variant: str = "", scale: int = GRID_SCALE, cnn_width: int,
          dataset: str, num_classes: int, test_samples_per_class: int | None, seeds: Sequence[int],
          **recipe: Any) -> RunSpec:
    name, preset = MODELS[model]
    arch = {"width": cnn_width} if name.startswith("resnet") else dict(VIT)
    b = budget(n, num_classes, BATCH, scale=scale)
    values = {"dataset": dataset, "samples_per_class": n, "batch_size": BATCH,
              "test_samples_per_class": test_samples_per_class, **b.recipe(), **recipe}
    tag = f"{model}/{n}pc" + (f"/{variant}" if variant else "")
    return RunSpec(experiment, tag, f"{LABELS[model]}, {n}/class" + (f" ({variant})" if variant else ""), name,
                   arch, values, preset=preset, seeds=tuple(seeds))


def _context(dataset: str, data_dir, models: Sequence[str], cnn_width: int | None) -> tuple[int, int]:
    """(num_classes, the CNN's width matched to DHVT's parameter count)."""
    info = dataset_info(dataset, data_dir)
    if cnn_width is None:
        dhvt = create_model(MODELS["dhvt"][0], img_size=info.img_size, in_chans=info.in_chans,
                            num_classes=info.num_classes, **VIT)
        cnn_width = matched_width(sum(p.numel() for p in dhvt.parameters()), MODELS["resnet"][0],
                                  in_chans=info.in_chans, num_classes=info.num_classes)
    return info.num_classes, cnn_width


def _check_args(samples_per_class: Sequence[int], models: Sequence[str]) -> None:
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise ValueError(f"model {bad[0] if bad else models!r} is not in the study; choose from: {', '.join(MODELS)}.")
    bad_n = [n for n in samples_per_class if not isinstance(n, int) or isinstance(n, bool) or n < 1]
    if bad_n or not samples_per_class:
        raise ValueError(f"samples_per_class {list(samples_per_class)!r} must be a non-empty list of positive "
                         "integers, e.g. [10, 30, 100, 300, 1000].")


def efficiency_runs(samples_per_class: Sequence[int] = SIZES, models: Sequence[str] = tuple(MODELS), *,
                    seeds: Sequence[int] | None = None, dataset: str = "fashion_mnist", data_dir=None,
                    cnn_width: int | None = None, test_samples_per_class: int | None = 500,
                    experiment: str = "efficiency/fmnist") -> list[RunSpec]:
    """The main grid: one row per (model, size), with its own seeds (`seeds_for`, or `seeds` for every row)."""
    _check_args(samples_per_class, models)
    k, width = _context(dataset, data_dir, models, cnn_width)
    return [_spec(m, n, experiment=experiment, cnn_width=width, dataset=dataset, num_classes=k,
                  test_samples_per_class=test_samples_per_class, seeds=seeds if seeds is not None else seeds_for(n))
            for n in sorted(samples_per_class) for m in models]


def convergence_runs(models: Sequence[str] = tuple(MODELS), sizes: Sequence[int] = CONVERGENCE_SIZES, *,
                     dataset: str = "fashion_mnist", data_dir=None, cnn_width: int | None = None,
                     test_samples_per_class: int | None = 500, experiment: str = "efficiency/fmnist"
                     ) -> list[RunSpec]:
    """Seed 0 at each size with twice the budget (tags '<model>/<n>pc/x2')."""
    _check_args(sizes, models)
    k, width = _context(dataset, data_dir, models, cnn_width)
    return [_spec(m, n, experiment=experiment, variant="x2", scale=2 * GRID_SCALE, cnn_width=width, dataset=dataset,
                  num_classes=k, test_samples_per_class=test_samples_per_class, seeds=(0,))
            for n in sizes for m in models]


def precision_runs(*, dataset: str = "fashion_mnist", data_dir=None, cnn_width: int | None = None,
                   test_samples_per_class: int | None = 500, experiment: str = "efficiency/fmnist") -> list[RunSpec]:
    """`PRECISION_CHECK` in fp32 at seeds 0-2 (tag '<model>/<n>pc/fp32'), beside the grid's runs in the precision
    `auto` picks."""
    model, n = PRECISION_CHECK
    k, width = _context(dataset, data_dir, [model], cnn_width)
    return [_spec(model, n, experiment=experiment, variant="fp32", cnn_width=width, dataset=dataset, num_classes=k,
                  test_samples_per_class=test_samples_per_class, seeds=(0, 1, 2), precision="fp32")]


def study_plan(*, convergence: bool = True, precision: bool = True, **kwargs: Any) -> list[RunSpec]:
    """Every row of the study (`efficiency_runs(**kwargs)`, then the convergence and precision checks of the models
    asked for), in the order to run them: the cheap convergence size and its 2x check, the other sizes (`run_study`
    trains every row's first seed first), then the expensive 2x check and the fp32 check (`late`)."""
    grid = efficiency_runs(**kwargs)
    common = {k: v for k, v in kwargs.items() if k not in ("seeds", "samples_per_class", "models")}
    models = list(kwargs.get("models", MODELS))
    conv = convergence_runs(models, **common) if convergence else []
    small = min(CONVERGENCE_SIZES)
    first = [s for s in grid if s.recipe["samples_per_class"] == small]
    small_conv = [s for s in conv if s.recipe["samples_per_class"] == small]
    rest = [s for s in grid if s not in first]
    big_conv = [s for s in conv if s not in small_conv]
    prec = precision_runs(**common) if precision and PRECISION_CHECK[0] in models else []
    return first + small_conv + rest + big_conv + prec


# ------------------------------------------------------------------------------------------------ statistics
def study_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per completed run: model, samples_per_class, variant ('' for the grid, 'x2', 'fp32'), seed, top1
    (the last epoch's: no epoch is picked on the test set), best_top1, steps, wall_s."""
    if runs is None or len(runs) == 0:
        return pd.DataFrame(columns=["model", "samples_per_class", "variant", "seed", "top1", "best_top1", "steps",
                                     "wall_s"])
    done = runs[runs["status"].eq("completed")]
    rows = []
    for r in done.to_dict("records"):
        parts = str(r["tag"]).split("/")
        cfg = r["config"] if isinstance(r["config"], dict) else json.loads(r["config"])
        rows.append({"model": parts[0], "samples_per_class": int(r["samples_per_class"]),
                     "variant": parts[2] if len(parts) > 2 else "", "seed": int(r["seed"]),
                     "top1": float(r["final_top1"]), "best_top1": float(r["best_top1"]),
                     "steps": int(r["epochs_run"]) * (int(r["train_images"]) // int(cfg["batch_size"])),
                     "wall_s": float(r["wall_s"] or 0.0)})
    return pd.DataFrame(rows)


def _boot(rng: np.random.Generator, values: np.ndarray, n: int) -> np.ndarray:
    """n bootstrap means of `values` (resampling with replacement)."""
    idx = rng.integers(0, len(values), size=(n, len(values)))
    return values[idx].mean(axis=1)


def paired_ci(diffs: Sequence[float], n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5%, 97.5%) of paired differences, the CI by bootstrap over seeds (percentile). With 3-5 seeds a
    bootstrap CI is narrower than a t-interval would be: read it as a description of the seeds run."""
    d = np.asarray(diffs, dtype=float)
    if len(d) == 0:
        return math.nan, math.nan, math.nan
    b = _boot(np.random.default_rng(seed), d, n_boot)
    return float(d.mean()), float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    x0 = x - x.mean()
    return float((x0 * (y - y.mean())).sum() / (x0 ** 2).sum())


def slope_ci(per_size: dict[int, Sequence[float]], n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(slope, 2.5%, 97.5%): least-squares slope of the per-size mean of `per_size[n]` against log10(n), the CI by
    bootstrap resampling the values (seeds) within each size."""
    sizes = sorted(n for n, v in per_size.items() if len(v))
    if len(sizes) < 2:
        return math.nan, math.nan, math.nan
    x = np.log10(np.asarray(sizes, dtype=float))
    rng = np.random.default_rng(seed)
    means = np.stack([_boot(rng, np.asarray(per_size[n], dtype=float), n_boot) for n in sizes], axis=1)
    x0 = x - x.mean()
    slopes = (means - means.mean(axis=1, keepdims=True)) @ x0 / (x0 ** 2).sum()
    point = _slope(x, np.asarray([np.mean(per_size[n]) for n in sizes]))
    return point, float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5))


def _grid(f: pd.DataFrame) -> pd.DataFrame:
    """The grid's top-1, rows (samples_per_class, seed), a column per model."""
    g = f[f["variant"].eq("")]
    if g.empty:
        return pd.DataFrame()
    return g.pivot_table(index=["samples_per_class", "seed"], columns="model", values="top1")


def _paired(grid: pd.DataFrame, a: str, b: str) -> dict[int, np.ndarray]:
    """{size: top1(a) - top1(b) per seed both have}."""
    if a not in grid or b not in grid:
        return {}
    d = (grid[a] - grid[b]).dropna()
    return {int(n): v.to_numpy() for n, v in d.groupby(level=0)}


def summary_table(f: pd.DataFrame) -> pd.DataFrame:
    """Rows model x size (the grid): seeds run, top-1 mean, std (ddof=1), 95% bootstrap CI, mean best-epoch top-1,
    steps and mean wall time per run."""
    rows = []
    for (model, n), g in f[f["variant"].eq("")].groupby(["model", "samples_per_class"], sort=True):
        mean, lo, hi = paired_ci(g["top1"].to_numpy())
        rows.append({"model": model, "samples_per_class": n, "n_seeds": len(g), "top1_mean": mean,
                     "top1_std": g["top1"].std(ddof=1) if len(g) > 1 else math.nan, "ci_low": lo, "ci_high": hi,
                     "best_top1_mean": g["best_top1"].mean(), "steps": int(g["steps"].max()),
                     "wall_s_mean": g["wall_s"].mean()})
    return pd.DataFrame(rows)


def convergence_table(f: pd.DataFrame) -> pd.DataFrame:
    """Per model and convergence size (seed 0): each budget beside twice it (the grid's smaller budgets 'quarter'
    and 'half', the grid's own, its 'x2'): last-epoch top-1 at both, the change, and whether the smaller budget is
    accepted (it moves by less than `CONVERGENCE_POINTS`)."""
    rows = []
    order = {"quarter": 0, "half": 1, "": 2, "x2": 3}
    for (model, n), g in f[(f["seed"] == 0) & f["variant"].isin(list(order))].groupby(["model", "samples_per_class"]):
        runs = sorted(((order[v], int(r["steps"]), float(r["top1"])) for v, r in g.set_index("variant").iterrows()))
        for (_, s1, t1), (_, s2, t2) in zip(runs, runs[1:]):
            if s2 == 2 * s1:
                rows.append({"model": model, "samples_per_class": n, "steps": s1, "top1": t1, "steps_2x": s2,
                             "top1_2x": t2, "change": t2 - t1, "accepted": abs(t2 - t1) < CONVERGENCE_POINTS})
    return pd.DataFrame(rows)


def precision_table(f: pd.DataFrame) -> pd.DataFrame:
    """`PRECISION_CHECK` in fp32 vs the grid's runs (bf16 where auto picked it), paired by seed."""
    model, n = PRECISION_CHECK
    g = f[(f["model"] == model) & (f["samples_per_class"] == n)]
    p = g.pivot_table(index="seed", columns="variant", values="top1")
    if "fp32" not in p or "" not in p:
        return pd.DataFrame()
    p = p[["", "fp32"]].dropna()
    mean, lo, hi = paired_ci((p[""] - p["fp32"]).to_numpy())
    return pd.DataFrame([{"model": model, "samples_per_class": n, "seeds": len(p), "auto_mean": p[""].mean(),
                          "fp32_mean": p["fp32"].mean(), "diff_mean": mean, "ci_low": lo, "ci_high": hi,
                          "seed_std_auto": p[""].std(ddof=1) if len(p) > 1 else math.nan}])


def verdicts(f: pd.DataFrame, vit: str = "deit", hybrid: str = "dhvt", cnn: str = CNN_REFERENCE
             ) -> tuple[dict[str, Any], pd.DataFrame]:
    """(claim 1, per-size table). Claim 1 from the slope of the gap (cnn - vit, paired by seed) against
    log10(size); per size: the gap, the hybrid's gain over vit, hybrid - cnn with claim 2's verdict, and the share
    of the gap the hybrid closes (where the gap is positive), each with its 95% bootstrap CI over seeds."""
    grid = _grid(f)
    gap = _paired(grid, cnn, vit)
    slope, lo, hi = slope_ci(gap)
    claim1 = {"slope": slope, "ci_low": lo, "ci_high": hi, "sizes": sorted(gap),
              "holds": None if math.isnan(slope) else bool(slope < 0 and hi < 0)}
    rows = []
    for n in sorted(set(gap) | set(_paired(grid, hybrid, cnn))):
        row: dict[str, Any] = {"samples_per_class": n}
        for name, (a, b) in {"gap": (cnn, vit), "gain": (hybrid, vit), "hybrid_minus_cnn": (hybrid, cnn)}.items():
            d = _paired(grid, a, b).get(n, np.array([]))
            row.update(zip((name, f"{name}_low", f"{name}_high"), paired_ci(d)))
            row[f"{name}_seeds"] = len(d)
        hi2 = row["hybrid_minus_cnn_high"]
        row["claim2_holds"] = None if math.isnan(hi2) else bool(hi2 >= -1.0)
        row.update(share=math.nan, share_low=math.nan, share_high=math.nan)
        both = grid.loc[n][[vit, hybrid, cnn]].dropna() if {vit, hybrid, cnn} <= set(grid) else pd.DataFrame()
        if len(both) and (both[cnn] - both[vit]).mean() > 0:
            row.update(zip(("share", "share_low", "share_high"),
                           _share_ci((both[hybrid] - both[vit]).to_numpy(), (both[cnn] - both[vit]).to_numpy())))
        rows.append(row)
    return claim1, pd.DataFrame(rows)


def _share_ci(gain: np.ndarray, gap: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(share, 2.5%, 97.5%) of mean(gain) / mean(gap), resampling seeds (pairs) together."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(gap), size=(n_boot, len(gap)))
    num, den = gain[idx].mean(axis=1), gap[idx].mean(axis=1)
    ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return (float(gain.mean() / gap.mean()), float(np.nanpercentile(ratio, 2.5)),
            float(np.nanpercentile(ratio, 97.5)))


# ------------------------------------------------------------------------------------------------ command line
def late(spec: RunSpec) -> bool:
    """The rows trained after every seed of the others: the 2x check at the largest size and the fp32 check."""
    return spec.tag.endswith("/fp32") or spec.tag == f"{spec.tag.split('/')[0]}/{max(CONVERGENCE_SIZES)}pc/x2"


def run_study(specs: Sequence[RunSpec], results_root, *, train: bool = True, launcher: str = "local",
              workers: int = 2, threads: int = 1, wait: bool = True, data_dir=None, device: str = "cpu",
              **overrides: Any) -> pd.DataFrame:
    """Every run of `specs` (a `study_plan`): completed ones reused (also from the committed store), the others
    trained (`train`) with `launcher` ('local': `workers` processes of `threads` threads sharing one queue;
    'inline'): every row's first seed first, the `late` rows last. Returns the manifests (`attrs["missing"]`: runs
    not trained)."""
    frames = []
    for group in ([s for s in specs if not late(s)], [s for s in specs if late(s)]):
        if group:
            frames.append(execute(group, (0,), results_root=results_root, data_dir=data_dir, device=device,
                                  launcher=launcher, wait=wait, order="seed", progress=False, plan_only=not train,
                                  launch_options={"workers": workers, "threads": threads}
                                  if launcher != "inline" else None, **overrides))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    frame.attrs["missing"] = [m for f in frames for m in f.attrs.get("missing", [])]
    return frame


def progress_line(runs: pd.DataFrame, specs: Sequence[RunSpec]) -> str:
    """'87 runs in the plan: 12 completed, 75 not yet' (with how to train the rest)."""
    total = sum(len(s.seeds or (0,)) for s in specs)
    done = int(runs["status"].eq("completed").sum()) if len(runs) else 0
    left = total - done
    return (f"{total} runs in the plan: {done} completed, {left} not yet"
            + (" (train=True trains them here; the study's own command: python -m dhvtlib.study)" if left else ""))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m dhvtlib.study", description=__doc__.split("\n")[0])
    ap.add_argument("--output-dir", default=None, help="results tree (default: dhvtlib.paths.output_dir())")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--launcher", default="local", choices=("inline", "local"))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    args = ap.parse_args(argv)
    try:
        specs = study_plan(models=args.models, samples_per_class=args.sizes, data_dir=args.data_dir)
        runs = run_study(specs, output_dir(args.output_dir), workers=args.workers, threads=args.threads,
                         launcher=args.launcher, data_dir=args.data_dir)
        print(progress_line(runs, specs))
    except ValueError as e:
        raise SystemExit(f"python -m dhvtlib.study: {e}") from None


if __name__ == "__main__":
    main()
