"""Run a whole table at once: a table's (row, seed) runs as submitit jobs on this machine or a SLURM cluster.

    experiments.execute(specs, seeds, launcher="local", launch_options={"workers": 2, "threads": 1})
    experiments.execute(specs, seeds, launcher="slurm", launch_options={"partition": "gpu", "gpus_per_run": 2})
    dhvt-sweep --experiment ablation --table 5 --launcher slurm --partition gpu --gpus-per-run 2   (dhvtlib.sweep)

Launchers (`LaunchConfig.launcher`, one of `LAUNCHERS`):
- "inline": today's behaviour, each run in this process, one after another (execute does it itself).
- "local": submitit's LocalExecutor. `workers` concurrent jobs on this machine (default one per visible GPU, else
  one), each a process with `threads` torch threads (default: the CPU cores shared out) and, with GPUs, its own GPU.
  A worker trains its share of the runs (round-robin) one after another, so torch is imported once per worker.
- "slurm": submitit's SlurmExecutor, one job per run: `partition`, `gpus_per_run`, `nodes`, `time_min`, `account`,
  `cpus_per_task`, `mem_gb`, `setup` (shell lines before srun) and `sbatch` (any other sbatch option). A run with
  more than one GPU is a DDP job: tasks_per_node = gpus_per_run, and each task exports the torch.distributed
  variables from SLURM's (submitit.helpers.TorchDistributedEnvironment) before `train.run`.

Runs stay the unit of truth: each job writes the run directory exactly as an inline run would, and the table is built
from the run directories. Completed runs are never submitted; a run whose job is still alive (recorded in
`<folder>/jobs.json`, see dhvtlib.jobs) is watched, not resubmitted, so re-running a notebook with `wait=False` later
collects what finished. Preemption and time limits: submitit sends SIGUSR2; the job asks the run to stop at the next
step boundary (the run's own graceful stop: checkpoint-last.pt, status 'interrupted'), then submitit's `checkpoint()`
returns a DelayedSubmission of the same job, which is requeued and resumes with resume=True (bitwise-equal on CPU).
A run that failed or was killed shows the last lines of its job's log.

This module holds the launchers (what is submitted, and how); dhvtlib.jobs the bookkeeping of the jobs once
submitted (registry, states, the watch loop). Neither imports dhvtlib.experiments.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .data.datasets import DATASETS
from .jobs import Registry, holder_alive, job_alive, watch
from .recipe import resolve
from .run.rundir import RunInterrupted, RunLockedError, StopSignals, read_manifest
from .run.train import run

try:  # submitit is optional: "inline" works without it (_submitit() refuses the job launchers in one sentence)
    from submitit import JobEnvironment
    from submitit.helpers import Checkpointable, DelayedSubmission, TorchDistributedEnvironment
except ImportError:  # pragma: no cover - submitit is a dependency, but keep inline usable without it
    Checkpointable = object  # type: ignore[assignment,misc]

__all__ = ["LAUNCHERS", "JOB_LAUNCHERS", "LaunchConfig", "RunTask", "LocalWorker", "SlurmRun", "config", "launch",
           "check_tasks", "slurm_executor"]

LAUNCHERS = ("inline", "local", "slurm")  # every launcher name; the lists elsewhere (messages, choices) read this one
JOB_LAUNCHERS = LAUNCHERS[1:]  # the launchers that submit submitit jobs ("inline" trains in execute())
_JOB_LAUNCHERS = " and ".join(map(repr, JOB_LAUNCHERS))  # "'local' and 'slurm'", as messages name them


@dataclass(frozen=True)
class LaunchConfig:
    """Where a table's runs train. Options that do not apply to the chosen launcher are ignored."""
    launcher: str = "inline"
    wait: bool = True                 # False: submit, print the job ids and return; re-running collects what finished
    workers: int | None = None        # local: concurrent jobs (default: one per visible GPU, else 1)
    threads: int | None = None        # local: torch threads per job (default: CPU cores // workers)
    partition: str | None = None      # slurm: required
    gpus_per_run: int = 1             # slurm: GPUs (= DDP processes) per run and node; 0 for a CPU-only cluster
    nodes: int = 1                    # slurm: nodes per run (world size = nodes x gpus_per_run)
    time_min: int = 3 * 24 * 60       # job time limit in minutes (longer runs are requeued and resume)
    account: str | None = None        # slurm
    cpus_per_task: int | None = None  # slurm: CPU cores per DDP process (data loading)
    mem_gb: float | None = None       # slurm: memory per node
    setup: tuple[str, ...] = ()       # shell lines run before the job (module load ..., source venv/bin/activate)
    sbatch: Mapping[str, Any] = field(default_factory=dict)  # slurm: any other sbatch option, e.g. {"qos": "high"}
    folder: str | None = None         # submitit's pickles and logs (default: <results_root>/.submitit)
    poll_s: float = 10.0              # seconds between progress checks while waiting
    max_requeues: int = 3             # time-limit requeues per job (preemptions are always requeued)

    def __post_init__(self):
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {self.launcher!r}; choose one of: {', '.join(LAUNCHERS)}.")
        for name in ("workers", "threads", "nodes", "time_min", "cpus_per_task"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"launch option {name}={v!r} must be a positive integer.")
        if not isinstance(self.gpus_per_run, int) or self.gpus_per_run < 0:
            raise ValueError(f"launch option gpus_per_run={self.gpus_per_run!r} must be 0 or a positive integer.")
        if not isinstance(self.max_requeues, int) or self.max_requeues < 0:
            raise ValueError(f"launch option max_requeues={self.max_requeues!r} must be 0 or a positive integer.")
        if isinstance(self.setup, str) or not all(isinstance(s, str) for s in self.setup):
            raise ValueError(f"launch option setup={self.setup!r} must be a list of shell lines.")
        if not isinstance(self.sbatch, Mapping):
            raise ValueError(f"launch option sbatch={self.sbatch!r} must be a dict of sbatch options, e.g. "
                             "{'qos': 'high'}.")
        if self.launcher == "slurm" and not self.partition:
            raise ValueError("launcher 'slurm' needs a partition (launch_options={'partition': ...}, --partition).")
        object.__setattr__(self, "setup", tuple(self.setup))


