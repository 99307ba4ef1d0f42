"""The official GPUs' per-GPU statistics on any number of devices ("virtual GPUs").

The official scripts train on 2 GPUs: each GPU's DAFF BatchNorms saw its own per-GPU batch (plain BatchNorm2d),
Mixup drew its lambda per GPU (each rank calls timm's Mixup on its own batch), and SOPE's BatchNorm was synchronised
(SyncBatchNorm: statistics over the total batch). `Recipe.virtual_gpus = V` reproduces this with W processes:
each process's batch is split into G = V / W groups of `per_gpu_batch` images; DAFF's BatchNorms (SplitBatchNorm2d)
and Mixup work per group, SOPE's BatchNorm over the process's batch (synchronised over processes under DDP on
CUDA). Group g of a batch is items g, g + G, ...: with the sampler's rank::world_size sharding these are exactly the
images official GPU (rank + W * g) sees at that step. The running statistics kept are group 0's (rank 0's, which
the official code saves and evaluates). V = 1 turns it off.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .models.layers import SplitBatchNorm2d

__all__ = ["groups_per_process", "set_bn_splits", "GroupMixup", "use_virtual_gpus"]


def groups_per_process(virtual_gpus: int, world_size: int) -> int:
    """How many virtual GPUs each of `world_size` processes holds (1 when virtual_gpus is 1: off)."""
    if virtual_gpus == 1:
        return 1
    if virtual_gpus % world_size:
        raise ValueError(f"virtual_gpus {virtual_gpus} cannot be shared by {world_size} processes; use a multiple "
                         f"of {world_size} (each process then holds virtual_gpus / {world_size} GPUs) or 1 (off).")
    return virtual_gpus // world_size


def set_bn_splits(model: nn.Module, groups: int) -> int:
    """Split every DAFF BatchNorm (SplitBatchNorm2d) of `model` into `groups` per-GPU groups; SOPE's BatchNorms are
    plain BatchNorm2d/SyncBatchNorm and keep whole-batch statistics. Returns how many layers were set."""
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups {groups!r} must be a positive integer (1: whole-batch statistics).")
    layers = [m for m in model.modules() if isinstance(m, SplitBatchNorm2d)]
    for m in layers:
        m.num_splits = groups
    return len(layers)


class GroupMixup:
    """Calls `mixup` (timm's Mixup, batch mode) once per group of interleaved items g::G, so each group draws its
    own lambda and mixes only within itself, as each official GPU does with its own batch."""

    def __init__(self, mixup: Callable, groups: int):
        self.mixup, self.groups = mixup, groups

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.groups
        if x.shape[0] % g:
            raise ValueError(f"a batch of {x.shape[0]} images cannot be split into {g} per-GPU groups for Mixup; "
                             f"use a batch size divisible by {g}.")
        parts = [self.mixup(x[i::g].contiguous(), y[i::g]) for i in range(g)]
        xs = torch.stack([p[0] for p in parts], dim=1).flatten(0, 1)  # back to item order i*g + group
        ys = torch.stack([p[1] for p in parts], dim=1).flatten(0, 1)
        return xs, ys


def use_virtual_gpus(model: nn.Module, mixup_fn: Callable | None, virtual_gpus: int,
                     world_size: int = 1) -> tuple[Callable | None, int]:
    """Set up `model` and `mixup_fn` for `virtual_gpus` official GPUs over `world_size` processes; returns the
    mixup function to use and the number of groups per process."""
    groups = groups_per_process(virtual_gpus, world_size)
    set_bn_splits(model, groups)
    if mixup_fn is not None and groups > 1:
        mixup_fn = GroupMixup(mixup_fn, groups)
    return mixup_fn, groups
