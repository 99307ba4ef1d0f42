"""Job bookkeeping for the launchers (dhvtlib.launch): which submitit job trains which run directory
(`<folder>/jobs.json`), whether a job or a run's lock holder is still alive, a run's state read from its directory,
and the watch loop that prints one line per run until no job is alive.

Runs stay the unit of truth: a run's state comes from its run directory (manifest, metrics, lock); a job only tells
whether someone may still be training it, and its log's last lines when it stopped early.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .files import write_json
from .run.rundir import LOCK_NAME, read_manifest

__all__ = ["Registry", "job_alive", "holder_alive", "holder_job", "session_job", "run_state", "job_state", "log_tail",
           "status_line", "watch"]

LOG_LINES = 15


class Registry:
    """`<folder>/jobs.json`: which job trains which run directory, so a later call watches it instead of
    submitting it again."""

    def __init__(self, folder: Path):
        self.path = folder / "jobs.json"
        try:
            self.entries: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def add(self, output: str, launcher: str, job_id: str) -> None:
        self.entries[output] = {"launcher": launcher, "job_id": job_id, "host": socket.gethostname(),
                                "submitted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}

    def save(self) -> None:
        write_json(self.path, self.entries)


def job_alive(job, entry: Mapping[str, Any]) -> bool:
    """A job that may still train its run: local ones by their controller's pid (also from an earlier session),
    SLURM ones by their state."""
    if entry["launcher"] == "local":
        if getattr(job, "_process", None) is not None:
            return not job.done()
        if entry.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(entry["job_id"]), 0)
            return Path(f"/proc/{entry['job_id']}").exists() and "zombie" not in Path(
                f"/proc/{entry['job_id']}/status").read_text()
        except (OSError, ValueError):
            return False
    return not job.done()


def _lock_info(out: str | Path) -> dict[str, Any]:
    """What the run directory's lock says of its holder (RunLock: pid, host, since, job); {} without a lock."""
    try:
        info = json.loads((Path(out) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def holder_alive(out: Path) -> bool:
    """Whether a live process on this machine holds the run directory's lock."""
    return _alive(_lock_info(out))


def _alive(info: Mapping[str, Any]) -> bool:
    """Whether the lock holder `info` (`_lock_info`) is a live process on this machine."""
    try:
        if info.get("host") != socket.gethostname():
            return False
        os.kill(int(info["pid"]), 0)
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def holder_job(out: str | Path) -> str | None:
    """The local job named in the run directory's lock (RunLock), live or left by a killed run; None without one."""
    return _named(_lock_info(out))


def session_job(out: str | Path) -> str | None:
    """The local job that ran the run's last session (its manifest's `sessions`), which outlives the lock; None
    without one."""
    return _last_session(read_manifest(Path(out)))


def _named(info: Mapping[str, Any]) -> str | None:
    job = info.get("job")
    return str(job) if job is not None else None


def _last_session(manifest: Mapping[str, Any]) -> str | None:
    sessions = manifest.get("sessions")
    last = sessions[-1] if isinstance(sessions, list) and sessions else None
    return _named(last) if isinstance(last, dict) else None


def _progress(out: Path, manifest: Mapping[str, Any]) -> tuple[int, float | None]:
    """Epochs done and best top-1: a completed run's from its manifest (`rundir.summarize`), others' from
    metrics.jsonl (read only while the run is not completed: a watch polls every run)."""
    if manifest.get("status") == "completed" and "epochs_run" in manifest:
        return manifest["epochs_run"], manifest.get("best_top1")
    tops, epochs_done = [], 0
    try:
        for line in (out / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            epochs_done += 1
            if "top1" in row:
                tops.append(row["top1"])
    except (OSError, ValueError):
        pass
    return epochs_done, max(tops) if tops else None


def run_state(out: str | Path) -> dict[str, Any]:
    """A run's state from its directory, each file read once: status (queued when it has none yet), epochs done,
    epochs, best top-1, error, and `jobs`, the local jobs the run names (its lock's, then its last session's)."""
    out = Path(out)
    m, lock = read_manifest(out), _lock_info(out)
    epochs_done, best = _progress(out, m)
    status = m.get("status", "queued")
    if status == "running" and not _alive(lock) and m.get("ended") is None:
        status = "running?"  # another machine (SLURM), or killed: the job state tells which
    return {"status": status, "epoch": epochs_done, "epochs": (m.get("config") or {}).get("epochs"),
            "best_top1": best, "error": m.get("error"),
            "jobs": [j for j in (_named(lock), _last_session(m)) if j is not None]}


def log_tail(job, lines: int = LOG_LINES) -> str:
    try:
        text = job.stderr() or ""  # submitit's log of the job (all its tasks)
    except OSError:
        text = ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def job_state(state: dict[str, Any], job, alive: bool) -> dict[str, Any]:
    """A `run_state` given its job (None: not known) and whether that is alive: a run whose job is gone reads 'died'
    with its log's last line instead of 'running?'."""
    if state["status"] == "running?" and job is not None and not alive:
        last = log_tail(job, 1)
        state = {**state, "status": "died", "error": state["error"] or (f"the job died; its log ends: {last}"
                                                                         if last else "the job died")}
    return state


def status_line(task, state: dict[str, Any], job: str | None) -> str:
    """One run's progress line; `task` is a launch.RunTask (its tag and seed)."""
    s = f"{task.tag} s{task.seed}: {state['status']:<11}"
    if state["epochs"]:
        s += f" epoch {state['epoch']}/{state['epochs']}"
    if state["best_top1"] is not None:
        s += f"  best top-1 {state['best_top1']:.2f}"
    s += f"  [job {job}]" if job else ""
    return s + (f"  ({state['error']})" if state["status"] == "died" else "")


def watch(tasks: Sequence[Any], jobs: Mapping[str, Any], registry: Registry, poll_s: float, verbose: bool) -> None:
    """Print a run's line whenever it changes until no job is alive, checking every `poll_s` seconds; then the log
    tail of each run not completed. `tasks` are launch.RunTasks, `jobs` {run directory: its job}."""
    shown: dict[str, str] = {}
    last: dict[str, tuple[dict[str, Any], Any]] = {}  # each run's state and job at the last poll
    by_id = {job.job_id: job for job in jobs.values()}
    entry = {job.job_id: registry.entries[out] for out, job in jobs.items()}  # the same for each run of a job
    try:
        while True:
            alive = {job_id: job_alive(job, entry[job_id]) for job_id, job in by_id.items()}
            for task in tasks:
                state = run_state(task.output)
                job = _job_of(task.output, state, jobs, by_id)
                last[task.output] = state, job
                line = status_line(task, job_state(state, job, alive[job.job_id] if job is not None else True),
                                   job.job_id if job is not None else None)
                if verbose and shown.get(task.output) != line:
                    print(line, flush=True)
                    shown[task.output] = line
            if not any(alive.values()):
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print("stopped watching; the jobs go on: re-run to collect what finished.", file=sys.stderr, flush=True)
        raise
    for task in tasks:  # the last poll's states: it read them after every job was found gone
        _tell_unfinished(task, *last[task.output])


def _job_of(output: str, state: Mapping[str, Any], jobs: Mapping[str, Any], by_id: Mapping[str, Any]) -> Any:
    """The job training a run (`state` its `run_state`): the first of this watch's jobs (`by_id` {job id: job}) that
    the run names, its lock's (local workers share one queue, so a run is taken by whichever worker is free), then its
    manifest's last session's (the lock goes when the run ends); else the one it was submitted under."""
    return next((by_id[j] for j in state["jobs"] if j in by_id), None) or jobs.get(output)


def _tell_unfinished(task, state: Mapping[str, Any], job) -> None:
    """After watching: a run (`state` its `run_state`) its job (None: not watched) did not complete, with why and the
    last lines of the job's log (stderr)."""
    if state["status"] != "completed" and job is not None:
        status = {"running?": "stopped: the job died before finishing it",
                  "queued": "not started (its job ended first)"}.get(state["status"], state["status"])
        hint = "it is not retried" if status == "diverged" else "re-run to resume it"
        print(f"{task.tag} seed {task.seed} is {status}" + (f": {state['error']}" if state["error"] else "")
              + f"; {hint}. Last lines of job {job.job_id}'s log:\n{log_tail(job)}",
              file=sys.stderr, flush=True)
