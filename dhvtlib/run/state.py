"""A training run's checkpoint, in one file: what it holds (`RunState.state_dict()`, restored by
`load_state_dict()`, so saving and resuming cannot list different pieces of state), when it is written
(`Checkpoints`: steps, minutes, epoch ends, a new best, stops; never with non-finite weights) and the write itself
(`save_checkpoint`: one torch.save, written all-or-nothing by `dhvtlib.files.atomic_write`), with the RNG states
it carries. Reading a checkpoint safely (weights_only) is `dhvtlib.checkpoint.load_checkpoint`."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint import nonfinite_tensors
from ..files import atomic_write
from ..recipe import Recipe
from .loop import EpochState, NonFiniteLossError
from .runtime import Dist, now

__all__ = ["RunState", "Checkpoints", "NO_BEST", "raise_if_nonfinite", "resume_hint", "save_checkpoint",
           "rng_state", "set_rng_state", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "dhvtlib-checkpoint-v1"
NO_BEST = {"top1": -1.0, "top5": 0.0, "epoch": -1}  # before any evaluation


@dataclasses.dataclass
class RunState:
    """The run's model, optimiser, schedule, scaler, EMA and RNGs, and where it stands: `epoch` is the epoch to run
    next (0-based) and `epoch_state` the running totals inside it when a checkpoint stops mid-epoch."""
    recipe: Recipe
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any                                   # timm CosineLRScheduler, stepped once per epoch
    precision: str                                   # what was used: fp32 | bf16 | fp16 (never "auto")
    scaler: torch.amp.GradScaler | None = None       # fp16 only
    ema: Any = None                                  # timm ModelEmaV3 when recipe.model_ema
    generators: dict[str, torch.Generator] = dataclasses.field(default_factory=dict)  # the augmentation RNGs
    epoch: int = 0
    epoch_state: EpochState | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one metrics row per epoch run
    best: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(NO_BEST))
    started: str = dataclasses.field(default_factory=now)
    wall_before: float = 0.0                          # seconds run before this process resumed
    recipe_changes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    clock: float = dataclasses.field(default_factory=time.perf_counter)  # when this process's share began
    cpu_before: float | None = 0.0                    # CPU seconds before this resume (None: a checkpoint without)
    cpu_clock: float = dataclasses.field(default_factory=time.process_time)
    sessions: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # earlier processes' shares
    session: dict[str, Any] = dataclasses.field(default_factory=dict)  # this process: who ran it, from where

    def share(self) -> tuple[float, float]:
        """(wall, CPU) seconds of this process's share so far: since `start_session`."""
        return time.perf_counter() - self.clock, time.process_time() - self.cpu_clock

    @property
    def wall_s(self) -> float:
        return self.wall_before + self.share()[0]

    @property
    def cpu_s(self) -> float | None:
        """This process's CPU time (all its threads, user + system; not data-loader worker processes), summed over
        resumes: the compute a run cost, unaffected by other load or by pauses, unlike wall_s. None when resumed
        from a checkpoint written before it was recorded."""
        return None if self.cpu_before is None else self.cpu_before + self.share()[1]

    @property
    def position(self) -> list[int]:
        """[epoch to run next, step inside it]: where the run stands."""
        return [self.epoch, self.epoch_state.step if self.epoch_state else 0]

    def start_session(self, **who: Any) -> None:
        """This process's share begins now, from the current position: its wall and CPU clocks, and `who` ran it
        (commit, versions, hardware, precision), kept per session because a run may resume on another machine or
        under another commit."""
        self.clock, self.cpu_clock = time.perf_counter(), time.process_time()
        # through JSON: plain types only (torch.__version__ is a str subclass that weights_only loading refuses)
        self.session = json.loads(json.dumps({"started": now(), "start": self.position, **who}))

    def session_records(self) -> list[dict[str, Any]]:
        """Every process's share so far, this one's up to now: when, from which position to which, wall and CPU
        seconds, and who ran it. Their wall_s (and cpu_s, where known) add up to the run's."""
        if not self.session:
            return list(self.sessions)
        wall, cpu = self.share()
        return [*self.sessions, {**self.session, "end": self.position, "last": now(), "wall_s": round(wall, 1),
                                 "cpu_s": round(cpu, 1)}]

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: tensors and primitives only (loadable with weights_only=True)."""
        return {"model": self.model.state_dict(), "model_name": self.recipe.model, "model_config": self.model.config,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "ema": self.ema.module.state_dict() if self.ema is not None else None,
                "rng": rng_state(self.generators),
                "epoch": self.epoch, "epoch_state": self.epoch_state.to_dict() if self.epoch_state else None,
                "history": self.history, "best": self.best, "config": self.recipe.to_dict(),
                "precision": self.precision, "data_config": self.model.data_config, "started": self.started,
                "recipe_changes": self.recipe_changes, "wall_s": self.wall_s, "cpu_s": self.cpu_s,
                "sessions": self.session_records()}

    def load_state_dict(self, ck: dict[str, Any], rank: int = 0) -> None:
        """Continue from checkpoint `ck`; `rank` picks this process's RNG state when every rank's was saved."""
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        if self.ema is not None and ck.get("ema") is not None:
            self.ema.module.load_state_dict(ck["ema"])
        self.history, self.best = list(ck["history"]), dict(ck["best"])
        self.epoch = ck["epoch"]
        self.epoch_state = EpochState(**ck["epoch_state"]) if ck.get("epoch_state") else None
        self.started, self.wall_before = ck.get("started", self.started), ck.get("wall_s", 0.0)
        self.cpu_before = ck.get("cpu_s")
        self.sessions = list(ck["sessions"]) if "sessions" in ck else _unrecorded_sessions(ck, self.position)
        self.recipe_changes = list(ck.get("recipe_changes", []))
        set_rng_state(ck["rng"][rank] if isinstance(ck["rng"], list) else ck["rng"], self.generators)

    def add_epoch(self, row: dict[str, Any]) -> bool:
        """Record a finished epoch's metrics row; True when it is a new best top-1."""
        self.history.append(row)
        self.epoch, self.epoch_state = row["epoch"] + 1, None
        if "top1" in row and row["top1"] > self.best["top1"]:
            self.best = {"top1": row["top1"], "top5": row["top5"], "epoch": row["epoch"]}
            return True
        return False

    def nonfinite(self) -> list[str]:
        """Names of the model's (and EMA's) tensors holding NaN or infinity."""
        ema = self.ema.module.state_dict() if self.ema is not None else None
        return nonfinite_tensors(self.model.state_dict(), ema)


