"""What the batch ops share: image batches are [B, C, H, W] with C = 1 or 3 (`check_images`), per-sample values
broadcast as [B, 1, 1, 1] (`per_sample`), coordinates and LUTs computed in float64 as Pillow does (float32 on MPS,
`hp_dtype`); and ToTensor + Normalize on a batch (`normalize_batch`)."""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["check_images", "hp_dtype", "normalize_batch", "per_sample"]


def hp_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (Pillow computes coordinates and LUTs in double), else float32."""
    return torch.float32 if device.type == "mps" else torch.float64


def per_sample(t: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, 1, 1, 1] for per-sample broadcasting."""
    return t.reshape(-1, 1, 1, 1)


def check_images(x: torch.Tensor, name: str = "images") -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be a [B, C, H, W] batch, got shape {tuple(x.shape)}; add a batch dimension.")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{name} have {x.shape[1]} channels; only 1 (greyscale) or 3 (RGB) are supported.")


# ---------------------------------------------------------------------------------- ToTensor + Normalize

def _stats(values: Sequence[float], channels: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() != channels:
        raise ValueError(f"{name} has {t.numel()} values but the images have {channels} channels; pass one value "
                         f"per channel.")
    return t.view(1, channels, 1, 1)


def normalize_batch(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (or 0..255 float) [B, C, H, W] -> float32 (x / 255 - mean) / std, bitwise as ToTensor + Normalize."""
    check_images(x)
    m = _stats(mean, x.shape[1], "mean").to(x.device)
    s = _stats(std, x.shape[1], "std").to(x.device)
    return x.to(torch.float32).div(255.0).sub(m).div(s)

