"""Running the project's command-line tools in a subprocess, as a user would, shared by the tests; delivering a
real signal to a training process at an exact step (the process signals itself from a wrapped step hook); and
reading back the per-epoch metrics a run wrote."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# `python -c` driver: install `signal_at`, then run dhvt-train's main with the remaining arguments.
# metrics.jsonl's wall-clock columns: the only values that differ between two runs that are otherwise bitwise equal
TIMINGS = ("epoch_s", "img_s", "data_s", "compute_s", "eval_s")

_DRIVER = ("import sys; sys.path.insert(0, {tests!r}); from clitools import signal_at; "
           "signal_at(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]); "
           "from dhvtlib.run.train import main; main(sys.argv[4:])")


def run_module(*args: str, env: dict | None = None, module: str = "dhvtlib.run", timeout: int = 240,
               signal_after: tuple[int, int, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m module args` from the project root with one OpenMP thread (and `env` on top). With
    `signal_after=(epoch, step, "TERM")` dhvt-train sends itself SIGTERM right after that step (0-based epoch)."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if signal_after:
        cmd = ["-c", _DRIVER.format(tests=str(TESTS)), *map(str, signal_after)]
    else:
        cmd = ["-m", module]
    return subprocess.run([sys.executable, *cmd, *args], cwd=ROOT, env=e, capture_output=True, text=True,
                          timeout=timeout)


def read_metrics(out: str | os.PathLike, *, timings: bool = False) -> list[dict]:
    """The rows of run directory `out`'s metrics.jsonl, one per epoch, without the TIMINGS columns unless `timings`
    (so that an interrupted and resumed run compares equal to an uninterrupted one)."""
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return rows if timings else [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def signal_at(epoch: int, step: int, name: str, patch=setattr) -> None:
    """In this process: after optimizer step `step` of epoch `epoch` (and any checkpoint the run takes there),
    `dhvtlib.run.train` receives a real SIG<name> (INT, TERM, KILL, ...). `patch=monkeypatch.setattr` undoes it with
    the test."""
    from dhvtlib.run import train

    real = train.train_one_epoch

    def wrapped(*args, on_step=None, epoch: int = 0, **kwargs):
        def hook(state):
            if on_step is not None:
                on_step(state)
            if (epoch, state.step) == target:
                os.kill(os.getpid(), getattr(signal, "SIG" + name))
        return real(*args, on_step=hook, epoch=epoch, **kwargs)

    target = (epoch, step)
    patch(train, "train_one_epoch", wrapped)


def signal_cell(epoch: int, step: int, name: str) -> str:
    """The same as a notebook cell's source (for a kernel started by papermill)."""
    return (f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom clitools import signal_at\n"
            f"signal_at({epoch}, {step}, {name!r})")
