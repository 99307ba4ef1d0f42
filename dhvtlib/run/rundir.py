"""A run directory's safety: one writer at a time, graceful stops on signals, no stale temp files.

- `RunLock(out)`: an exclusive `flock` on `<out>/.lock` for the whole run. A second writer is refused with one
  sentence naming the holder (pid, host, start time). The kernel drops the lock when its process dies, so a lock
  left by a killed run is simply taken over; the file is removed when the run ends. Inside a submitit local job the
  file also names the job (`job`): local workers share one queue, so only the lock says which one took a run.
- `StopSignals()`: SIGINT (Ctrl-C), SIGTERM (what SLURM and most schedulers send first) and SIGUSR1 (a common
  requeue signal) ask the loop to stop at the next step boundary, with a resumable checkpoint. A second SIGINT
  interrupts at once; a second SIGTERM/SIGUSR1 is handled by the default action.
- `remove_stale_temp(out)`: temp files that a SIGKILL during an atomic write left behind.
- `read_manifest(out)`, `write_metrics(out, history)`, `summarize(history, best)`: the run's records (manifest.json;
  metrics.jsonl and .csv).
- `check_reuse(...)`: a run directory is never overwritten, and a run continues only with its own recipe (except
  `RECIPE_CHANGES_ON_RESUME` after a divergence, with change_recipe). A run stopped before its first checkpoint
  (`unstarted_recipe`) holds nothing to lose: it starts again with its own recipe, with or without resume.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as dt
import errno
import io
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from ..files import atomic_write
from ..recipe import Recipe, describe_diff, recipe_diff
from .runtime import in_kernel

__all__ = ["RunLock", "RunLockedError", "StopSignals", "RunInterrupted", "remove_stale_temp",
           "make_run_dir", "read_manifest", "write_metrics", "summarize", "summary_line", "check_reuse",
           "unstarted_recipe", "local_job", "WRITE_ERRORS", "RECIPE_CHANGES_ON_RESUME"]

LOCK_NAME = ".lock"
LOCAL_JOB_ENV = "SUBMITIT_LOCAL_JOB_ID"  # the submitit local job a process belongs to (its job_id)

# Write errors a run cannot fix by itself (dhvt-train ends them in one sentence; the last checkpoint stays).
WRITE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EROFS: "the file system is read-only", errno.EIO: "an input/output error"}


def local_job() -> dict[str, str]:
    """{'job': id} inside a submitit local job (whose workers share one queue, so the run's lock and its manifest's
    session say which worker took it), else {}."""
    job = os.environ.get(LOCAL_JOB_ENV)
    return {"job": job} if job else {}


# Recipe fields that may change when a diverged run is resumed from its last finite checkpoint on purpose.
RECIPE_CHANGES_ON_RESUME = frozenset({"lr", "clip_grad", "precision"})  # with change_recipe=True (after divergence)


class RunLockedError(RuntimeError):
    """Another live process holds the run directory's lock."""


class RunInterrupted(KeyboardInterrupt):
    """The run stopped at a step boundary after a signal (`signum`) and left a resumable checkpoint in `output`.
    IPython shows only the message (`_render_traceback_`), so an interrupted notebook cell ends in one sentence."""

    def __init__(self, signum: int, output: str | os.PathLike, message: str | None = None):
        self.signum, self.output = signum, str(output)
        super().__init__(message or f"stopped by {signal.Signals(signum).name} at a step boundary; resume with "
                         f"resume=True (--resume --output {output})")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


def make_run_dir(out: Path) -> bool:
    """Create the run directory (and parents); returns whether it was created. An unwritable place is one sentence."""
    existed = out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        reason = {**WRITE_ERRORS, errno.EACCES: "permission denied",
                  errno.ENOTDIR: "a path component is a regular file, not a folder",
                  errno.EEXIST: "a file of that name exists"}.get(e.errno, e.strerror or type(e).__name__)
        raise ValueError(f"cannot write the run directory {out} ({reason}); choose a writable output "
                         "(--output).") from None
    return not existed


class RunLock:
    """Exclusive lock on a run directory for as long as the `with` block runs (see the module docstring)."""

    def __init__(self, out: str | os.PathLike):
        self.path = Path(out) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl  # POSIX only: imported where it is used

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunLockedError(
                    f"{self.path.parent} is in use by another run ({holder}); wait for it to finish, or choose "
                    "another output directory.") from None
            # The file may have been removed (and recreated) by the previous holder between our open and flock.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **local_job()}
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl  # POSIX only: imported where it is used

        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}"


