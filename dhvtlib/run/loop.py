"""The loop and nothing else: `train_one_epoch` and `evaluate` (DeiT's engine.py, device- and launcher-agnostic).

Batches come from any iterable of (images, labels) already on the device; mixup, autocast, the grad scaler, EMA and
gradient clipping are optional arguments. Under DDP the per-step loss and the evaluation counts are all-reduced, so
every rank sees the same numbers (and stops together on a non-finite loss) and evaluation over uneven shards is exact.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["EpochState", "NonFiniteLossError", "StopRequested", "train_one_epoch", "evaluate", "autocast"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


class StopRequested(Exception):
    """Raised between steps when a stop (Ctrl-C) was requested on any rank; `state` is the epoch's totals after the
    last completed step, for the caller's checkpoint."""

    def __init__(self, state: "EpochState"):
        super().__init__("stop requested")
        self.state = state


@dataclass
class EpochState:
    """Running totals of one epoch, saved in mid-epoch checkpoints so that a resumed epoch ends identically."""
    step: int = 0
    loss_sum: float = 0.0
    samples: int = 0
    data_s: float = 0.0
    compute_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA, fp16 autocast on CUDA, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _any_rank(flag: bool, device: torch.device) -> bool:
    if not _distributed():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def train_one_epoch(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, *, device: torch.device, precision: str = "fp32",
                    mixup_fn: Callable | None = None, ema: Any = None, scaler: torch.amp.GradScaler | None = None,
                    clip_grad: float | None = None, state: EpochState | None = None, epoch: int = 0,
                    on_step: Callable[[EpochState], None] | None = None,
                    stop_requested: Callable[[], bool] = lambda: False, progress: Any = None,
                    train_mode: bool = True) -> EpochState:
    """One pass over `batches`; returns the epoch's running totals (continuing `state` when resuming mid-epoch).

    `on_step(state)` runs after every optimizer step (mid-epoch checkpoints); then `stop_requested()` is checked
    (agreed over all ranks) and StopRequested raised. `train_mode=False` keeps BatchNorm and drop path in eval mode
    (the official fine-tuning quirk).
    """
    state = state or EpochState()
    model.train(train_mode)
    it = iter(batches)
    while True:
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        if mixup_fn is not None:
            x, y = mixup_fn(x, y)
        with autocast(device, precision):
            loss = criterion(model(x), y)
        loss_value = loss.detach().float()
        if _distributed():
            loss_value = loss_value.clone()
            dist.all_reduce(loss_value)
            loss_value /= dist.get_world_size()
        loss_value = loss_value.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"the training loss is {loss_value} at epoch {epoch}, step {state.step}; the "
                                     "run stopped and keeps its last good checkpoint: lower lr, use precision="
                                     "'fp32' or set clip_grad.")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
        if ema is not None:
            ema.update(model.module if hasattr(model, "module") else model)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        n = x.shape[0]
        state.step += 1
        state.loss_sum += loss_value * n
        state.samples += n
        state.data_s += t1 - t0
        state.compute_s += time.perf_counter() - t1
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
        if on_step is not None:
            on_step(state)
        if _any_rank(stop_requested(), device):
            raise StopRequested(state)
    return state


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, device: torch.device,
             precision: str = "fp32") -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy over `batches`; exact under DDP with uneven shards
    (counts are summed over ranks, no padding)."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, correct@1, correct@5, n
    for x, y in batches:
        with autocast(device, precision):
            logits = model(x)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top == y[:, None]
        totals += torch.stack([nn.functional.cross_entropy(logits, y, reduction="sum").double(),
                               hit[:, 0].sum().double(), hit.any(dim=1).sum().double(),
                               torch.tensor(float(y.numel()), dtype=torch.float64, device=device)])
    if _distributed():
        dist.all_reduce(totals)
    loss_sum, c1, c5, n = totals.tolist()
    if n == 0:
        raise ValueError("the evaluation set is empty; check the data set and test_samples_per_class.")
    return {"test_loss": loss_sum / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "test_images": int(n)}
