"""How a results table reads: cells as text, Markdown and LaTeX renderings, captions, and what a notebook shows.

The tables themselves (runs, seed statistics, paper vs reproduced, the files written) are `dhvtlib.results`, which
renders them with this module and still exports the names that were its own before this module (`results.captioned`,
`results.to_markdown`, `results.runs_summary`, ...).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from html import escape
from typing import Any

import pandas as pd

__all__ = ["DATASET_NAMES", "table_caption", "drop_empty_columns", "to_markdown", "to_latex", "CaptionedTable",
           "captioned", "display_epochs", "runs_summary", "mean_std_table"]

DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
                 "imagenet": "ImageNet-1K", "imagefolder": "ImageFolder",
                 **{f"domainnet_{d}": f"DomainNet {d}" for d in ("clipart", "painting", "sketch", "infograph",
                                                                  "real", "quickdraw")}}


# ---------------------------------------------------------------------------------------------------------------
# Values as text
# ---------------------------------------------------------------------------------------------------------------
def is_missing(v: Any) -> bool:
    """None or NaN: an empty cell."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def _natural(s: str) -> tuple:
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


def join_values(values: Iterable[Any]) -> str:
    """The distinct values, naturally sorted, comma-joined; whole floats as integers (a column with a NaN is float:
    300.0 is written 300)."""
    def text(v: Any) -> str:
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    return ", ".join(sorted({text(v) for v in values if not is_missing(v)}, key=_natural))


def _is_empty(v: Any) -> bool:
    return is_missing(v) or (isinstance(v, str) and not v)


def _numeric_columns(df: pd.DataFrame) -> list[bool]:
    return [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df]


def drop_empty_columns(df: pd.DataFrame) -> pd.DataFrame:
    """`df` without the columns whose every value is missing or an empty string (for display)."""
    empty = [c for c in df if all(is_missing(v) or (isinstance(v, str) and not v.strip()) for v in df[c])]
    return df.drop(columns=empty)


