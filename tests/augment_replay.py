"""One RandAugment op by name on a batch (`apply_op`, as timm's `NAME_TO_OP[name]` on one image): what
test_augment.py compares with timm's PIL ops, op by op. BatchAugment does not use it (it groups the samples by op,
see dhvtlib/data/augment/batch.py); it was dhvtlib/data/augment/single_op.py."""
from __future__ import annotations

from typing import Sequence

import torch

from dhvtlib.data.augment.color import COLOR_OPS
from dhvtlib.data.augment.geometric import GEOMETRIC_OPS, OP_AXES, affine, op_matrix
from dhvtlib.data.augment.images import check_images
from dhvtlib.data.augment.randaugment import ALL_OPS


def apply_op(name: str, x: torch.Tensor, arg: torch.Tensor | float | None = None, *,
             fill: Sequence[float] | None = None, interpolation: str = "bicubic") -> torch.Tensor:
    """Apply timm op `name` with its argument (the level_to_arg output; scalar or per-sample [N]) to a batch.

    `x` is uint8 or float 0..255 [N, C, H, W]; returns float32 with integer values, like the PIL image timm's
    `NAME_TO_OP[name](img, arg, fillcolor=fill, resample=...)` returns. `fill` defaults to 128 (timm's _FILL).
    Pass tensor arguments as float64 (Python floats are): float32 factors shift Pillow's truncations.
    """
    check_images(x)
    xf = x.to(torch.float32)
    n = xf.shape[0]
    a = torch.as_tensor(0.0 if arg is None else arg, dtype=torch.float64).flatten()
    if a.numel() == 1:
        a = a.expand(n)
    if name in GEOMETRIC_OPS:
        return affine(xf, op_matrix(name, a, xf.shape[2], xf.shape[3]), 128.0 if fill is None else fill,
                      interpolation, OP_AXES[name])
    if name not in COLOR_OPS:
        raise ValueError(f"RandAugment op {name!r} is not supported; use one of {ALL_OPS}.")
    return COLOR_OPS[name](xf, a.to(xf.device))