def config(launcher: str | LaunchConfig | Mapping[str, Any] = "inline", **options: Any) -> LaunchConfig:
    """A LaunchConfig from a name, a dict or a LaunchConfig, with `options` applied; None options are not given."""
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(launcher, LaunchConfig):
        base = dataclasses.asdict(launcher)
    elif isinstance(launcher, Mapping):
        base = dict(launcher)
    else:
        base = {"launcher": launcher}
    names = {f.name for f in dataclasses.fields(LaunchConfig)}
    unknown = sorted(set(base) - names | set(options) - names)
    if unknown:
        raise ValueError(f"unknown launch option {unknown[0]!r}; choose from: {', '.join(sorted(names))}.")
    return LaunchConfig(**{**base, **options})


# ------------------------------------------------------------------------------------------------ what a job trains
@dataclass(frozen=True)
class RunTask:
    """One (row, seed) run: everything `train.run` needs. Calling it trains the run, resuming it when its run
    directory holds checkpoint-last.pt (a run stopped before its first checkpoint starts again)."""
    output: str
    preset: Any
    kwargs: dict
    experiment: str
    tag: str
    seed: int
    data_dir: str | None = None
    download: bool = False
    device: str = "auto"

    def __call__(self, verbose: bool = True) -> dict[str, Any]:
        resume = (Path(self.output) / "checkpoint-last.pt").exists()
        print(f"=== {'resuming' if resume else 'training'} {self.tag} seed {self.seed} -> {self.output}", flush=True)
        return run(self.preset, output=self.output, data_dir=self.data_dir, download=self.download,
                   device=self.device, resume=resume, experiment=self.experiment, tag=self.tag, progress=False,
                   verbose=verbose, **self.kwargs)