# ---------------------------------------------------------------------------------------------------------------
# Markdown and LaTeX
# ---------------------------------------------------------------------------------------------------------------
def _markdown_cell(v: Any, float_fmt: str) -> str:
    if _is_empty(v):
        return ""
    text = format(v, float_fmt) if isinstance(v, float) else str(v)
    text = text.replace("<", "&lt;").replace(">", "&gt;")  # shown as text, never read as HTML
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, float_fmt: str = ".2f") -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned); pandas' own needs `tabulate`."""
    lines = ["| " + " | ".join(_markdown_cell(c, float_fmt) for c in df.columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in _numeric_columns(df)) + "|"]
    lines += ["| " + " | ".join(_markdown_cell(v, float_fmt) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: Any) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(df: pd.DataFrame, caption: str | None = None, label: str | None = None, float_fmt: str = ".2f") -> str:
    """A LaTeX table with booktabs rules (\\toprule, \\midrule, \\bottomrule; needs \\usepackage{booktabs}),
    numbers right-aligned, missing values empty, special characters escaped."""
    def cell(v: Any) -> str:
        return "" if _is_empty(v) else _tex(format(v, float_fmt) if isinstance(v, float) else v)

    lines = ["\\begin{table}[ht]", "\\centering"]
    lines += [f"\\caption{{{_tex(caption)}}}"] if caption else []
    lines += [f"\\label{{{_tex(label).replace(chr(92) + '_', '_')}}}"] if label else []
    lines += [f"\\begin{{tabular}}{{{''.join('r' if n else 'l' for n in _numeric_columns(df))}}}", "\\toprule",
              " & ".join(_tex(c) for c in df.columns) + " \\\\", "\\midrule"]
    lines += [" & ".join(cell(v) for v in row) + " \\\\" for row in df.itertuples(index=False)]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------------------------
def _budget(runs: pd.DataFrame) -> str:
    """'20 epochs, 300 images/class' from the runs' configs (values joined when runs differ)."""
    configs = [json.loads(c) for c in runs.get("config", pd.Series(dtype=object)).dropna() if isinstance(c, str)]
    epochs = join_values(c.get("epochs") for c in configs)
    per_class = join_values(runs["samples_per_class"]) if "samples_per_class" in runs else ""
    parts = [f"{epochs} epochs"] if epochs else []
    return ", ".join(parts + [f"{per_class} images/class" if per_class else "all training images"])


def table_caption(runs: pd.DataFrame, experiment: str) -> str:
    """The caption line of an experiment's table: experiment, data set, preset and budget, seeds, commit(s), e.g.
    'quick: Fashion-MNIST, preset quick (10 epochs, 100 images/class), seeds 0, commit c9aeb05'."""
    datasets = ", ".join(DATASET_NAMES.get(d, d) for d in join_values(runs["dataset"]).split(", ") if d)
    commits = ", ".join(c[:7] for c in join_values(runs["git_commit"]).split(", ") if c) or "unknown"
    dirty = " (dirty tree)" if "git_dirty" in runs and runs["git_dirty"].fillna(False).astype(bool).any() else ""
    n_commits = len(commits.split(", "))
    return (f"{experiment}: {datasets or 'unknown data'}, preset {join_values(runs['preset']) or 'unknown'} "
            f"({_budget(runs)}), seeds {join_values(runs['seed'])}, commit{'s' if n_commits > 1 else ''} "
            f"{commits}{dirty}")


# ---------------------------------------------------------------------------------------------------------------
# What a notebook shows
# ---------------------------------------------------------------------------------------------------------------
class CaptionedTable:
    """A table as a notebook shows it: the caption line above, empty columns hidden, cells on one line each (no
    word-per-line wrapping of the note column). `repr` gives the same as text."""

    def __init__(self, table: pd.DataFrame, caption: str | None = None, float_fmt: str = ".2f"):
        shown = drop_empty_columns(table)
        if {"tag", "label"} <= set(shown) and shown["label"].astype(str).equals(shown["tag"].astype(str)):
            shown = shown.drop(columns="label")  # a label that only repeats the tag says nothing
        elif {"tag", "label"} <= set(shown):
            shown = shown.drop(columns="tag")  # the label names the row; the CSV keeps both
        # what the caption or another column already says (the CSV keeps every column)
        shown = shown.drop(columns=[c for c in ("seeds", "n_seeds") if c in shown and "ours_statistic" in shown])
        self.table, self.float_fmt = shown, float_fmt
        self.caption = caption if caption is not None else table.attrs.get("caption", "")

    def _repr_html_(self) -> str:
        body = self.table.to_html(index=False, na_rep="", float_format=lambda v: format(v, self.float_fmt),
                                  border=0, classes="dhvtlib-table")
        return (f"<div><p><b>{escape(self.caption)}</b></p><style>.dhvtlib-table td, .dhvtlib-table th "
                f"{{white-space: nowrap;}}</style>{body}</div>")

    def _repr_markdown_(self) -> str:
        return (f"**{self.caption}**\n\n" if self.caption else "") + to_markdown(self.table, self.float_fmt)

    def __repr__(self) -> str:
        text = self.table.to_string(index=False, na_rep="", float_format=lambda v: format(v, self.float_fmt))
        return f"{self.caption}\n{text}" if self.caption else text


def captioned(table: pd.DataFrame, caption: str | None = None) -> CaptionedTable:
    """`table` for display with its caption (default: `table.attrs['caption']`, set by `report.report_experiment`)."""
    return CaptionedTable(table, caption)


def mean_std_table(table: pd.DataFrame) -> pd.DataFrame:
    """A paper-vs-reproduced table (`results.paper_vs_reproduced`) as it reads for data the paper has no number for
    (06_your_data): tag, top-1 as 'mean ± std' over seeds (the mean alone for one seed), n_seeds, ours_best_of_n."""
    top1 = [f"{m:.2f} ± {s:.2f}" if not math.isnan(s) else f"{m:.2f}"
            for m, s in zip(table["ours_mean"], table["ours_std"])]
    return pd.DataFrame({"tag": table["tag"], "top-1 (mean ± std)": top1, "n_seeds": table["n_seeds"],
                         "ours_best_of_n": table["ours_best_of_n"]})


def display_epochs(frame: pd.DataFrame, columns: Iterable[str] = ("epoch", "best_epoch")) -> pd.DataFrame:
    """A copy with the stored 0-based epoch columns shown 1-based (epoch 1 is the first; 'best epoch 10' of a
    10-epoch run is its last), the one convention of every table, curve and log line."""
    frame = frame.copy()
    for c in columns:
        if c in frame:
            frame[c] = pd.to_numeric(frame[c], errors="coerce") + 1
            frame[c] = frame[c].astype("Int64")
    return frame


def runs_summary(runs: pd.DataFrame, columns: Iterable[str] = ("tag", "seed", "best_top1", "best_epoch",
                                                                "epochs_run", "final_top1", "wall_s")) -> pd.DataFrame:
    """The runs of `experiments.execute` for display: one row per run, `best_epoch` 1-based (of `epochs_run`)."""
    return display_epochs(runs[[c for c in columns if c in runs]]).reset_index(drop=True)
