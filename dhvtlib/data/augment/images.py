"""Conventions shared by the batch ops: image batches are [B, C, H, W] with C = 1 or 3, per-sample values
broadcast as [B, 1, 1, 1], and coordinates and LUTs are computed in float64 as Pillow does (float32 on MPS)."""
from __future__ import annotations

import torch


def _hp_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (Pillow computes coordinates and LUTs in double), else float32."""
    return torch.float32 if device.type == "mps" else torch.float64


def _col(t: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, 1, 1, 1] for per-sample broadcasting."""
    return t.reshape(-1, 1, 1, 1)


def _check_images(x: torch.Tensor, name: str = "images") -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be a [B, C, H, W] batch, got shape {tuple(x.shape)}; add a batch dimension.")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{name} have {x.shape[1]} channels; only 1 (greyscale) or 3 (RGB) are supported.")

