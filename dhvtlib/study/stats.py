"""The study's pre-registered statistics: one row per completed run (`study_frame`), the summary, convergence and
precision tables, bootstrap CIs (`paired_ci`, `slope_ci`) and the verdicts on both claims (`verdicts`)."""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .design import CNN_REFERENCE, CONVERGENCE_POINTS, PRECISION_CHECK, seeds_for, variant

__all__ = ["run_config", "study_frame", "paired_ci", "slope_ci", "summary_table", "convergence_table", "grid_checks",
           "not_converged", "precision_table", "verdicts"]


def run_config(run: dict[str, Any]) -> dict[str, Any]:
    """A manifests-frame row's resolved config (a dict, or the JSON string `load_runs` keeps; {} when absent)."""
    cfg = run.get("config")
    return cfg if isinstance(cfg, dict) else json.loads(cfg or "{}")


def study_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per completed run: model, samples_per_class, variant (`variant`: '' for the grid), seed, top1
    (the last epoch's: no epoch is picked on the test set), best_top1, steps, wall_s, cpu_s (NaN for runs recorded
    before cpu_s existed)."""
    columns = ["model", "samples_per_class", "variant", "seed", "top1", "best_top1", "steps", "wall_s", "cpu_s"]
    if runs is None or len(runs) == 0:
        return pd.DataFrame(columns=columns)
    done = runs[runs["status"].eq("completed")]
    rows = []
    for r in done.to_dict("records"):
        parts = str(r["tag"]).split("/")
        cfg = run_config(r)
        rows.append({"model": parts[0], "samples_per_class": int(r["samples_per_class"]),
                     "variant": variant(str(r["tag"])), "seed": int(r["seed"]),
                     "top1": float(r["final_top1"]), "best_top1": float(r["best_top1"]),
                     "steps": int(r["epochs_run"]) * (int(r["train_images"]) // int(cfg["batch_size"])),
                     "wall_s": float(r["wall_s"] or 0.0),
                     "cpu_s": float(r["cpu_s"]) if pd.notna(r.get("cpu_s")) else math.nan})
    return pd.DataFrame(rows, columns=columns)  # the columns also when no run has completed


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
    """Per model and convergence size (seed 0): each budget beside twice it (the smaller budgets run before a
    doubling, the grid's own, its 'x2'): last-epoch top-1 at both, the change, and whether the smaller budget is
    accepted (it moves by less than `CONVERGENCE_POINTS`)."""
    rows = []
    order = {"eighth": 0, "quarter": 1, "half": 2, "": 3, "x2": 4}
    for (model, n), g in f[(f["seed"] == 0) & f["variant"].isin(list(order))].groupby(["model", "samples_per_class"]):
        runs = sorted(((order[v], int(r["steps"]), float(r["top1"])) for v, r in g.set_index("variant").iterrows()))
        for (_, s1, t1), (_, s2, t2) in zip(runs, runs[1:]):
            if s2 == 2 * s1:
                rows.append({"model": model, "samples_per_class": n, "steps": s1, "top1": t1, "steps_2x": s2,
                             "top1_2x": t2, "change": t2 - t1, "accepted": abs(t2 - t1) < CONVERGENCE_POINTS})
    return pd.DataFrame(rows)


def grid_checks(f: pd.DataFrame) -> pd.DataFrame:
    """`convergence_table` of the grid's budgets and their 2x checks only (variants '' and 'x2')."""
    return convergence_table(f[f["variant"].isin(["", "x2"])])


def not_converged(f: pd.DataFrame) -> dict[int, list[str]]:
    """Per size where some model's grid budget has its 2x check (`convergence_table` of the variants '' and
    'x2'): the models whose check was not accepted (not converged at the grid's budget: the update floor is
    capped, see the README)."""
    c = grid_checks(f)
    if c.empty:
        return {}
    return {int(n): sorted(g.loc[~g["accepted"], "model"]) for n, g in c.groupby("samples_per_class")}


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
    log10(size), undecided (`holds` None, `undecided_why`) until two or more sizes have paired runs, each with two
    or more seeds; per size: the gap, the hybrid's gain over vit, hybrid - cnn with claim 2's verdict, and the share
    of the gap the hybrid closes (where the gap is positive), each with its 95% bootstrap CI over seeds, and the
    models whose 2x check failed at that size (`not_converged`; blank where no check was run). Claim 1's `short`
    {size: (paired seeds, planned seeds)} names the sizes with fewer paired seeds than the design plans
    (`seeds_for`): a verdict decided on them is provisional."""
    grid = _grid(f)
    failed = not_converged(f)
    gap = _paired(grid, cnn, vit)
    slope, lo, hi = slope_ci(gap)
    why = ("fewer than two sizes with paired runs" if math.isnan(slope) else
           "fewer than two paired seeds at some size: no confidence interval yet"
           if min(len(v) for v in gap.values()) < 2 else None)
    claim1 = {"slope": slope, "ci_low": lo, "ci_high": hi, "sizes": sorted(gap), "undecided_why": why,
              "holds": None if why else bool(slope < 0 and hi < 0),
              "short": {n: (len(v), len(seeds_for(n))) for n, v in sorted(gap.items()) if len(v) < len(seeds_for(n))}}
    rows = []
    for n in sorted(set(gap) | set(_paired(grid, hybrid, cnn))):
        row: dict[str, Any] = {"samples_per_class": n}
        for name, (a, b) in {"gap": (cnn, vit), "gain": (hybrid, vit), "hybrid_minus_cnn": (hybrid, cnn)}.items():
            d = _paired(grid, a, b).get(n, np.array([]))
            row.update(zip((name, f"{name}_low", f"{name}_high"), paired_ci(d)))
            row[f"{name}_seeds"] = len(d)
        hi2 = row["hybrid_minus_cnn_high"]
        row["claim2_holds"] = None if math.isnan(hi2) or row["hybrid_minus_cnn_seeds"] < 2 else bool(hi2 >= -1.0)
        row.update(share=math.nan, share_low=math.nan, share_high=math.nan)
        both = grid.loc[n][[vit, hybrid, cnn]].dropna() if {vit, hybrid, cnn} <= set(grid) else pd.DataFrame()
        if len(both) and (both[cnn] - both[vit]).mean() > 0:
            row.update(zip(("share", "share_low", "share_high"),
                           _share_ci((both[hybrid] - both[vit]).to_numpy(), (both[cnn] - both[vit]).to_numpy())))
        row["not_converged"] = (", ".join(failed[n]) or "none") if n in failed else ""
        rows.append(row)
    return claim1, pd.DataFrame(rows)


def _share_ci(gain: np.ndarray, gap: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(share, 2.5%, 97.5%) of mean(gain) / mean(gap), resampling seeds (pairs) together. A resample whose mean gap
    is 0 or below has no finite share: it counts as +inf (or -inf where its mean gain is negative), the limit as its
    gap falls to 0, and is kept rather than dropped, so where more than 2.5% of resamples reach a gap of 0 the CI is
    unbounded on that side instead of being cut at the point estimate."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(gap), size=(n_boot, len(gap)))
    num, den = gain[idx].mean(axis=1), gap[idx].mean(axis=1)
    limit = np.where(num > 0, np.inf, np.where(num < 0, -np.inf, 0.0))  # no 0 * inf: a resample gaining 0 adds 0
    ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), limit)
    return float(gain.mean() / gap.mean()), _percentile(ratio, 2.5), _percentile(ratio, 97.5)


def _percentile(values: np.ndarray, q: float) -> float:
    """`np.percentile` (linear) of values that may hold infinities: a position with an infinite neighbour given
    any weight is that infinity (numpy's interpolation turns inf - inf into nan there)."""
    v = np.sort(values)
    pos = q / 100 * (len(v) - 1)
    i, t = int(np.floor(pos)), pos - np.floor(pos)
    a, b = v[i], v[min(i + 1, len(v) - 1)]
    if np.isfinite(a) and np.isfinite(b):
        return float(np.percentile(v, q))
    if t == 0 or a == b:
        return float(a)
    return float(a if np.isinf(a) and not np.isinf(b) else b if np.isinf(b) and not np.isinf(a) else np.nan)


