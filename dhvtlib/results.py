"""Results: load run directories, aggregate seeds, compare with the paper, write tables (CSV, Markdown, LaTeX).

Everything here reads what `dhvtlib.run.run` left on disk (manifest.json, metrics.jsonl; see docs/interfaces.md)
and never trains. How the tables read (Markdown, LaTeX, captions, notebook display) is `dhvtlib.table_display`,
whose public names are importable from here too. The figures of these frames are in `dhvtlib.viz` (viz/figures.py);
`dhvtlib.report.make_figures` (CLI: `python -m dhvtlib.report figures [--root results]`, run by `make figures`)
regenerates every table and figure under results/ from the stored runs.

Conventions: experiments are named by the manifest's `experiment`, rows by its `tag`; a tag that is a key of
`dhvtlib.models.ablations.ABLATIONS` (e.g. 'table5/sope'), or any 'table/row[/setting]' of dhvtlib/paper/reported.csv,
gets its paper number automatically. Accuracies are percentages. Files are written atomically (temp file + rename).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .files import atomic_write, write_text
from .models.ablations import ABLATIONS
from .paper import paper_spread, paper_statistic, reported, reported_value
from .paths import resolve
from .table_display import (DATASET_NAMES, CaptionedTable, captioned, display_epochs, drop_empty_columns, is_missing,
                            join_values, runs_summary, table_caption, to_latex, to_markdown)

__all__ = ["RUN_COLUMNS", "PAPER_SOURCE", "load_runs", "load_metrics", "aggregate", "paper_lookup",
           "paper_vs_reproduced", "ablation_paper_frame", "provenance", "write_table", "export_paper_tables",
           # how the tables read, from dhvtlib.table_display (importable from here as before)
           "to_markdown", "table_caption", "drop_empty_columns", "to_latex", "CaptionedTable", "captioned",
           "runs_summary", "display_epochs", "DATASET_NAMES"]

RUN_COLUMNS = ("run_id", "experiment", "tag", "model", "dataset", "seed", "preset", "samples_per_class", "best_top1",
               "final_top1", "best_epoch", "epochs_run", "wall_s", "cpu_s", "status", "git_commit", "run_dir")
JSON_COLUMNS = ("config", "model_kwargs")  # kept whole, as JSON strings; other nested dicts become dotted columns
PAPER_SOURCE = "paper (arXiv v2), reported"
COMPARISON_COLUMNS = ("tag", "label", "paper_top1", "paper_statistic", "ours_statistic", "ours_mean", "ours_std",
                      "n_seeds", "ours_best_of_n", "ours_final_mean", "delta", "paper_delta_vs_baseline",
                      "ours_delta_vs_baseline", "seeds", "note")  # of `paper_vs_reproduced`, in this order


# ---------------------------------------------------------------------------------------------------------------
# Loading runs
# ---------------------------------------------------------------------------------------------------------------
def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if not prefix and k in JSON_COLUMNS:
            out[k] = json.dumps(v, sort_keys=True)
        elif isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, (list, tuple)):
            out[f"{prefix}{k}"] = json.dumps(v)
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_runs(root: str | os.PathLike) -> pd.DataFrame:
    """One row per run: every manifest.json under `root` (recursively), scalar keys as columns, nested dicts as
    dotted columns (`versions.torch`), config/model_kwargs as JSON strings, plus `run_dir` and `completed`
    (status == 'completed'; other runs are kept). Unreadable manifests are skipped with a warning."""
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("manifest.json")):
        try:
            manifest = json.loads(path.read_text())
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            warnings.warn(f"skipping unreadable run manifest {path}: {e}", stacklevel=2)
            continue
        row = _flatten(manifest)
        row["run_dir"] = str(path.parent)
        if row.get("experiment") is None:  # fall back on the folder under root
            row["experiment"] = path.relative_to(root).parts[0] if path.parent != root else root.name
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in RUN_COLUMNS:
        if col not in frame:
            frame[col] = pd.Series(dtype="object")
    frame["completed"] = frame["status"].eq("completed")
    return frame[[*RUN_COLUMNS, "completed", *(c for c in frame.columns if c not in RUN_COLUMNS and c != "completed")]]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:  # an interrupted run may leave a truncated last line
                warnings.warn(f"{path}:{i + 1}: skipping an unreadable metrics line", stacklevel=3)
    return rows


def load_metrics(runs: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """Per-epoch metrics (metrics.jsonl rows) with run_id, experiment, tag and seed columns, for curves.
    `runs`: a frame from `load_runs`, one run directory, or a root holding several runs. A relative run_dir that
    does not exist from the working directory is looked up under the project root (dhvtlib.paths)."""
    if not isinstance(runs, pd.DataFrame):
        path = Path(runs)
        if (path / "metrics.jsonl").exists() and not (path / "manifest.json").exists():
            runs = pd.DataFrame({"run_dir": [str(path)], "run_id": [path.name]})  # a run without its manifest
        else:
            runs = load_runs(path)
    frames = []
    for run in runs.to_dict("records"):
        path = Path(run["run_dir"]) / "metrics.jsonl"
        if not path.exists():  # a manifest's relative `output`: relative to the project root, not to this cwd
            path = resolve(path)
        if not path.exists():
            continue
        df = pd.DataFrame(_read_jsonl(path))
        for col in ("seed", "tag", "experiment", "run_id"):  # inserted in front: run_id, experiment, tag, seed
            df.insert(0, col, run.get(col))
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["run_id", "experiment", "tag", "seed", "epoch"])


# ---------------------------------------------------------------------------------------------------------------
# Aggregating seeds and comparing with the paper
# ---------------------------------------------------------------------------------------------------------------
def _stats(values: pd.Series, prefix: str = "") -> dict[str, float]:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return {f"{prefix}mean": v.mean(), f"{prefix}std": v.std(ddof=1) if len(v) > 1 else math.nan,
            f"{prefix}min": v.min(), f"{prefix}max": v.max(), f"{prefix}best_of_n": v.max()}


def aggregate(frame: pd.DataFrame, by: str | Iterable[str] = ("tag",), metric: str = "best_top1",
              completed_only: bool = True) -> pd.DataFrame:
    """Seed statistics per group: n_seeds, mean, std (sample, ddof=1; NaN for one seed), min, max, best_of_n
    (the paper's "best of N runs") of `metric`, the same for final_top1 prefixed `final_` (best epoch vs last
    epoch), the seeds, and the groups' dataset/preset/model/git_commit values. Only completed runs count unless
    `completed_only=False`; a seed run twice in a group counts once (the run that ended last)."""
    by = [by] if isinstance(by, str) else list(by)
    if completed_only:
        frame = frame[frame["status"].eq("completed")]
    order = "ended" if "ended" in frame else "run_dir"
    frame = frame.sort_values(order, kind="stable", na_position="first")
    dup = frame.duplicated([*by, "seed"], keep="last")
    if dup.any():
        warnings.warn(f"{int(dup.sum())} run(s) repeat a seed of their group; keeping the last to end: "
                      f"{', '.join(frame.loc[dup, 'run_dir'].astype(str))}", stacklevel=2)
        frame = frame[~dup]
    rows = []
    for key, g in frame.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "n_seeds": len(g), **_stats(g[metric]),
                     **({} if metric == "final_top1" else _stats(g["final_top1"], "final_")),
                     "seeds": join_values(g["seed"]),
                     **{c: join_values(g[c]) for c in ("dataset", "preset", "model", "git_commit") if c not in by}})
    return pd.DataFrame(rows, columns=None if rows else [*by, "n_seeds", "mean", "std", "min", "max", "best_of_n"])


def paper_lookup(tag: str) -> tuple[float, str] | None:
    """(paper top-1, label) for a tag that names a paper row: an ABLATIONS key ('table5/sope') or any
    'table/row[/setting]' of reported.csv ('table4/dhvt_tiny_cifar_patch4', 'table13/dhvt_tiny_domain_patch16/
    clipart'); None otherwise."""
    if tag in ABLATIONS:
        return ABLATIONS[tag].paper_top1, ABLATIONS[tag].label
    parts = str(tag).split("/")
    if len(parts) not in (2, 3):
        return None
    try:
        value = reported_value(parts[0], parts[1], setting=parts[2] if len(parts) == 3 else None)
    except KeyError:
        return None
    label = next(r["label"] for r in reported(parts[0]) if r["row"] == parts[1])
    return value, label if len(parts) == 2 else f"{label} ({parts[2]})"


def _paper_numbers(paper: pd.DataFrame | Mapping[str, float | str] | None, tags: Iterable[str]
                   ) -> tuple[dict[str, float], dict[str, str]]:
    """Paper top-1 and labels by tag. Mapping values: a number, or a paper key 'table/row[/setting]'."""
    values: dict[str, float] = {}
    labels: dict[str, str] = {}
    if isinstance(paper, pd.DataFrame):
        values = dict(zip(paper["tag"], paper["paper_top1"].astype(float)))
        if "label" in paper:
            labels = dict(zip(paper["tag"], paper["label"]))
        return values, labels
    items = paper.items() if paper is not None else ((t, t) for t in tags)
    for tag, ref in items:
        if isinstance(ref, str):
            hit = paper_lookup(ref)
            if hit is None:
                if paper is not None:
                    raise KeyError(f"{ref!r} names no paper row; use 'table/row[/setting]' from "
                                   f"dhvtlib/paper/reported.csv or an ABLATIONS key.")
                continue
            values[tag], labels[tag] = hit
        else:
            values[tag] = float(ref)
    return values, labels


def paper_vs_reproduced(agg: pd.DataFrame, paper: pd.DataFrame | Mapping[str, float | str] | None = None,
                        baseline: str | Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
                        notes: str | Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per tag of `agg` (from `aggregate`): the paper's number next to ours.

    paper: a frame with tag, paper_top1 (and label) columns (see `ablation_paper_frame`), or a mapping
      tag -> number or tag -> paper key ('table5/sope', 'table11/bn_ln_bs256'); None looks each tag up itself
      (`paper_lookup`).
    baseline: the tag the *_delta_vs_baseline columns are relative to (e.g. 'table5/pe'), or a mapping
      tag -> its baseline tag when a frame holds several tables; the paper's baseline number comes from `paper`
      even if the baseline was not run.
    Columns: tag, label, paper_top1, paper_statistic, ours_statistic, ours_mean, ours_std, n_seeds, ours_best_of_n,
    ours_final_mean, delta, paper_delta_vs_baseline, ours_delta_vs_baseline, seeds, note.

    Like with like: `delta` is ours minus the paper in the paper's own statistic for that table
    (`dhvtlib.paper.paper_statistic`): our best-of-n seeds for Tables 4, 2 and 13 (the paper's "best out of
    five/four runs"), our seed mean elsewhere; `ours_statistic` says which, over the seeds that actually ran ('best
    of 2' against the paper's 'best of 5'). Each run's accuracy is its best epoch (the maximum of test top-1
    over epochs, as the official log's "Max accuracy"); ours_final_mean is the last epoch's, for comparison.
    An ablation row whose delta vs its baseline is smaller than the paper's own spread of one setting
    (`dhvtlib.paper.paper_spread`, 0.13) says so in its note.
    """
    tags = list(agg["tag"])
    paper_top1, paper_labels = _paper_numbers(paper, tags)
    baselines = {t: baseline for t in tags} if isinstance(baseline, str) else dict(baseline or {})
    for base in (baselines[t] for t in tags if t in baselines):
        if base not in paper_top1:  # the baseline's paper number, even if not run
            paper_top1.update(_paper_numbers(None, [base])[0])
    ours_means, spread = dict(zip(agg["tag"], agg["mean"])), paper_spread()
    rows = []
    for rec in agg.to_dict("records"):
        tag, base = rec["tag"], baselines.get(rec["tag"])
        row = _comparison_row(rec, base, paper_top1, ours_means)
        row["label"] = (labels or {}).get(tag) or paper_labels.get(tag) or tag
        row["note"] = _comparison_note(row, base, notes, spread)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _comparison_row(rec: Mapping[str, Any], base: str | None, paper_top1: Mapping[str, float],
                    ours_means: Mapping[str, float]) -> dict[str, Any]:
    """A row of `paper_vs_reproduced` but its label and note: the paper's number and ours in the paper's statistic
    for the row's table, and both deltas against the row's baseline tag `base` (NaN without one)."""
    tag = rec["tag"]
    paper_v = paper_top1.get(tag, math.nan)
    statistic, n_paper = paper_statistic(tag.split("/")[0])
    kind = "best" if statistic == "best_of_n" else "mean"
    paper_kind = f"{kind} of {n_paper}" if n_paper else "unstated (compared with our mean)"
    return {
        "tag": tag,
        "paper_top1": paper_v,
        "paper_statistic": "" if math.isnan(paper_v) else paper_kind,
        "ours_statistic": f"{kind} of {rec['n_seeds']}",
        "ours_mean": rec["mean"],
        "ours_std": rec["std"],
        "n_seeds": rec["n_seeds"],
        "ours_best_of_n": rec["best_of_n"],
        "ours_final_mean": rec.get("final_mean", rec["mean"]),
        "delta": (rec["best_of_n"] if statistic == "best_of_n" else rec["mean"]) - paper_v,
        "paper_delta_vs_baseline": paper_v - paper_top1.get(base, math.nan) if base else math.nan,
        "ours_delta_vs_baseline": rec["mean"] - ours_means.get(base, math.nan) if base else math.nan,
        "seeds": rec.get("seeds", ""),
    }


def _comparison_note(row: Mapping[str, Any], base: str | None, notes: str | Mapping[str, str] | None,
                     spread: float) -> str:
    """A row's note: the caller's `notes`, 'baseline', 'not in the paper', 'one seed', and, for an ablation row,
    each of its deltas vs the baseline that is smaller than the paper's own spread of one setting."""
    tag = row["tag"]
    note = [notes] if isinstance(notes, str) else [notes[tag]] if notes and tag in notes else []
    note += ["baseline"] if base == tag else []
    note += ["not in the paper"] if math.isnan(row["paper_top1"]) else []
    note += ["one seed"] if row["n_seeds"] == 1 else []
    if base != tag and tag in ABLATIONS:
        deltas = (("paper", row["paper_delta_vs_baseline"]), ("our", row["ours_delta_vs_baseline"]))
        note += [f"{who} delta within the paper's spread ({spread:.2f})" for who, d in deltas if abs(d) < spread]
    return "; ".join(note)


def ablation_paper_frame(table: str) -> pd.DataFrame:
    """tag, label, paper_top1 for the rows of one ablation table ('table5', ..., 'affine'), in the paper's order."""
    rows = [dict(tag=key, label=r.label, paper_top1=r.paper_top1) for key, r in ABLATIONS.items() if r.table == table]
    if not rows:
        raise ValueError(f"no ablation rows for table {table!r}; see dhvtlib.models.ablations.ABLATION_TABLES.")
    return pd.DataFrame(rows)


def _ablation_baselines(tags: Iterable[str]) -> dict[str, str]:
    """Each ablation tag -> the first row of its table (Table 5's DeiT-T, Table 9's DHVT-T, ...). When that row was
    not run but another run row is the same model (e.g. table5/pe for table6/pe, both DeiT-T), that row is used."""
    tags = list(tags)
    first: dict[str, str] = {}
    for key, r in ABLATIONS.items():
        first.setdefault(r.table, key)

    def same_model(a: str, b: str) -> bool:
        ra, rb = ABLATIONS[a], ABLATIONS[b]
        return (ra.base, ra.model_kwargs, ra.recipe) == (rb.base, rb.model_kwargs, rb.recipe)

    out = {}
    for t in (t for t in tags if t in ABLATIONS):
        base = first[ABLATIONS[t].table]
        if base not in tags:
            base = next((u for u in tags if u in ABLATIONS and same_model(u, base)), base)
        out[t] = base
    return out


# ---------------------------------------------------------------------------------------------------------------
# Writing tables
# ---------------------------------------------------------------------------------------------------------------
def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Write text through `write(file)` atomically (files.atomic_write: temp file, fsync, rename), for the CSVs."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        write(f)
    return Path(path)


def provenance(runs: pd.DataFrame) -> dict[str, str]:
    """What a table was computed from: the runs' git commits and hardware (of every session of a resumed run,
    where its manifest records them), datasets, presets, seeds and run count."""
    sessions = [s for v in runs.get("sessions", ()) if isinstance(v, str) for s in json.loads(v)]
    commits = join_values([*runs["git_commit"], *(s.get("git_commit") for s in sessions)])
    dirty = [*runs.get("git_dirty", ()), *(s.get("git_dirty") for s in sessions)]
    if any(not is_missing(d) and bool(d) for d in dirty):
        commits += " (some runs from a dirty tree)"
    hardware = join_values([*runs.get("hardware.cpu", ()), *runs.get("hardware.cuda_device", ()),
                            *((s.get("hardware") or {}).get(k) for s in sessions for k in ("cpu", "cuda_device"))])
    return {"git commits": commits or "unknown", "hardware": hardware, "dataset": join_values(runs["dataset"]),
            "preset": join_values(runs["preset"]), "seeds": join_values(runs["seed"]), "runs": str(len(runs))}


def write_table(df: pd.DataFrame, path_stem: str | os.PathLike, title: str | None = None, float_fmt: str = ".2f",
                provenance: Mapping[str, Any] | None = None, caption: str | None = None) -> list[Path]:
    """Write `<stem>.csv` (every column, full precision) and `<stem>.md` (title, table, provenance footer),
    atomically. With a `caption` (see `table_caption`) the Markdown carries it as a line under the title, hides
    the columns that are empty in `df`, and `<stem>.tex` (LaTeX, booktabs) is written beside them."""
    stem = Path(path_stem)
    prov = "; ".join(f"{k}: {v}" for k, v in (provenance or {}).items() if not is_missing(v) and v != "")
    shown = df if caption is None else drop_empty_columns(df)
    md = (f"## {title}\n\n" if title else "") + (f"_{caption}_\n\n" if caption else "") + \
        to_markdown(shown, float_fmt) + f"\n\n_Provenance: {prov or 'not recorded'}._\n"
    written = [_atomic_write(stem.with_name(stem.name + ".csv"), lambda f: df.to_csv(f, index=False)),
               write_text(stem.with_name(stem.name + ".md"), md)]
    if caption is not None:
        written.append(write_text(stem.with_name(stem.name + ".tex"),
                                  to_latex(shown, caption, label=f"tab:{stem.parent.name}", float_fmt=float_fmt)))
    return written


def export_paper_tables(out_dir: str | os.PathLike = "results/paper") -> list[Path]:
    """Every table of dhvtlib/paper/reported.csv as `<out_dir>/<table>.csv`, plus `all.csv`, values as printed
    and a `source` column saying they are the paper's reported numbers (never ours)."""
    out_dir = Path(out_dir)
    frame = pd.DataFrame(reported(), dtype=str).assign(source=PAPER_SOURCE)
    written = [_atomic_write(out_dir / f"{table}.csv", lambda f, g=g: g.to_csv(f, index=False))
               for table, g in frame.groupby("table", sort=False)]
    return written + [_atomic_write(out_dir / "all.csv", lambda f: frame.to_csv(f, index=False))]
