"""Reports: every table and figure of the stored runs, written together; the `make figures` command.

`make_figures` (CLI: `python -m dhvtlib.report figures [--root results]`, what `make figures` runs) regenerates every
table and figure under results/ from the stored runs (no training), plus the paper's reported tables under
results/paper/ and results/report.md. `show_experiment` is an experiment notebook's report cell: one experiment's
files written as `make figures` writes them, then shown. The tables come from `dhvtlib.results` (displayed as
`dhvtlib.table_display` says), the figures from `dhvtlib.viz`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from . import study
from .files import write_text
from .models.ablations import ABLATIONS
from .paper import spread_sentence
from .paths import check_name, join_under, output_dir
from .results import (_ablation_baselines, aggregate, export_paper_tables, load_metrics, load_runs,
                      paper_vs_reproduced, provenance, write_table)
from .table_display import captioned, mean_std_table, table_caption, to_markdown
from .viz.figures import (figure_caption, plain_text, plot_curves, plot_efficiency, plot_loss_curves,
                          plot_paper_vs_ours, save_figure, set_style)

__all__ = ["report_efficiency", "claim1_sentence", "report_experiment", "show_experiment", "make_figures",
           "write_report", "main"]


def report_experiment(results_root: str | os.PathLike, experiment: str, runs: pd.DataFrame | None = None
                      ) -> tuple[pd.DataFrame, list[Path]]:
    """Paper-vs-reproduced table and figures of one experiment from its stored runs: writes
    `<root>/<experiment>/table.{csv,md}`, `<root>/figures/<experiment>_curves.{png,pdf}` and, where the paper has
    numbers, `<root>/figures/<experiment>_paper_vs_ours.{png,pdf}`. Returns (table, paths written). An experiment
    name that could leave the root is refused; a figure that cannot be drawn is a warning, the rest is written."""
    root = Path(results_root)
    folder = join_under(root, check_name(experiment))
    runs = load_runs(root) if runs is None else runs
    group = runs[runs["experiment"] == experiment] if len(runs) else runs
    done = group[group["completed"]] if len(group) else group
    if done.empty:
        warnings.warn(f"experiment {experiment!r}: no completed runs yet; no table written", stacklevel=2)
        return pd.DataFrame(), []
    done = done.assign(tag=done["tag"].where(done["tag"].notna(), done["model"]).astype(str))  # untagged: its model
    agg = aggregate(done)
    table = paper_vs_reproduced(agg, baseline=_ablation_baselines(agg["tag"]))
    table.attrs["caption"] = table_caption(done, experiment)  # shown by `captioned(table)`
    if any(t in ABLATIONS for t in table["tag"]):  # ablation deltas: the paper's own spread of one setting
        table.attrs["caption"] += ". " + spread_sentence()
    written = write_table(table, folder / "table", title=f"{experiment}: paper vs reproduced "
                          "(top-1 %: each run's best epoch, the max over test epochs as the official log; "
                          "final-epoch mean in ours_final_mean; delta in the paper's statistic per table)",
                          provenance=provenance(done), caption=table.attrs["caption"])
    stem = experiment.replace("/", "_")
    metrics = load_metrics(done)
    if not metrics.empty and "top1" in metrics:  # the legend says the table's row labels, not raw tags
        metrics = metrics.assign(row=metrics["tag"].map(dict(zip(table["tag"], table["label"]))).fillna(metrics["tag"]))
        with _figure(f"{stem}_curves") as fig:
            fig.append(plot_curves(metrics, hue="row"))
            fig[0].axes[0].set_title(f"{plain_text(experiment)}: test top-1 (mean $\\pm$ std over seeds)")
            written += save_figure(fig[0], root / "figures" / f"{stem}_curves")
    compared = table.dropna(subset=["paper_top1"])
    if not compared.empty:
        with _figure(f"{stem}_paper_vs_ours") as fig:
            fig.append(plot_paper_vs_ours(compared, title=f"{plain_text(experiment)}: paper vs reproduced"))
            written += save_figure(fig[0], root / "figures" / f"{stem}_paper_vs_ours")
    return table, written


def show_experiment(results_root: str | os.PathLike, experiment: str, curves: pd.DataFrame | None = None, *,
                    mean_std: bool = False) -> tuple[pd.DataFrame, list[Path]]:
    """An experiment notebook's report: writes the experiment's table and figures (`report_experiment`), shows the
    table with its caption (`captioned`; with `mean_std`, for data the paper has no number for: tag, top-1 as
    'mean ± std' over seeds, n_seeds and ours_best_of_n, as Markdown), prints the paths written and, given `curves`
    (the notebook's runs, as `experiments.execute` returns them), plots their test top-1 per epoch. Returns
    `report_experiment`'s (table, paths written)."""
    # only a notebook shows: IPython is not needed by `make figures`, and pyplot is imported on first use as in viz
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    table, files = report_experiment(results_root, experiment)
    if table.empty or "ours_mean" not in table:
        print(f"no completed run of {experiment} under {results_root} yet (submitted with wait=False, or still "
              "running): re-run this cell when they finish.")
        return table, files
    set_style()
    display(Markdown(to_markdown(mean_std_table(table))) if mean_std else captioned(table))
    print("\n".join(map(str, files)))
    if curves is not None:
        fig = plot_curves(load_metrics(curves))
        fig.axes[0].set_title(f"{experiment}: test top-1 per epoch")
        plt.show()
        plt.close(fig)
    return table, files


@contextlib.contextmanager
def _figure(name: str):
    """A list to put the figure being drawn in; it is closed afterwards, and a figure that fails to draw or save is
    a warning naming it, so one bad label never stops the other tables and figures."""
    import matplotlib.pyplot as plt  # optional (notebooks extra), ~0.4 s: on first use, as in dhvtlib.viz

    figs: list = []
    try:
        yield figs
    except Exception as e:  # matplotlib raises many types (mathtext ValueError, font errors, ...)
        warnings.warn(f"figure {name} was not written: {type(e).__name__}: {e}", stacklevel=3)
    finally:
        for fig in figs:
            plt.close(fig)


def report_efficiency(results_root: str | os.PathLike, experiment: str, runs: pd.DataFrame | None = None
                      ) -> tuple[dict[str, Any], pd.DataFrame, list[Path]]:
    """The title-claim study's outputs from its completed runs (default: the stored ones), in
    `<root>/<experiment>/`: `table.{csv,md,tex}` (top-1 per model and size: mean, std, 95% CI), `verdicts.{csv,md}`
    (the two claims by the criteria fixed in dhvtlib.study), `convergence.{csv,md}` and `precision.{csv,md}`; in
    `<root>/figures/`: `<experiment>_top1_vs_samples` and `<experiment>_loss_curves`. Returns (claim 1, the
    per-size verdicts, paths written)."""
    root = Path(results_root)
    out, stem = join_under(root, check_name(experiment)), experiment.replace("/", "_")
    if runs is None:
        runs = load_runs(root)
        runs = runs[runs["experiment"] == experiment] if len(runs) else runs
    f = study.study_frame(runs)
    if f.empty:
        warnings.warn(f"experiment {experiment!r}: no completed runs yet; no table written", stacklevel=2)
        return {}, pd.DataFrame(), []
    done = runs[runs["status"].eq("completed")]
    summary, (claim1, per_size) = study.summary_table(f), study.verdicts(f)
    cpu = f["cpu_s"].dropna()
    prov = {**provenance(done), "runs": f"{len(f)} completed", "wall": f"{f['wall_s'].sum() / 3600:.2f} h of runs "
            "in all (one thread each)" + (f"; {cpu.sum() / 3600:.2f} CPU-hours over the {len(cpu)} runs that record "
                                          "their CPU time" if len(cpu) else "")}
    caption = (f"{experiment}: Fashion-MNIST, {len(f)} completed runs; mean, std and 95% bootstrap CI over seeds; "
               "design and verdict criteria in dhvtlib/study/ and the README")
    files = write_table(summary, out / "table", title=f"{experiment}: test top-1 (%) at the last epoch vs training "
                        "images per class", provenance=prov, caption=caption)
    verdict = claim1_sentence(claim1)
    files += write_table(per_size, out / "verdicts", title=f"{experiment}: {verdict}; per size: the gap "
                         f"({study.CNN_REFERENCE} - deit), DHVT's gain over DeiT, DHVT - {study.CNN_REFERENCE} (claim "
                         "2 holds where its CI upper bound >= -1, decided with two or more seeds) and the share of "
                         "the gap DHVT closes (1 = all of it; above 1: DHVT beats the CNN); not_converged: the models "
                         "whose 2x check failed at that size", provenance=prov)
    conv, prec = study.convergence_table(f), study.precision_table(f)
    if len(conv):
        files += write_table(conv, out / "convergence", title=f"{experiment}: last-epoch top-1 at a budget and at "
                             f"twice it (seed 0); a budget is accepted when it moves by less than "
                             f"{study.CONVERGENCE_POINTS:g} point, else doubled (up to the cap in the README; "
                             "beyond it the model is reported as not converged)",
                             provenance=prov)
    if len(prec):
        files += write_table(prec, out / "precision", title=f"{experiment}: the precision auto picked vs fp32, "
                             "paired by seed", provenance=prov)
    with _figure(f"{stem}_top1_vs_samples") as fig:
        fig.append(plot_efficiency(summary, per_size, labels=study.LABELS, cnn=study.CNN_REFERENCE,
                                   title=f"{plain_text(experiment)}: the same budget and schedule shape at "
                                   "every size (convergence: convergence.md)"))
        files += save_figure(fig[0], root / "figures" / f"{stem}_top1_vs_samples")
    curves = _loss_curves(done)
    if len(curves):
        with _figure(f"{stem}_loss_curves") as fig:
            fig.append(plot_loss_curves(curves, labels=study.LABELS,
                                        title=f"{plain_text(experiment)}: training loss (seed 0, rolling mean "
                                        "over 5% of the run)"))
            files += save_figure(fig[0], root / "figures" / f"{stem}_loss_curves")
    return claim1, per_size, files


def claim1_sentence(c: dict[str, Any]) -> str:
    if not c or c.get("holds") is None:
        return f"claim 1 not decided yet ({(c or {}).get('undecided_why') or 'no paired runs'})"
    verdict = (f"claim 1 {'holds' if c['holds'] else 'does not hold'} here: slope of the gap vs log10(images per "
               f"class) {c['slope']:.2f} points per decade, 95% CI [{c['ci_low']:.2f}, {c['ci_high']:.2f}]")
    by_count: dict[tuple[int, int], list[str]] = {}
    for n, count in (c.get("short") or {}).items():
        by_count.setdefault(tuple(count), []).append(str(n))
    if by_count:  # fewer paired seeds than the design plans at some size
        verdict += " (provisional: " + "; ".join(f"{have} of the {planned} planned paired seeds at {', '.join(ns)}"
                                                for (have, planned), ns in by_count.items()) + " images per class)"
    return verdict


def _loss_curves(done: pd.DataFrame) -> pd.DataFrame:
    """Seed 0's per-epoch training loss with model, size, variant and the fraction of the run done."""
    m = load_metrics(done[done["seed"] == 0])
    if m.empty:
        return m
    parts = m["tag"].str.split("/")
    m = m.assign(model=parts.str[0], samples_per_class=parts.str[1].str.removesuffix("pc").astype(int),
                 variant=m["tag"].map(study.variant))
    m = m[m["variant"].isin(["", "x2", "half"])].sort_values(["tag", "epoch"])
    n = m.groupby("tag")["epoch"].transform("max").add(1)
    # a rolling mean over 5% of each run: under Mixup/CutMix the per-epoch loss of a few updates is noisy
    smooth = m.groupby("tag")["train_loss"].transform(
        lambda v: v.rolling(max(1, round(0.05 * len(v))), min_periods=1, center=True).mean())
    return m.assign(progress=(m["epoch"] + 1) / n, train_loss=smooth)


def write_report(results_root: str | os.PathLike) -> Path:
    """`<root>/report.md`: every experiment's table (as written by `write_table`, with its caption and provenance)
    and every figure under `<root>/figures/` (PNG, linked to its PDF) with a caption, in a fixed order, so the
    same stored runs always give the same file."""
    root = Path(results_root)
    parts = ["# dhvtlib results report", "",
             "Regenerated by `make figures` from the stored runs under this folder (no training). Tables: "
             "`<experiment>/table.{csv,md,tex}`; figures: `figures/*.{png,pdf}`; the paper's numbers: `paper/`.", ""]
    for md in sorted(root.rglob("table.md")):
        rel = md.parent.relative_to(root).as_posix()
        text = md.read_text(encoding="utf-8").replace("## ", "### ", 1)
        parts += [f"## Table: {rel}", "", text.rstrip(), "",
                  f"Files: [{rel}/table.csv]({rel}/table.csv), [{rel}/table.tex]({rel}/table.tex)", ""]
    figures = sorted((root / "figures").glob("*.png"))
    if figures:
        parts += ["## Figures", ""]
    for png in figures:
        caption = figure_caption(png.stem)
        parts += [f"![{caption}](figures/{png.name})", "",
                  f"*Figure: {caption}* ([PDF](figures/{png.stem}.pdf))", ""]
    report = "\n".join(parts).rstrip() + "\n"
    return write_text(root / "report.md", report)


def make_figures(results_root: str | os.PathLike = "results") -> list[Path]:
    """Regenerate every table and figure from the stored runs (no training): `report_experiment` for each
    experiment found, the paper's tables under `<root>/paper/`, and `<root>/report.md` collecting every table and
    figure with captions (`write_report`). Returns the paths written."""
    root = Path(results_root)
    runs = load_runs(root)
    written: list[Path] = []
    for experiment in sorted(runs["experiment"].unique(), key=str) if len(runs) else []:
        try:
            check_name(experiment)
        except ValueError as e:  # a shared or downloaded results tree must not place files outside the root
            warnings.warn(f"skipping the runs of experiment {experiment!r}: {e}", stacklevel=2)
            continue
        if str(experiment).startswith("efficiency/"):  # accuracy vs data size: its own table and figure
            written += report_efficiency(root, experiment, runs[runs["experiment"] == experiment])[2]
        else:
            written += report_experiment(root, experiment, runs)[1]
    written += export_paper_tables(root / "paper")
    return written + ([write_report(root)] if len(runs) else [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dhvtlib.report", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    figures = sub.add_parser("figures", help="regenerate every table and figure under --root from stored runs")
    figures.add_argument("--root", help="results folder (default: $DHVTLIB_RESULTS, else <project root>/results)")
    args = parser.parse_args(argv)
    import matplotlib  # optional (notebooks extra): imported where figures are drawn, as in dhvtlib.viz

    matplotlib.use("Agg")
    root = output_dir(args.root)
    if not root.is_dir():
        raise SystemExit(f"python -m dhvtlib.report: no runs found under {root} (no such folder); check --root.")
    try:
        written = make_figures(root)
    except OSError as e:
        raise SystemExit(f"python -m dhvtlib.report: cannot write {e.filename or root} ({e.strerror or e}); make "
                         "the results folder writable or pass another --root.") from None
    for path in written:
        print(path)
    if not any(p.name == "report.md" for p in written):
        print(f"no runs found under {root} (no manifest.json); only the paper's tables were written.")


if __name__ == "__main__":
    main()
