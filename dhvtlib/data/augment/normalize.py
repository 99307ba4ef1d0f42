"""ToTensor + Normalize on a batch: uint8 (or 0..255 float) [B, C, H, W] -> float32 (x / 255 - mean) / std."""
from __future__ import annotations

from typing import Sequence

import torch

from .images import _check_images


def _stats(values: Sequence[float], channels: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() != channels:
        raise ValueError(f"{name} has {t.numel()} values but the images have {channels} channels; pass one value "
                         f"per channel.")
    return t.view(1, channels, 1, 1)


def normalize_batch(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (or 0..255 float) [B, C, H, W] -> float32 (x / 255 - mean) / std, bitwise as ToTensor + Normalize."""
    _check_images(x)
    m = _stats(mean, x.shape[1], "mean").to(x.device)
    s = _stats(std, x.shape[1], "std").to(x.device)
    return x.to(torch.float32).div(255.0).sub(m).div(s)

