"""Everything random about one batch, as CPU tensors: `BatchAugment.sample` draws it, `BatchAugment.apply` uses it."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RandAugmentLayer:
    """One RandAugment layer's draws for a batch (CPU tensors, [B])."""

    op: torch.Tensor  # long index into the config's op list
    applied: torch.Tensor  # bool: passed the p=0.5 coin
    magnitude: torch.Tensor  # float64, after noise and clipping
    arg: torch.Tensor  # float64 op argument (level_to_arg output; 0 for AutoContrast/Equalize/Invert)
    bicubic: torch.Tensor  # bool: resample choice (used only with interpolation='random')


@dataclass
class AugmentParams:
    """Everything random about one batch, all on the CPU."""

    crop: torch.Tensor | None  # 'pad': [B, 2] (top, left) in the padded image; 'rrc': [B, 4] (top, left, h, w)
    flip: torch.Tensor  # [B] bool
    layers: list[RandAugmentLayer] = field(default_factory=list)
    erase: torch.Tensor | None = None  # [B] bool, True where a box is erased
    erase_box: torch.Tensor | None = None  # [B, 4] long (top, left, h, w)
    noise: torch.Tensor | None = None  # [sum of C*h*w over erased samples] N(0, 1), sample-major, then (C, h, w)
