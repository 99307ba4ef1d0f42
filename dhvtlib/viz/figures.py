"""Figures of the results: the plotting style and palette, training curves, paper vs reproduced, the data-efficiency
study's panels, saving (PNG + PDF, atomically, without dates) and the captions of the figures in results/report.md.

The frames plotted here come from `dhvtlib.results` (runs, metrics, `paper_vs_reproduced`, `efficiency_frame`);
`dhvtlib.report` writes them beside the tables.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..files import atomic_write
from ..results import PAPER_SOURCE, display_epochs, efficiency_frame, efficiency_gaps

__all__ = ["PALETTE", "set_style", "save_figure", "plot_curves", "plot_paper_vs_ours", "plot_efficiency",
           "figure_caption", "plain_text"]

PALETTE = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
           "#56b4e9")  # seaborn 'colorblind', fixed here so every figure uses the same colours in the same order


def plain_text(text: object) -> str:
    """`text` shown as written in a label: a '$' in a tag or name is not read as matplotlib mathtext."""
    return str(text).replace("$", r"\$")


def set_style() -> None:
    """The one plotting style of the project: seaborn 'whitegrid' with the fixed PALETTE."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", palette=list(PALETTE), rc={"figure.dpi": 100, "savefig.bbox": "tight"})


def save_figure(fig, path_stem: str | os.PathLike) -> list[Path]:
    """Save `fig` as `<stem>.png` (dpi 150) and `<stem>.pdf`, atomically; returns the two paths."""
    stem = Path(path_stem)
    written = []
    for fmt, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_write(path) as f:
            fig.savefig(f, format=fmt, dpi=150, bbox_inches="tight", metadata=meta)
        written.append(path)
    return written


def plot_curves(metrics: pd.DataFrame, hue: str = "tag", metric: str = "top1", ax=None):
    """`metric` against epoch (1-based: the first epoch is 1), one line per `hue` value: mean over seeds with a
    +-1 std band. The legend sits outside the axes, right of them, so it never covers a curve."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    set_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4))
    metrics = display_epochs(metrics)  # stored epochs are 0-based; curves count from 1 like the training log
    metrics = metrics.assign(**{hue: metrics[hue].map(plain_text)})  # names shown as written, not as mathtext
    sns.lineplot(data=metrics, x="epoch", y=metric, hue=hue, estimator="mean", errorbar="sd", ax=ax)
    ax.set(xlabel="epoch", ylabel=f"{metric} (%)" if "top" in metric else metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small", title=hue, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return ax.figure


def plot_paper_vs_ours(table: pd.DataFrame, ax=None, title: str | None = None):
    """Dot plot of a `paper_vs_reproduced` frame: the paper's number (diamond) and our mean +- std per row."""
    import matplotlib.pyplot as plt

    set_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.2))
    y = range(len(table))[::-1]
    ax.scatter(table["paper_top1"], y, marker="D", color=PALETTE[1], label=PAPER_SOURCE, zorder=3)
    ax.errorbar(table["ours_mean"], y, xerr=table["ours_std"].fillna(0), fmt="o", color=PALETTE[0], capsize=3,
                label="ours, mean $\\pm$ std over seeds", zorder=3)
    ax.set_yticks(list(y), [plain_text(v) for v in table["label"]])
    ax.set_xlabel("top-1 (%)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small", loc="best")
    return ax.figure

def plot_efficiency(runs: pd.DataFrame, labels: Mapping[str, str] | None = None, metric: str = "final_top1",
                    vit: str = "deit", hybrid: str = "dhvt", cnn: str = "resnet", title: str | None = None):
    """Two panels: top-1 vs training images per class (log x), one line per model, mean +- std band over seeds;
    and the ViT-to-CNN gap beside the part of it the hybrid closes (paired by seed, mean +- std)."""
    import matplotlib.pyplot as plt

    set_style()
    labels = dict(labels or {})
    f = efficiency_frame(runs, metric)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(f["model"].unique()))}
    for model, g in f.groupby("model", sort=True):
        s = g.groupby("samples_per_class")["top1"].agg(["mean", "std"]).fillna({"std": 0.0})
        ax.plot(s.index, s["mean"], "o-", color=colours[model], label=labels.get(model, model))
        ax.fill_between(s.index, s["mean"] - s["std"], s["mean"] + s["std"], color=colours[model], alpha=0.2,
                        linewidth=0)
    ax.set(xscale="log", xlabel="training images per class (log)", ylabel="test top-1 (%)",
           title="top-1 vs data (mean $\\pm$ std over seeds)")
    ax.legend(fontsize="small")
    gaps = efficiency_gaps(runs, vit, hybrid, cnn, metric)
    if not gaps.empty:
        x = gaps["samples_per_class"]
        for col, name, colour in (("gap", f"{labels.get(cnn, cnn)} $-$ {labels.get(vit, vit)} (the gap)", PALETTE[3]),
                                  ("gain", f"{labels.get(hybrid, hybrid)} $-$ {labels.get(vit, vit)} (closed)",
                                   colours.get(hybrid, PALETTE[1]))):
            m, sd = gaps[f"{col}_mean"], gaps[f"{col}_std"].fillna(0.0)
            ax2.plot(x, m, "o-", color=colour, label=name)
            ax2.fill_between(x, m - sd, m + sd, color=colour, alpha=0.2, linewidth=0)
        for xi, yi, pct in zip(x, gaps["gain_mean"], gaps["closed_pct"]):
            if pd.notna(pct):
                ax2.annotate(f"{pct:.0f}%", (xi, yi), textcoords="offset points", xytext=(0, -14), ha="center",
                             fontsize="small", color=colours.get(hybrid, PALETTE[1]))
        ax2.axhline(0, color="0.5", linewidth=0.8)
        ax2.legend(fontsize="small")
    ax2.set(xscale="log", xlabel="training images per class (log)", ylabel="top-1 difference (points)",
            title=f"the {labels.get(vit, vit)}-to-CNN gap, and the share {labels.get(hybrid, hybrid)} closes")
    sizes = sorted(f["samples_per_class"].unique())
    for a in (ax, ax2):  # ticks at the sizes run, written plainly
        a.set_xticks(sizes, [str(n) for n in sizes])
        a.minorticks_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


_FIGURE_CAPTIONS = (("_paper_vs_ours", "paper (reported) vs reproduced top-1, our mean ± std over seeds"),
                    ("_curves", "test top-1 per epoch (epochs counted from 1), mean ± std over seeds"),
                    ("_head_tokens", "head-token attention over the patches (last block)"))


def figure_caption(stem: str) -> str:
    """The caption of figure `<stem>.png` in results/report.md, from its name ('quick_curves' -> 'quick: test top-1
    per epoch ...')."""
    for suffix, text in _FIGURE_CAPTIONS:
        if stem.endswith(suffix):
            return f"{stem.removesuffix(suffix)}: {text}"
    return stem.replace("_", " ")
