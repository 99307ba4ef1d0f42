"""dhvt-sweep: a named experiment's (row, seed) runs as local or SLURM jobs from the command line, named as its
notebook names them; prints one 'job id<TAB>run directory' line per run.

    dhvt-sweep --experiment ablation --table 5 --launcher slurm --partition gpu --gpus-per-run 2
    python -m dhvtlib.sweep --help

The experiments it offers and their default seeds are `experiments.EXPERIMENTS` (the notebooks' own); the launchers
and their options are dhvtlib.launch's.
"""
from __future__ import annotations

import argparse

from .data.datasets import DATASETS
from .experiments import EXPERIMENTS, ablation_table, execute
from .launch import JOB_LAUNCHERS, LaunchConfig, config
from .models.ablations import ABLATION_TABLES
from .recipe import PRESETS

__all__ = ["sweep", "main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dhvt-sweep", description="Train a table's (row, seed) runs as local or SLURM "
                                 "jobs (submitit) and print the job ids; re-run with --wait to follow them.")
    ap.add_argument("--experiment", required=True, choices=list(EXPERIMENTS))
    ap.add_argument("--table", help=f"ablation table: {', '.join(t.removeprefix('table') for t in ABLATION_TABLES)} "
                    "or ladder")
    ap.add_argument("--variant", default="tiny", choices=["tiny", "small"], help="ablation width")
    ap.add_argument("--rows", nargs="+", help="only these rows of the table")
    ap.add_argument("--models", nargs="+", help="models (quick, cifar100, domainnet, imagenet)")
    ap.add_argument("--domains", nargs="+", help="DomainNet domains")
    ap.add_argument("--name", help="results folder of the experiment (default: the notebook's)")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the notebook's seeds")
    ap.add_argument("--preset", choices=list(PRESETS), help="default: each row's own preset")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--dataset", help="replace the experiment's data set (e.g. fashion_mnist)")
    ap.add_argument("--results-root", default="results")
    ap.add_argument("--data-dir", help="data set folder (DomainNet: the folder holding <domain>/)")
    ap.add_argument("--download", action="store_true")
    ap.add_argument("--device", default="auto")
    g = ap.add_argument_group("launcher")
    g.add_argument("--launcher", default="local", choices=list(JOB_LAUNCHERS))
    g.add_argument("--wait", action="store_true", help="wait for the jobs, showing one line per run")
    g.add_argument("--workers", type=int, help="local: concurrent jobs (default: one per GPU, else 1)")
    g.add_argument("--threads", type=int, help="local: torch threads per job")
    g.add_argument("--partition")
    g.add_argument("--gpus-per-run", type=int, default=1)
    g.add_argument("--nodes", type=int, default=1)
    g.add_argument("--time-min", type=int, default=LaunchConfig.time_min)
    g.add_argument("--account")
    g.add_argument("--cpus-per-task", type=int)
    g.add_argument("--mem-gb", type=float)
    g.add_argument("--setup", action="append", default=[], help="shell line run before each job (repeatable)")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE", help="extra sbatch option")
    g.add_argument("--folder", help="submitit's folder (default <results-root>/.submitit)")
    return ap


def _specs(args: argparse.Namespace) -> tuple[list, str | None]:
    """(specs, data_dir) of the CLI's experiment, named as its notebook names it (a DomainNet row reads
    <data_dir>/<domain>, see experiments.spec_data_dir)."""
    runs = EXPERIMENTS[args.experiment].runs
    models = [args.models] if args.models else []  # (else the builder's default models)
    if args.experiment == "quick":
        return runs(*models, experiment=args.name or "quick"), args.data_dir
    if args.experiment in ("ablation", "ladder"):
        table = "ladder" if args.experiment == "ladder" else args.table
        if not table:
            raise ValueError("--experiment ablation needs --table (5, 6, 8, 9, 10, 11, affine or ladder).")
        table = ablation_table(table)  # (the builders check the table, the variant and the rows)
        name = args.name or f"ablation/{table}_{args.variant}"
        if table == "ladder":  # (also --experiment ablation --table ladder)
            return EXPERIMENTS["ladder"].runs(name, args.rows), args.data_dir
        return runs(table, args.variant, args.rows, experiment=name), args.data_dir
    if args.experiment == "domainnet":
        domains = args.domains or ["clipart", "painting", "sketch"]  # (Table 2's, as notebook 03)
        return runs(domains, *models), args.data_dir or "data/domainnet"
    return runs(*models), args.data_dir  # cifar100, imagenet


def sweep(argv: list[str] | None = None) -> dict[str, str]:
    """dhvt-sweep's work: submit (and with --wait follow) the runs, print one 'job id<TAB>run directory' line per
    run; returns {run directory: job id}. A bad value ends in SystemExit with one sentence."""
    args = _parser().parse_args(argv)
    bad_seeds = [s for s in args.seeds or () if s < 0]
    if bad_seeds:
        raise SystemExit(f"dhvt-sweep: --seeds {bad_seeds[0]} is negative; seeds are integers from 0.")
    if args.dataset is not None and args.dataset not in DATASETS:
        raise SystemExit(f"dhvt-sweep: --dataset {args.dataset!r} is not known; use one of "
                         f"{', '.join(sorted(DATASETS))}.")
    try:
        sbatch = dict(kv.split("=", 1) for kv in args.sbatch)
    except ValueError:
        raise SystemExit(f"dhvt-sweep: --sbatch takes KEY=VALUE, got {args.sbatch!r}.") from None
    try:
        cfg = config(args.launcher, workers=args.workers, threads=args.threads, partition=args.partition,
                     gpus_per_run=args.gpus_per_run, nodes=args.nodes, time_min=args.time_min, account=args.account,
                     cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, setup=args.setup, sbatch=sbatch,
                     folder=args.folder, wait=args.wait)
        specs, data_dir = _specs(args)
        frame = execute(specs, args.seeds or list(EXPERIMENTS[args.experiment].seeds), preset=args.preset,
                        results_root=args.results_root, data_dir=data_dir, download=args.download,
                        device=args.device, epochs=args.epochs, dataset=args.dataset, launcher=cfg)
        jobs: dict[str, str] = frame.attrs.get("jobs", {})
    except ValueError as e:
        raise SystemExit(f"dhvt-sweep: {e}") from None
    for out, job in jobs.items():
        print(f"{job}\t{out}")
    return jobs


def main(argv: list[str] | None = None) -> None:
    """The dhvt-sweep console script: exit status 0 when the runs were submitted (and, with --wait, followed)."""
    sweep(argv)


if __name__ == "__main__":
    main()
