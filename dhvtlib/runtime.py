"""Where a run executes: its processes (torchrun), device, seeds, CPU workers, and the record of versions,
hardware and git commit that every run and benchmark writes beside its numbers."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from . import __version__

__all__ = ["Dist", "resolve_device", "init_distributed", "check_replicas_in_sync", "seed_everything", "cpu_workers",
           "git_state", "environment", "now"]


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
    """(commit, dirty) of the checkout holding the package; (None, None) outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def environment(device: torch.device) -> dict[str, Any]:
    """{'versions': {...}, 'hardware': {...}} as recorded in every manifest and benchmark."""
    import timm
    import torchvision

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "timm": timm.__version__, "dhvtlib": __version__,
                         "numpy": np.__version__},
            "hardware": {"cpu": cpu, "threads": torch.get_num_threads(), "platform": platform.platform(),
                         "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None}}


def now() -> str:
    """UTC time to the second, ISO 8601."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