def _unrecorded_sessions(ck: dict[str, Any], end: list[int]) -> list[dict[str, Any]]:
    """A checkpoint written before sessions were recorded (at position `end`): its time so far as one session of
    unknown provenance."""
    if not ck.get("wall_s"):
        return []
    return [{"started": ck.get("started"), "start": None, "end": end, "last": None, "wall_s": round(ck["wall_s"], 1),
             "cpu_s": None if ck.get("cpu_s") is None else round(ck["cpu_s"], 1), "git_commit": None,
             "note": "written before sessions were recorded: who ran it is unknown"}]


# ------------------------------------------------------------------------------------------------ checkpoints
class Checkpoints:
    """checkpoint-last.pt every `checkpoint_every_steps` steps and every `checkpoint_every_minutes` (rank 0's clock
    decides, so every rank checkpoints at the same step), at the end of every `checkpoint_every_epochs`-th epoch,
    every evaluated epoch and the last one, and on a stop; checkpoint-best.pt at a new best. Never with non-finite
    weights: then the last finite checkpoint stays."""

    def __init__(self, rs: RunState, out: Path, d: Dist, dev: torch.device):
        self.rs, self.out, self.d, self.dev = rs, out, d, dev
        self.saved_at = time.monotonic()

    def save(self, path: Path | None = None) -> None:
        raise_if_nonfinite(self.rs, self.out)
        self.saved_at = time.monotonic()
        ck = self.rs.state_dict()
        if self.d.world_size > 1:  # every rank's RNG state, gathered to rank 0
            rngs: list[Any] = [None] * self.d.world_size
            dist.all_gather_object(rngs, ck["rng"])
            ck["rng"] = rngs
        if self.d.main:
            save_checkpoint(ck, path or self.out / "checkpoint-last.pt")

    def after_epoch(self, row: dict[str, Any]) -> bool:
        """Record the finished epoch's `row`; checkpoint-best.pt at a new best, checkpoint-last.pt when due. True when
        checkpoint-last.pt was written (the metrics files follow it)."""
        rs = self.rs
        if rs.add_epoch(row):
            self.save(self.out / "checkpoint-best.pt")
        done = rs.epoch
        if done % rs.recipe.checkpoint_every_epochs and done < rs.recipe.epochs and "top1" not in row:
            return False  # not due: the history stays in memory (and in the next checkpoint)
        self.save()
        return True

    def after_step(self, state: EpochState) -> None:
        """engine's on_step: a mid-epoch checkpoint when one is due."""
        self.rs.epoch_state = state
        every = self.rs.recipe.checkpoint_every_steps
        if (every and state.step % every == 0) or self._due():
            self.save()

    def _due(self) -> bool:
        minutes = self.rs.recipe.checkpoint_every_minutes
        if not minutes:
            return False
        flag = time.monotonic() - self.saved_at >= 60 * minutes
        if self.d.world_size > 1:
            t = torch.tensor([float(flag)], device=self.dev)
            dist.broadcast(t, 0)
            flag = bool(t.item())
        return flag


def raise_if_nonfinite(rs: RunState, out: Path) -> None:
    """NonFiniteLossError naming where the run is, when the weights (or EMA) hold NaN or infinity."""
    bad = rs.nonfinite()
    if bad:
        step = rs.epoch_state.step if rs.epoch_state else None
        where = f"epoch {rs.epoch + 1}" + (f", step {step}" if step is not None else "")
        raise NonFiniteLossError(f"the weights became non-finite in {where} ({len(bad)} tensors, e.g. {bad[0]}); "
                                 f"the run stopped and keeps its last finite checkpoint ({resume_hint(out)}).")


def resume_hint(out: Path) -> str:
    """How to continue a diverged run from its last finite checkpoint."""
    return (f"to continue from it: dhvt-train --resume --output {out} --change-recipe --precision fp32 "
            "--clip-grad 1.0 (or bf16 on a GPU; fp16 overflows again from the same weights), with a lower --lr if "
            "needed, or run(..., resume=True, change_recipe=True, precision='fp32', clip_grad=1.0); if it diverges "
            "again, copy checkpoint-best.pt over checkpoint-last.pt to restart from that earlier epoch")


# ---------------------------------------------------------------------------------------------- the file
def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Save a training checkpoint atomically (see `atomic_write`)."""
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buf)
    with atomic_write(path) as f:
        f.write(buf.getbuffer())


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG the training loop draws from, in a weights_only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
             "generators": {k: g.get_state() for k, g in (generators or {}).items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    for k, g in (generators or {}).items():
        g.set_state(state["generators"][k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
