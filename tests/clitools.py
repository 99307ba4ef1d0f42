"""Running the project's command-line tools in a subprocess, as a user would, shared by the tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_module(*args: str, env: dict | None = None, module: str = "dhvtlib.train", timeout: int = 240
               ) -> subprocess.CompletedProcess:
    """`python -m module args` from the project root with one OpenMP thread (and `env` on top)."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=e, capture_output=True, text=True,
                          timeout=timeout)
