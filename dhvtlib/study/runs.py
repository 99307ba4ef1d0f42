"""The study's runs: the plan (grid, convergence and precision checks, in the order to train them), training it
(`run_study`, `python -m dhvtlib.study`) and what is left (`remaining`, `progress_line`)."""
from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Sequence

import pandas as pd

from ..data import dataset_info
from ..experiments import RunSpec, execute
from ..launch import LAUNCHERS
from ..models import create_model, matched_width
from ..paths import output_dir
from .design import (BATCH, CONVERGENCE_POINTS, CONVERGENCE_SIZES, DOUBLING_SIZES, GRID_SCALE, LABELS, MODELS,
                     PRECISION_CHECK, SIZES, VIT, budget, grid_scale, seeds_for, steps_per_epoch, variant)
from .stats import grid_checks, run_config, study_frame

__all__ = ["efficiency_runs", "convergence_runs", "precision_runs", "study_plan", "late", "study_order",
           "doubling_rule", "run_study", "remaining", "progress_line", "main"]


def _spec(model: str, n: int, *, experiment: str, fp32: bool = False, scale: int | None = None, cnn_width: int,
          dataset: str, num_classes: int, test_samples_per_class: int | None, seeds: Sequence[int],
          **recipe: Any) -> RunSpec:
    name, preset = MODELS[model]
    arch = {"width": cnn_width} if name.startswith("resnet") else dict(VIT)
    scale = grid_scale(n) if scale is None else scale
    b = budget(n, num_classes, BATCH, scale=scale)
    values = {"dataset": dataset, "samples_per_class": n, "batch_size": BATCH,
              "test_samples_per_class": test_samples_per_class, **b.recipe(), **recipe}
    tag = f"{model}/{n}pc/scale{scale}" + ("/fp32" if fp32 else "")
    v = variant(tag)
    return RunSpec(experiment, tag, f"{LABELS[model]}, {n}/class" + (f" ({v})" if v else ""), name,
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
    """Seed 0 at each size with twice the budget (variant 'x2'); none at a size whose grid a failed check already
    doubled (`GRID_SCALE_AT`: one doubling, not checked again)."""
    _check_args(sizes, models)
    k, width = _context(dataset, data_dir, models, cnn_width)
    return [_spec(m, n, experiment=experiment, scale=2 * GRID_SCALE, cnn_width=width, dataset=dataset,
                  num_classes=k, test_samples_per_class=test_samples_per_class, seeds=(0,))
            for n in sizes for m in models if grid_scale(n) == GRID_SCALE]


def precision_runs(*, dataset: str = "fashion_mnist", data_dir=None, cnn_width: int | None = None,
                   test_samples_per_class: int | None = 500, experiment: str = "efficiency/fmnist") -> list[RunSpec]:
    """`PRECISION_CHECK` in fp32 at seeds 0-2 (variant 'fp32'), beside the grid's runs in the precision
    `auto` picks."""
    model, n = PRECISION_CHECK
    k, width = _context(dataset, data_dir, [model], cnn_width)
    return [_spec(model, n, experiment=experiment, fp32=True, cnn_width=width, dataset=dataset, num_classes=k,
                  test_samples_per_class=test_samples_per_class, seeds=(0, 1, 2), precision="fp32")]


def study_plan(*, convergence: bool = True, precision: bool = True, **kwargs: Any) -> list[RunSpec]:
    """Every row of the study (`efficiency_runs(**kwargs)`, then the convergence and precision checks of the models
    and sizes asked for: a check at a size outside `samples_per_class` has no grid run to test), in the order to run
    them: `run_study` trains every row's first seed first (the grid's, then the 2x checks at 30 and 1000 per class:
    the latter decides the budget of 1000 per class's other seeds), then the other seeds, then the fp32 check
    (`late`)."""
    grid = efficiency_runs(**kwargs)
    common = {k: v for k, v in kwargs.items() if k not in ("seeds", "samples_per_class", "models")}
    models, sizes = list(kwargs.get("models", MODELS)), set(kwargs.get("samples_per_class", SIZES))
    checked = [n for n in CONVERGENCE_SIZES if n in sizes]  # a check tests the grid's budget at a size in the plan
    conv = convergence_runs(models, checked, **common) if convergence and checked else []
    prec = precision_runs(**common) if precision and PRECISION_CHECK[0] in models and PRECISION_CHECK[1] in sizes \
        else []
    return grid + conv + prec


# ------------------------------------------------------------------------------------------------ command line
def late(spec: RunSpec) -> bool:
    """The rows queued after every seed of the others (`study_order`): the fp32 check."""
    return variant(spec.tag).endswith("fp32")


def _size(spec: RunSpec) -> int:
    return int(spec.recipe["samples_per_class"])


def _completed(runs: pd.DataFrame) -> set[tuple[str, int]]:
    """(tag, seed) of the completed runs in a manifests frame."""
    if not len(runs):
        return set()
    ok = runs[runs["status"].eq("completed")]
    return set(zip(ok["tag"].astype(str), ok["seed"].astype(int)))


def doubling_rule(specs: Sequence[RunSpec], runs: pd.DataFrame) -> tuple[list[RunSpec], list[str], str | None]:
    """The README's rule at `DOUBLING_SIZES`, read from the completed runs `runs`: (the specs to train now, the grid
    rows held back, the change the rule asks for or None). While a 2x check planned at such a size has not
    completed, that size's grid trains its first seed only (the checks decide the other seeds' budget); a check
    there that failed while the size's grid is still at `GRID_SCALE` asks for `GRID_SCALE_AT` to be set."""
    c = grid_checks(study_frame(runs))
    failed = c[~c["accepted"] & c["samples_per_class"].isin(DOUBLING_SIZES)] if len(c) else c
    due = None
    for n, g in (failed.groupby("samples_per_class") if len(failed) else ()):
        if grid_scale(int(n)) == GRID_SCALE:
            moves = ", ".join(f"{r.model} {r.change:+.2f}" for r in g.itertuples())
            due = (f"the 2x check at {n} per class moved by {CONVERGENCE_POINTS:g} point or more ({moves}): by the "
                   "README's rule every model's grid there moves to the check's budget; set GRID_SCALE_AT = "
                   f"{{{n}: {2 * GRID_SCALE}}} in dhvtlib/study/design.py and run again.")
    done = _completed(runs)
    waiting = {_size(s) for s in specs if variant(s.tag) == "x2" and _size(s) in DOUBLING_SIZES
               and (s.tag, 0) not in done}
    out, held = [], []
    for s in specs:
        if _size(s) in waiting and variant(s.tag) == "" and s.seeds and len(s.seeds) > 1:
            s, held = dataclasses.replace(s, seeds=s.seeds[:1]), held + [s.tag]
        out.append(s)
    return out, held, due


def run_study(specs: Sequence[RunSpec], results_root, *, train: bool = True, launcher: str = "local",
              workers: int = 2, threads: int = 1, wait: bool = True, data_dir=None, device: str = "cpu",
              **overrides: Any) -> pd.DataFrame:
    """Every run of `specs` (a `study_plan`): completed ones reused (also from the committed store), the others
    trained (`train`) with `launcher` ('local': `workers` processes of `threads` threads sharing one queue;
    'inline'): every row's first seed first, the `late` rows last, under `doubling_rule` (training refuses while
    the rule asks for a change). Returns the manifests (`attrs`: "missing", the runs not trained; "held_back", the
    rows whose later seeds wait for a convergence check; "rule_due", the change the rule asks for, or None)."""
    options = dict(launcher=launcher, workers=workers, threads=threads, wait=wait, data_dir=data_dir, device=device,
                   **overrides)
    known = _execute(specs, results_root, train=False, **options)
    now, held, due = doubling_rule(specs, known)
    if train and due:
        raise ValueError(due)
    frame = _execute(now, results_root, train=True, **options) if train else known
    frame.attrs.update(held_back=held, rule_due=due)
    return frame


def _execute(specs: Sequence[RunSpec], results_root, *, train: bool, launcher: str, workers: int, threads: int,
             wait: bool, data_dir, device: str, **overrides: Any) -> pd.DataFrame:
    """The runs of `specs` in one queue (`study_order`), trained or (not `train`) only read."""
    return execute(specs, (0,), results_root=results_root, data_dir=data_dir, device=device, launcher=launcher,
                   wait=wait, order=study_order, progress=False, plan_only=not train,
                   launch_options={"workers": workers, "threads": threads} if launcher != "inline" else None,
                   **overrides)


def study_order(spec: RunSpec, seed: int) -> tuple[bool, int]:
    """A run's place in the study's queue: every row's first seed before any row's second, the `late` rows after
    every seed of the others (one queue: a worker free while the last of the others trains starts a late run)."""
    return late(spec), (spec.seeds or (0,)).index(seed)


def remaining(runs: pd.DataFrame, specs: Sequence[RunSpec], num_classes: int = 10) -> dict[str, float]:
    """What is left of the plan: runs, optimizer updates and core-hours at the seconds per update measured in the
    completed runs of each model (one thread each: CPU seconds where recorded, else wall seconds; the median over
    the model's runs, else over all runs)."""
    done_keys = _completed(runs)
    f = study_frame(runs)
    per_update = (f["cpu_s"].fillna(f["wall_s"]) / f["steps"]).groupby(f["model"]).median() if len(f) else \
        pd.Series(dtype=float)
    fallback = float(per_update.median()) if len(per_update) else math.nan
    out = {"runs": 0, "done": 0, "updates": 0, "core_hours": 0.0}
    for s in specs:
        r = s.recipe
        steps = r["epochs"] * steps_per_epoch(r["samples_per_class"], num_classes, r["batch_size"])
        for seed in s.seeds or (0,):
            out["runs"] += 1
            if (s.tag, seed) in done_keys:
                out["done"] += 1
                continue
            out["updates"] += steps
            out["core_hours"] += steps * float(per_update.get(s.tag.split("/")[0], fallback)) / 3600
    return out


def _started(runs: pd.DataFrame, specs: Sequence[RunSpec]) -> list[str]:
    """'<tag> s<seed> (epoch e/E)' for the planned runs with a record that are not completed (interrupted, or
    running: a run killed outright still says running)."""
    if not len(runs):
        return []
    planned = {s.tag for s in specs}
    rows = runs[~runs["status"].eq("completed") & runs["tag"].isin(planned)]
    out = []
    for r in rows.to_dict("records"):
        epochs = run_config(r).get("epochs")
        done = r["epochs_run"] if pd.notna(r.get("epochs_run")) else None
        at = f"epoch {int(done)}/{epochs}" if done is not None else str(r["status"])
        out.append(f"{r['tag']} s{int(r['seed'])} ({at})")
    return out


def progress_line(runs: pd.DataFrame, specs: Sequence[RunSpec], num_classes: int = 10) -> str:
    """'87 runs in the plan: 12 completed, 75 not yet (...)' (with what is left and how to train it)."""
    r = remaining(runs, specs, num_classes)
    left = r["runs"] - r["done"]
    line = f"{r['runs']} runs in the plan: {r['done']} completed, {left} not yet"
    if not left:
        return line
    hours = f", about {r['core_hours']:.0f} core-hours at the measured seconds per update" \
        if math.isfinite(r["core_hours"]) else ""
    line += f" ({r['updates']:,} updates{hours}; python -m dhvtlib.study trains them, or train=True in notebook 07)"
    started = _started(runs, specs)
    if started:
        line += f"; started, not completed (each resumes from its checkpoint where it ran): {', '.join(started)}"
    held, due = runs.attrs.get("held_back"), runs.attrs.get("rule_due")
    if held:
        line += (f"; the later seeds of {', '.join(held)} wait for the 2x checks at their size (they decide those "
                 "seeds' budget): run again once the checks have completed")
    return line + (f"; {due}" if due else "")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m dhvtlib.study", description="The title claim, tested: does a plain ViT fall further behind a CNN as data shrinks, and does DHVT close the gap?")
    ap.add_argument("--output-dir", default=None, help="results tree (default: dhvtlib.paths.output_dir())")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--launcher", default="local", choices=[x for x in LAUNCHERS if x != "slurm"])  # this machine's
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    ap.add_argument("--status", action="store_true", help="print what is done and what is left; train nothing")
    args = ap.parse_args(argv)
    try:
        specs = study_plan(models=args.models, samples_per_class=args.sizes, data_dir=args.data_dir)
        runs = run_study(specs, output_dir(args.output_dir), train=not args.status, workers=args.workers,
                         threads=args.threads, launcher=args.launcher, data_dir=args.data_dir)
        print(progress_line(runs, specs))
    except ValueError as e:
        raise SystemExit(f"python -m dhvtlib.study: {e}") from None