class _Preemption:
    """Inside a submitit job: submitit's SIGUSR2 handler checkpoints and requeues at once, mid-step. This replaces it
    by a request to stop at the next step boundary (the run's StopSignals), and calls submitit's handler (our
    `checkpoint()`, the requeue, the exit) once the run has stopped with its checkpoint."""

    def __init__(self):
        self.signum = JobEnvironment._usr_sig()
        self.requeue = signal.getsignal(self.signum)
        self.requested = False
        signal.signal(self.signum, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        stop = signal.getsignal(signal.SIGUSR1)
        if isinstance(getattr(stop, "__self__", None), StopSignals):
            stop(signal.SIGUSR1, frame)  # a run is training: stop at the next step boundary, with a checkpoint
        else:
            self.requeue_now()  # between runs: nothing to save

    def requeue_now(self) -> None:
        if callable(self.requeue):
            self.requeue(self.signum, None)  # submitit: checkpoint() -> DelayedSubmission, requeue, exit


def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


class LocalWorker(Checkpointable):
    """A local submitit job: trains its runs one after another (completed and diverged runs are skipped, interrupted
    ones resumed), so a requeued worker simply starts again. A failed run is reported and the worker goes on.
    Workers given the same list share it as a queue, in its order: a run another live process holds (its run
    directory's lock) is left to it, so a worker that finishes early takes the next run instead of idling."""

    def __init__(self, tasks: Sequence[RunTask], threads: int | None = None, requeues: int = 0):
        self.tasks, self.threads, self.requeues = list(tasks), threads, requeues

    def __call__(self) -> dict[str, str]:
        _set_threads(self.threads)
        preemption = _Preemption()
        states = {}
        for task in self.tasks:
            state = read_manifest(Path(task.output)).get("status")
            if state in ("completed", "diverged"):
                states[task.output] = state
                continue
            if holder_alive(Path(task.output)):
                states[task.output] = "another worker"
                continue
            try:
                states[task.output] = task().get("status", "?")
            except RunLockedError:  # another worker took it between the check and the lock
                states[task.output] = "another worker"
            except RunInterrupted as e:
                if preemption.requested:
                    preemption.requeue_now()
                raise SystemExit(e.exit_code) from None
            except Exception as e:  # the run directory says 'failed'; the next run still trains
                traceback.print_exc()
                print(f"=== {task.tag} seed {task.seed} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                states[task.output] = "failed"
        return states

    def checkpoint(self, *args: Any, **kwargs: Any):
        return DelayedSubmission(LocalWorker(self.tasks, self.threads, self.requeues + 1))


class SlurmRun(Checkpointable):
    """A SLURM job training one run; with several tasks (GPUs) each task is one DDP process."""

    def __init__(self, task: RunTask, requeues: int = 0):
        self.task, self.requeues = task, requeues

    def __call__(self) -> dict[str, Any] | None:
        env = JobEnvironment()
        if env.num_tasks > 1:  # what torchrun would set: MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK
            TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        preemption = _Preemption()
        try:
            return self.task(verbose=env.global_rank == 0)
        except RunInterrupted as e:
            if not preemption.requested:
                raise SystemExit(e.exit_code) from None
            if env.global_rank == 0:
                preemption.requeue_now()
            return None

    def checkpoint(self, *args: Any, **kwargs: Any):
        return DelayedSubmission(SlurmRun(self.task, self.requeues + 1))  # resumes: checkpoint-last.pt exists


# ------------------------------------------------------------------------------------------------ executors
def _submitit():
    """The submitit module, or one sentence saying the job launchers need it."""
    try:  # at call time: submitit is optional, and a missing one (also made missing after import) is one sentence
        import submitit
    except ImportError:
        raise ValueError(f"launchers {_JOB_LAUNCHERS} need submitit; pip install 'submitit>=1.5'.") from None
    return submitit


def slurm_executor(cfg: LaunchConfig, folder: str | Path, name: str = "dhvt"):
    """The SlurmExecutor one run is submitted with (sbatch needs a SLURM cluster; the script can be made anywhere
    submitit finds `srun`)."""
    submitit = _submitit()
    try:
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=cfg.max_requeues)
    except RuntimeError:
        raise ValueError("launcher 'slurm' needs a SLURM cluster: srun was not found on this machine's PATH; run it "
                         "on a login node, or use launcher 'local'.") from None
    gpus = cfg.gpus_per_run
    params = dict(job_name=name, partition=cfg.partition, time=cfg.time_min, nodes=cfg.nodes,
                  ntasks_per_node=max(gpus, 1), gpus_per_node=gpus or None, cpus_per_task=cfg.cpus_per_task,
                  account=cfg.account, mem=f"{cfg.mem_gb:g}GB" if cfg.mem_gb else None, setup=list(cfg.setup) or None,
                  signal_delay_s=120, additional_parameters=dict(cfg.sbatch) or None)
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def _local_executor(cfg: LaunchConfig, folder: Path, threads: int, gpu: int | None):
    submitit = _submitit()
    ex = submitit.LocalExecutor(folder=folder, max_num_timeout=cfg.max_requeues)
    setup = [f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}", *cfg.setup]
    ex.update_parameters(timeout_min=cfg.time_min, setup=setup, signal_delay_s=60,
                         **({"gpus_per_node": 1, "visible_gpus": (gpu,)} if gpu is not None else {}))
    return ex


def _local_workers(cfg: LaunchConfig, n_tasks: int) -> tuple[int, int, list[int | None]]:
    n_gpus = torch.cuda.device_count()
    workers = min(cfg.workers or n_gpus or 1, n_tasks)
    if n_gpus and workers > n_gpus:
        raise ValueError(f"launch option workers={workers} asks for more local jobs than the {n_gpus} visible GPUs; "
                         "use at most one per GPU.")
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // workers)
    return workers, threads, [k if n_gpus else None for k in range(workers)]


def _job_handle(folder: Path, entry: Mapping[str, Any]):
    """submitit's handle of a job recorded in the registry (also one submitted in an earlier session)."""
    submitit = _submitit()
    cls = submitit.LocalJob if entry["launcher"] == "local" else submitit.SlurmJob
    return cls(folder=folder, job_id=entry["job_id"])


# ------------------------------------------------------------------------------------------------ launch
def launch(tasks: Sequence[RunTask], cfg: LaunchConfig, results_root: str | Path = "results",
           verbose: bool = True) -> dict[str, str]:
    """Submit the runs that no live job trains yet, show one progress line per run, and (cfg.wait) wait for all of
    them; returns {run directory: job id}. The caller builds the table from the run directories."""
    if cfg.launcher == "inline":
        raise ValueError(f"launch() is for launchers {_JOB_LAUNCHERS}; 'inline' runs in execute().")
    _submitit()
    check_tasks(tasks)
    folder = Path(cfg.folder or Path(results_root) / ".submitit")
    registry = Registry(folder)
    jobs, new = _live_jobs(tasks, registry, folder, verbose)
    if new:
        for task, job in _submit(new, cfg, folder):
            registry.add(task.output, cfg.launcher, job.job_id)
            jobs[task.output] = job
            if verbose:
                print(f"submitted {task.tag} seed {task.seed} -> {task.output}  [{cfg.launcher} job {job.job_id}]",
                      flush=True)
        registry.save()
    if cfg.wait:
        watch(tasks, jobs, registry, cfg.poll_s, verbose)
    elif verbose:
        print(f"{len(jobs)} run(s) submitted or running; re-run to collect what finished "
              f"(logs: {folder}).", flush=True)
    return {out: job.job_id for out, job in jobs.items()}


def _live_jobs(tasks: Sequence[RunTask], registry: Registry, folder: Path,
               verbose: bool) -> tuple[dict[str, Any], list[RunTask]]:
    """({run directory: its job} of the runs a live job already trains, [the runs to submit])."""
    jobs: dict[str, Any] = {}
    new = []
    for task in tasks:
        entry = registry.entries.get(task.output)
        job = _job_handle(folder, entry) if entry else None
        if job is not None and job_alive(job, entry):
            jobs[task.output] = job
            if verbose:
                print(f"{task.tag} seed {task.seed}: already submitted (job {entry['job_id']}), watching it",
                      flush=True)
        else:
            new.append(task)
    return jobs, new


def check_tasks(tasks: Sequence[RunTask]) -> None:
    """Refuse, before anything is submitted, what would only fail inside a job: a recipe that does not resolve (a
    negative seed, ...) or an unknown data set."""
    for task in tasks:
        recipe = resolve(task.preset, **task.kwargs)
        if recipe.dataset not in DATASETS:
            raise ValueError(f"dataset {recipe.dataset!r} is not known; use one of {', '.join(sorted(DATASETS))}.")


def _submit(tasks: Sequence[RunTask], cfg: LaunchConfig, folder: Path) -> list[tuple[RunTask, Any]]:
    """[(run, its job)]: local workers share the runs as one queue in their order (each run is recorded under the
    worker that would take it round-robin; a worker that runs out takes the next free one, and the watch names the
    job from the run's lock), SLURM runs get a job each."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    if cfg.launcher == "local":
        workers, threads, gpus = _local_workers(cfg, len(tasks))
        for k in range(workers):
            job = _local_executor(cfg, folder, threads, gpus[k]).submit(LocalWorker(list(tasks), threads))
            out += [(t, job) for t in tasks[k::workers]]
        return out
    for task in tasks:
        ex = slurm_executor(cfg, folder, name=f"dhvt-{task.tag.replace('/', '-')}-s{task.seed}")
        out.append((task, ex.submit(SlurmRun(task))))
    return out