class StopSignals:
    """Within the block, SIGINT/SIGTERM/SIGUSR1 set `signum` (checked by the loop between steps) instead of killing
    the process. Only the main thread can install handlers; elsewhere the block does nothing."""

    SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None)

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def set(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = self.signum or signum
        old = self._old.get(signum)
        fallback = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        signal.signal(signum, old if callable(old) and old is not self._handle else fallback)
        again = "Ctrl-C again to interrupt at once" if signum == signal.SIGINT else "a second signal ends it at once"
        print(f"{signal.Signals(signum).name}: stopping after this step with a checkpoint ({again})",
              file=sys.stdout if in_kernel() else sys.stderr, flush=True)  # no red stderr block in a notebook

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()


def read_manifest(out: str | os.PathLike) -> dict[str, Any]:
    """A run directory's manifest.json, or {} when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(out) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl and metrics.csv (one row per epoch, columns in first-seen order), each written atomically."""
    with atomic_write(out / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in history)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in history for k in r)))
    w.writeheader()
    w.writerows(history)
    with atomic_write(out / "metrics.csv", "w") as f:
        f.write(buf.getvalue())


def remove_stale_temp(out: Path) -> list[str]:
    """Delete `.<name>.*.tmp` files left by an atomic write that was killed (call while holding the lock)."""
    removed = []
    for p in out.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p.name)
    return removed


def check_reuse(out: Path, previous: dict[str, Any], saved: dict[str, Any] | None, recipe: Recipe, resume: bool,
                 change_recipe: bool) -> dict[str, tuple[Any, Any]]:
    """Refuse to overwrite a run, or to continue one with another recipe; returns the allowed changes."""
    if not resume:
        if previous.get("status") == "completed" or (out / "checkpoint-last.pt").exists():
            raise FileExistsError(f"{out} already holds a run; pass resume=True (--resume) to continue it or choose "
                                  "another output directory.")
        saved = unstarted_recipe(out, previous)
        diff = recipe_diff(saved, recipe) if saved is not None else {}
        if diff:
            raise FileExistsError(f"{out} holds a run of another recipe that stopped before its first checkpoint "
                                  f"({describe_diff(diff)}); start it again with its own recipe, or choose another "
                                  "output directory.")
        return {}  # nothing trained yet: the run starts again from the beginning
    diff = recipe_diff(saved, recipe)
    if not diff:
        return {}
    if previous.get("status") == "completed":
        raise ValueError(f"{out} is a completed run of another recipe ({describe_diff(diff)}); a completed run is "
                         "never reopened: train the new recipe into another output directory.")
    if change_recipe and set(diff) <= RECIPE_CHANGES_ON_RESUME:
        return diff
    if change_recipe:
        raise ValueError(f"cannot resume {out} with {describe_diff(diff)}: only "
                         f"{', '.join(sorted(RECIPE_CHANGES_ON_RESUME))} may change on resume (change_recipe); "
                         "train the new recipe into another output directory.")
    hint = ("a run's cosine schedule is fixed by its epochs: train the new length into another output directory"
            if "epochs" in diff else
            "omit them (and the preset) to continue with the saved recipe; after a divergence, pass change_recipe="
            "True (--change-recipe) to continue with another lr, clip_grad or precision")
    raise ValueError(f"cannot resume {out}: the recipe differs in {sorted(diff)} ({describe_diff(diff)}); {hint}.")


def unstarted_recipe(out: Path, previous: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The saved recipe of a run that stopped (killed, preempted, failed) before its first checkpoint-last.pt and
    did not complete, or None. Such a run has nothing to resume: it starts again from the beginning."""
    previous = read_manifest(out) if previous is None else previous
    if (out / "checkpoint-last.pt").exists() or previous.get("status") == "completed":
        return None
    if isinstance(previous.get("config"), dict):
        return previous["config"]
    try:
        config = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def summary_line(m: dict[str, Any]) -> str:
    """The closing line of a completed run; a value that a hand-edited manifest spoiled is shown as it is."""
    def num(v: Any) -> str:
        return format(v, ".2f") if isinstance(v, (int, float)) and not isinstance(v, bool) else repr(v)

    epoch = m.get("best_epoch")
    epoch = epoch + 1 if isinstance(epoch, int) and not isinstance(epoch, bool) else epoch
    return (f"best top-1 {num(m.get('best_top1'))} (epoch {epoch}), final {num(m.get('final_top1'))}; "
            f"{m.get('wall_s')}s; run in {m.get('output')}")


def summarize(history: list[dict[str, Any]], best: dict[str, Any]) -> dict[str, Any]:
    """The manifest's outcome fields: best (max over evaluated epochs) and final accuracy, the data loader's and
    evaluation's time as fractions of training time."""
    evals = [r for r in history if "top1" in r]
    final = evals[-1] if evals else {}
    seen = best["epoch"] >= 0
    train_s = sum(r["epoch_s"] for r in history)
    return {"epochs_run": len(history), "best_top1": best["top1"] if seen else None,
            "best_top5": best["top5"] if seen else None, "best_epoch": best["epoch"] if seen else None,
            "final_top1": final.get("top1"), "final_top5": final.get("top5"),
            "final_ema_top1": final.get("ema_top1"),
            "data_overhead": (sum(r["data_s"] for r in history) / max(train_s, 1e-9) if history else None),
            # evaluation's seconds per training second (None where an evaluation was recorded without eval_s)
            "eval_overhead": (sum(r["eval_s"] for r in evals) / max(train_s, 1e-9)
                              if evals and all("eval_s" in r for r in evals) else None)}
