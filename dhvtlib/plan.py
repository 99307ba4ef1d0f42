"""Which of a table's runs still need training (`plan_runs`, the first step of experiments.execute): a completed run
of the same recipe is reused, from the results root or else copied from the store of committed runs; a diverged run
is not retried; a completed run of another recipe (or without the weights asked for) is refused, every such run in
one sentence.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .files import write_json
from .recipe import PRESETS, Recipe, describe_diff, recipe_diff, resolve
from .run.rundir import read_manifest
from .runspec import RunSpec, run_dir

__all__ = ["plan_runs"]


def plan_runs(specs: list[RunSpec], seeds: Sequence[int], preset: str | None, results_root: str | Path,
              epochs: int | None, overrides: dict[str, Any], verbose: bool, *, store: str | Path | None = None,
              need_weights: bool = False):
    """([(spec, seed, run dir, preset, run kwargs)] still to train, {run dir: manifest} of the runs that are not):
    completed runs of the same recipe are reused (from `results_root`, else copied from `store`), diverged runs are
    not retried; completed runs of another recipe (or without the weights asked for) are refused, all in one
    sentence."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    extra_kwargs = overrides.pop("model_kwargs", {}) or {}
    todo, done, refused = [], {}, []
    for spec in specs:
        row_preset = _row_preset(spec, preset)
        for seed in spec.seeds or seeds:
            out = run_dir(results_root, spec, seed)
            kwargs = {**spec.recipe, **overrides, "model_kwargs": {**spec.model_kwargs, **extra_kwargs},
                      "model": spec.model, "seed": seed, **({"epochs": epochs} if epochs is not None else {})}
            previous = read_manifest(out)
            if not previous and store is not None:
                previous = _reuse(run_dir(store, spec, seed), out, resolve(row_preset, **kwargs), need_weights)
            if previous.get("status") == "completed":
                why = _not_reusable(previous, out, resolve(row_preset, **kwargs), need_weights)
                if why is not None:
                    refused.append((out, why))
                else:
                    done[str(out)] = previous
            elif previous.get("status") == "diverged":
                if verbose:
                    print(f"{spec.tag} seed {seed} diverged earlier and is not retried ({previous.get('error')}); "
                          f"see {out}", flush=True)
                done[str(out)] = previous
            else:
                todo.append((spec, seed, out, row_preset, kwargs))
    if refused:
        raise ValueError(_refusal(refused, Path(results_root), specs[0].experiment))
    return todo, done


def _row_preset(spec: RunSpec, preset: str | None) -> str | Recipe:
    """The preset a row runs with: execute's `preset`, else the row's own; an unknown name is one sentence."""
    row_preset = preset or spec.preset
    if row_preset is None:
        raise ValueError(f"row {spec.tag!r} names no preset; pass preset= (one of {', '.join(PRESETS)}).")
    if isinstance(row_preset, str) and row_preset not in PRESETS:
        raise ValueError(f"unknown preset {row_preset!r}; choose one of: {', '.join(PRESETS)}.")
    return row_preset


def _not_reusable(previous: dict[str, Any], out: Path, recipe: Recipe, need_weights: bool) -> str | None:
    """Why a completed run cannot serve this request (another recipe, or no weights when they are needed), or
    None when it can."""
    diff = recipe_diff(previous.get("config", {}), recipe)
    if diff:
        return describe_diff(diff)
    if need_weights and not (out / "model.safetensors").is_file():
        return "no model.safetensors"
    return None


def _refusal(refused: list[tuple[Path, str]], root: Path, experiment: str) -> str:
    """One sentence naming every completed run that cannot serve this request, and the ways out (the
    non-destructive ones first), in the notebooks' parameter names."""
    reasons = sorted({why for _, why in refused})
    names = ", ".join(str(out.relative_to(root)) if out.is_relative_to(root) else str(out) for out, _ in refused)
    why = reasons[0] if len(reasons) == 1 else "; ".join(reasons)
    return (f"{len(refused)} completed run(s) under {root} cannot be reused for this request ({why}): {names}; "
            f"to keep them, pass another experiment (e.g. experiment={experiment.replace('/', '_') + '_2'!r}) or "
            "output_dir, or delete those run folders to train them again.")


_RUN_FILES = ("config.json", "manifest.json", "metrics.jsonl", "metrics.csv", "model.safetensors")


def _reuse(src: Path, out: Path, recipe: Recipe, need_weights: bool) -> dict[str, Any]:
    """A completed run of `recipe` in the store, copied (records, and weights if present) into `out` as one rename;
    {} when there is none to reuse."""
    m = read_manifest(src)
    if m.get("status") != "completed" or recipe_diff(m.get("config", {}), recipe):
        return {}
    if need_weights and not (src / "model.safetensors").is_file():
        return {}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    for name in _RUN_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    m = {**m, "output": str(out), "reused_from": str(src)}
    write_json(tmp / "manifest.json", m)
    try:
        tmp.rename(out)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
        return read_manifest(out)
    return m
