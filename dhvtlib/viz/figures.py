"""Figures of the results: the plotting style and palette, training curves, paper vs reproduced, the data-efficiency
study's panels, saving (PNG + PDF, atomically, without dates) and the captions of the figures in results/report.md.

The frames plotted here come from `dhvtlib.results` (runs, metrics, `paper_vs_reproduced`) and `dhvtlib.study`
(the title-claim study's summary and verdicts); `dhvtlib.report` writes them beside the tables.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..files import atomic_write
from ..results import PAPER_SOURCE
from ..table_display import display_epochs

__all__ = ["PALETTE", "set_style", "save_figure", "plot_curves", "plot_paper_vs_ours", "plot_efficiency",
           "plot_loss_curves", "figure_caption", "plain_text"]

PALETTE = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
           "#56b4e9")  # seaborn 'colorblind', fixed here so every figure uses the same colours in the same order
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # one per model, after the colour: told apart in greyscale


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
    n = metrics[hue].nunique()
    sns.lineplot(data=metrics, x="epoch", y=metric, hue=hue, estimator="mean", errorbar="sd", ax=ax,
                 palette=[PALETTE[i % len(PALETTE)] for i in range(n)])  # distinct colours, the project's order
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


def plot_efficiency(summary: pd.DataFrame, per_size: pd.DataFrame, labels: Mapping[str, str] | None = None,
                    vit: str = "deit", hybrid: str = "dhvt", cnn: str = "resnet_sgd", title: str | None = None):
    """The title claim in two panels. Left: test top-1 against training images per class (log x), one line per
    model (`summary`: model, samples_per_class, top1_mean, ci_low, ci_high) with its 95% CI band. Right (`per_size`,
    from `study.verdicts`): the gap cnn - vit and hybrid - vit, paired by seed, with their CIs; the share of the
    gap the hybrid closes is written under each size (above 100%: the hybrid beats the CNN; in grey with a * where
    the gap's CI reaches 0, so the share divides by a gap that may be nothing). Each model has its own colour and
    marker (told apart in greyscale too). Legends sit below the panels, never on a curve."""
    import matplotlib.pyplot as plt

    set_style()
    labels = dict(labels or {})
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    models = list(dict.fromkeys(summary["model"])) if len(summary) else []
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}
    for model, g in summary.groupby("model", sort=False):
        g = g.sort_values("samples_per_class")
        ax.plot(g["samples_per_class"], g["top1_mean"], "-", marker=markers[model], color=colours[model],
                label=labels.get(model, model))
        ax.fill_between(g["samples_per_class"], g["ci_low"], g["ci_high"], color=colours[model], alpha=0.2,
                        linewidth=0)
    ax.set(xscale="log", xlabel="training images per class (log scale)", ylabel="test top-1 (%), last epoch",
           title="top-1 vs data (mean, 95% CI over seeds)")
    name = (lambda m: labels.get(m, m))
    shares: list[tuple[Any, float, bool]] = []  # (size, share, the gap's CI reaches 0)
    if len(per_size):
        x = per_size["samples_per_class"]
        for col, lo, hi, text, model in (
                ("gap", "gap_low", "gap_high", f"{name(cnn)} $-$ {name(vit)}: the gap", cnn),
                ("gain", "gain_low", "gain_high", f"{name(hybrid)} $-$ {name(vit)}: what {name(hybrid)} gains",
                 hybrid)):
            if col not in per_size:
                continue
            colour = colours.get(model, PALETTE[3 if model == cnn else 1])
            ax2.plot(x, per_size[col], "-", marker=markers.get(model, "o"), color=colour, label=text)
            ax2.fill_between(x, per_size[lo], per_size[hi], color=colour, alpha=0.2, linewidth=0)
        near_zero = per_size["gap_low"] <= 0 if "gap_low" in per_size else pd.Series(False, index=per_size.index)
        shares = [(xi, share, zero) for xi, share, zero in zip(x, per_size.get("share", []), near_zero)
                  if pd.notna(share)]
        if shares:  # headroom for the labels along the top
            low, high = ax2.get_ylim()
            ax2.set_ylim(low, high + 0.12 * (high - low))
        for xi, share, zero in shares:
            ax2.annotate(f"{100 * share:.0f}%" + ("*" if zero else ""), (xi, 1), xycoords=("data", "axes fraction"),
                         textcoords="offset points", xytext=(0, -12), ha="center",  # along the top, clear of lines
                         fontsize="small", color="0.5" if zero else colours.get(hybrid, PALETTE[1]))
        ax2.axhline(0, color="0.5", linewidth=0.8)
    ax2.set(xscale="log", xlabel="training images per class (log scale)", ylabel="top-1 difference (points)",
            title=f"the gap, and the share {name(hybrid)} closes (% along the top)"
            + ("\n(*: the gap's CI reaches 0; the share is not informative there)" if any(z for *_, z in shares)
               else ""))
    sizes = sorted(summary["samples_per_class"].unique()) if len(summary) else []
    for a in (ax, ax2):  # ticks at the sizes run, written plainly; legends under the axes
        if sizes:
            a.set_xticks(sizes, [str(n) for n in sizes])
        a.minorticks_off()
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_loss_curves(metrics: pd.DataFrame, labels: Mapping[str, str] | None = None, title: str | None = None):
    """Training loss against the fraction of the run's updates done, one panel per size, one line per model
    (`metrics`: model, samples_per_class, variant, progress, train_loss; the 2x-budget runs dashed, the
    half-budget ones dotted; one legend for every panel: a colour per model, a line style per budget): the
    convergence evidence, a converged run's loss has flattened."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    set_style()
    styles = {"": ("-", "the grid's budget"), "x2": ("--", "2x budget"), "half": (":", "half budget")}

    def style(variant: str) -> tuple[str, str]:  # (line style, legend name); another budget: solid, its own name
        return styles.get(variant, ("-", str(variant)))

    labels = dict(labels or {})
    sizes = sorted(metrics["samples_per_class"].unique()) if len(metrics) else []
    fig, axes = plt.subplots(1, max(len(sizes), 1), figsize=(3.2 * max(len(sizes), 1), 3.4), sharey=True,
                             squeeze=False)
    models = list(dict.fromkeys(metrics["model"])) if len(metrics) else []
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    for ax, n in zip(axes[0], sizes):
        for (model, variant), g in metrics[metrics["samples_per_class"] == n].groupby(["model", "variant"]):
            ax.plot(g["progress"], g["train_loss"], style(variant)[0], color=colours[model], linewidth=1)
        ax.set(title=f"{n} images/class", xlabel="fraction of the run's updates")
    axes[0][0].set_ylabel("training loss (epoch mean)")
    handles = [Line2D([], [], color=colours[m], linewidth=1.5, label=labels.get(m, m)) for m in models]
    present = set(metrics["variant"]) if len(metrics) else set()
    if len(present) > 1:  # a line style per budget, in the order of `styles` (others after them)
        shown = [v for v in styles if v in present] + sorted(present - set(styles))
        handles += [Line2D([], [], color="0.35", linestyle=style(v)[0], linewidth=1, label=style(v)[1])
                    for v in shown]
    if handles:
        fig.legend(handles=handles, fontsize="small", loc="lower center", ncol=min(len(handles), 4), frameon=False,
                   bbox_to_anchor=(0.5, -0.12))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


_FIGURE_CAPTIONS = (("_loss_curves", "training loss of seed 0 against the fraction of each run's updates (rolling "
                                     "mean over 5% of the run; dashed: twice the budget, dotted: half): the "
                                     "convergence evidence; on the ViT recipe the loss is against Mixup/CutMix "
                                     "targets with label smoothing, so it stays well above 0"),
                    ("_top1_vs_samples", "the title claim: last-epoch top-1 against training images per class (mean, "
                                         "95% CI over seeds); the gap to the SGD-trained ResNet and the share of it "
                                         "DHVT closes"),
                    ("_paper_vs_ours", "paper (reported) vs reproduced top-1, our mean ± std over seeds"),
                    ("_curves", "test top-1 per epoch (epochs counted from 1), mean ± std over seeds"),
                    ("_head_tokens", "head-token attention over the patches (last block)"))


def figure_caption(stem: str) -> str:
    """The caption of figure `<stem>.png` in results/report.md, from its name ('quick_curves' -> 'quick: test top-1
    per epoch ...')."""
    for suffix, text in _FIGURE_CAPTIONS:
        if stem.endswith(suffix):
            return f"{stem.removesuffix(suffix)}: {text}"
    return stem.replace("_", " ")
