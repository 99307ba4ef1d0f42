"""Where a run executes: its processes (torchrun), device, numeric precision, seeds, CPU workers, and the record of
versions, hardware and git commit that every run and benchmark writes beside its numbers.

Precision is decided here and nowhere else: `resolve_precision(requested, device, resumed) -> (chosen, reason)`.

`precision="auto"` (every default: Recipe, dhvt-train, dhvt-eval, benchmarks) picks
  - CUDA: fp16 autocast + grad scaler, the official AMP (the official engine trains and evaluates under
    `torch.cuda.amp.autocast` with timm's NativeScaler); pass precision='bf16' for bf16 autocast;
  - a CPU with native bf16 (AMX, AVX512-BF16, or Arm's BF16 extension): bf16 autocast;
  - anything else (a CPU without native bf16, where bf16 is emulated and many times slower; other devices): fp32.
An explicit 'fp32', 'bf16' or 'fp16' is used as given. A resumed run keeps the precision it started with.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.distributed as dist
import torchvision

from .. import __version__
from ..recipe import PRECISIONS, Recipe, check_precision

__all__ = ["Dist", "resolve_device", "init_distributed", "check_replicas_in_sync", "seed_everything", "cpu_workers",
           "git_state", "read_git_state", "environment", "now", "in_kernel", "PRECISIONS", "resolve_precision",
           "keep_precision", "cpu_bf16_capability"]


@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cpu', 'cuda', 'cuda:N' and 'mps' are checked against
    what this torch build and machine have, with one sentence when they cannot work."""
    name = str(device).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps.")
    if kind == "cuda" and not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        raise ValueError(f"device {device!r} was asked for but no CUDA GPU is visible ({build}); use device='auto' "
                         "or 'cpu'.")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} GPU(s) are visible.")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} was asked for but MPS is not available here; use device='auto' or 'cpu'.")
    return name


def init_distributed(device: str) -> tuple[Dist, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: NCCL on CUDA, gloo on CPU. A plain launch is one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device)
    if world == 1:
        return Dist(), torch.device(device)
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    dev = torch.device("cuda", d.local_rank) if device.startswith("cuda") else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return d, dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cpu_workers(asked: int) -> int:
    """DataLoader workers for file data sets: the asked count, at most the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(asked, cpus))


def check_replicas_in_sync(model: torch.nn.Module) -> None:
    """DDP keeps replicas equal; verify it (cheap: one all-reduce of a checksum)."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    mine = torch.stack([flat.sum(), flat.abs().sum()]).double()
    ref = mine.clone()
    dist.broadcast(ref, 0)
    if not torch.equal(mine, ref):
        raise RuntimeError(f"DDP replicas diverged on rank {dist.get_rank()}; report this with the run directory.")


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code this process runs: the checkout holding the package as it was when this module
    was imported, so that a checkout changed under a running process (a `git checkout` while a study's worker
    starts, a notebook kernel left open) does not relabel the code that runs; (None, None) outside git."""
    return _GIT_AT_IMPORT


def read_git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding the package now; (None, None) outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


_GIT_AT_IMPORT = read_git_state()


def environment(device: torch.device) -> dict[str, Any]:
    """{'versions': {...}, 'hardware': {...}} as recorded in every manifest and benchmark."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "timm": timm.__version__, "dhvtlib": __version__,
                         "numpy": np.__version__},
            "hardware": {"cpu": cpu, "cpu_bf16": cpu_bf16_capability()[1],  # the model name hides AVX2 vs AVX512-BF16
                         "threads": torch.get_num_threads(), "platform": platform.platform(),
                         "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None}}


def now() -> str:
    """UTC time to the second, ISO 8601."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def in_kernel() -> bool:
    """True inside a Jupyter (IPython) kernel, whoever started it."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


# ------------------------------------------------------------------------------------------------ precision
_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16", "sve_bf16", "svebf16")  # x86 (AMX, AVX512), Arm


def cpu_bf16_capability() -> tuple[bool, str]:
    """(native bf16 on this CPU, the flags that say so, or a description of what the CPU has instead)."""
    flags: set[str] = set()
    caps_fn = getattr(getattr(torch, "cpu", None), "get_capabilities", None)  # torch >= 2.9
    if caps_fn is not None:
        flags = {k for k, v in caps_fn().items() if v is True}
    else:
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
    native = [f for f in _NATIVE_BF16_FLAGS if f in flags]
    if native:
        return True, "native bf16 (" + ", ".join(native) + ")"
    best = next((f for f in ("avx512_f", "avx512f", "avx2", "avx", "neon", "asimd") if f in flags), None)
    return False, f"no native bf16 ({best or 'no'} SIMD only: bf16 would be emulated)"


def resolve_precision(requested: str, device: torch.device | str, resumed: str | None = None) -> tuple[str, str]:
    """The precision to run in ('fp32', 'bf16' or 'fp16') and one sentence saying why.

    `resumed` is the precision a run being resumed used: 'auto' keeps it, so that a run continues as it started."""
    check_precision(requested)
    device = torch.device(device)
    if requested != "auto":
        return requested, f"requested precision={requested!r}"
    if resumed in PRECISIONS[1:]:
        return resumed, f"auto: the resumed run keeps the precision it started with ({resumed})"
    if device.type == "cuda":
        return "fp16", "auto on CUDA: the official AMP (fp16 autocast + grad scaler); pass precision='bf16' for bf16"
    if device.type == "cpu":
        native, what = cpu_bf16_capability()
        return ("bf16" if native else "fp32"), f"auto on CPU: {what}"
    return "fp32", f"auto on {device.type}: fp32 (no mixed-precision default for this device)"


def keep_precision(recipe: Recipe, saved: dict[str, Any] | None) -> Recipe:
    """The recipe a resumed run continues with: 'auto' takes the precision its saved recipe asked for (the resolved
    one, 'auto' included, is `resolve_precision`'s `resumed`), so a run continues as it started."""
    if saved and recipe.precision == "auto" and saved.get("precision", "auto") != "auto":
        return dataclasses.replace(recipe, precision=saved["precision"])
    return recipe
