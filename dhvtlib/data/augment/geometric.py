"""RandAugment's geometric ops (Rotate, ShearX/Y, TranslateX/YRel) as Pillow computes them: each op's affine
data [N, 6] (`op_matrix`) and Pillow's AFFINE transform replayed on a float batch [N, C, H, W] (`affine`)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .images import hp_dtype

GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
OP_AXES = {"Rotate": "xy", "ShearX": "x", "TranslateXRel": "x", "ShearY": "y", "TranslateYRel": "y"}
AXES = ("xy", "x", "y")


def op_matrix(name: str, arg: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow affine data [N, 6] (x_in = a x + b y + c, y_in = d x + e y + f) of timm's geometric op."""
    a = arg.to(torch.float64)
    n = a.shape[0]
    m = torch.zeros(n, 6, dtype=torch.float64)
    m[:, 0] = 1.0
    m[:, 4] = 1.0
    if name == "ShearX":
        m[:, 1] = a
    elif name == "ShearY":
        m[:, 3] = a
    elif name == "TranslateXRel":
        m[:, 2] = a * width
    elif name == "TranslateYRel":
        m[:, 5] = a * height
    elif name == "Rotate":  # Image.rotate(expand=False, center=None): Pillow's own matrix, rounded as Pillow does
        ang = -(a * (math.pi / 180.0))
        cos, sin = torch.round(torch.cos(ang), decimals=15), torch.round(torch.sin(ang), decimals=15)
        cx, cy = width / 2, height / 2
        m[:, 0], m[:, 1], m[:, 3], m[:, 4] = cos, sin, -sin, cos
        m[:, 2] = cos * -cx + sin * -cy + 0.0 + cx
        m[:, 5] = -sin * -cx + cos * -cy + 0.0 + cy
    else:
        raise ValueError(f"op {name!r} is not geometric; geometric ops are {GEOMETRIC_OPS}.")
    return m


def _cubic(v1: torch.Tensor, v2: torch.Tensor, v3: torch.Tensor, v4: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Pillow's BICUBIC macro (Geometry.c, a = -1), evaluated in the same order."""
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def _interp(t: torch.Tensor, d: torch.Tensor, interpolation: str) -> torch.Tensor:
    """Pillow's 1-D interpolation along dim 1 of t (2 or 4 taps), in its evaluation order."""
    if interpolation == "bilinear":
        return t[:, 0] + (t[:, 1] - t[:, 0]) * d
    return _cubic(t[:, 0], t[:, 1], t[:, 2], t[:, 3], d)


def affine(x: torch.Tensor, matrix: torch.Tensor, fill: Sequence[float] | torch.Tensor,
           interpolation: str = "bicubic", axes: str = "xy") -> torch.Tensor:
    """Pillow's `Image.transform(AFFINE, data, resample, fillcolor)` for a float batch of 0..255 integer values.

    `matrix` [N, 6] holds Pillow's data (maps output pixel centres (x+0.5, y+0.5) to input coordinates). As
    Pillow: source points outside [0, W) x [0, H) take `fill`; inside, bilinear or bicubic (a = -1) taps are
    edge-clamped; results are truncated (and clipped for bicubic) to integers. Coordinates are float64; so is
    the interpolation for axes 'x' / 'y', while 'xy' interpolates in float32 (Pillow: double), so ~1e-5 of
    its pixels may land one level lower or higher.
    `axes='x'` promises that rows map to themselves (d = f = 0, e = 1: ShearX, TranslateX), `'y'` the same for
    columns; Pillow's weights along the other axis are then exactly (0, 1, 0, 0), so those taps are skipped.
    """
    if interpolation not in ("bicubic", "bilinear"):
        raise ValueError(f"affine interpolation {interpolation!r} is not supported; use 'bicubic' or 'bilinear'.")
    if axes not in ("xy", "x", "y"):
        raise ValueError(f"affine axes {axes!r} is not supported; use 'xy', 'x' or 'y'.")
    N, C, H, W = x.shape
    dev = x.device
    hp = hp_dtype(dev)
    m = matrix.to(device=dev, dtype=hp).view(N, 6, 1, 1)
    xs = (torch.arange(W, device=dev, dtype=hp) + 0.5).view(1, 1, W)
    ys = (torch.arange(H, device=dev, dtype=hp) + 0.5).view(1, H, 1)
    u = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]  # [N, H, W]
    v = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    u = u - 0.5
    v = v - 0.5
    fx, fy = torch.floor(u), torch.floor(v)
    M = N * H * W
    it = torch.int32 if M * 16 < 2 ** 31 else torch.int64
    offs = torch.arange(-1, 3, device=dev, dtype=it) if interpolation == "bicubic" else \
        torch.arange(0, 2, device=dev, dtype=it)
    zero = torch.zeros(1, device=dev, dtype=it)
    ox, oy = (zero if axes == "y" else offs), (zero if axes == "x" else offs)
    kx, ky = ox.numel(), oy.numel()
    # every tap in one gather from channel planes [C, N*H*W], edge-clamped as Pillow: t [C, col tap, row tap, M]
    base = torch.arange(N, device=dev, dtype=it).repeat_interleave(H * W) * (H * W)
    row = (fy.to(it).view(1, M) + oy.view(ky, 1)).clamp_(0, H - 1) * W + base
    col = (fx.to(it).view(1, M) + ox.view(kx, 1)).clamp_(0, W - 1)
    idx = col.view(kx, 1, M) + row.view(1, ky, M)
    # 1-D ops interpolate in float64 like Pillow (their fractions repeat along rows, so float32 truncation errors
    # would too); 2-D (Rotate, 16 taps) in float32 for speed, off by one level at ~1e-5 of pixels
    work = hp if axes != "xy" else torch.float32
    planes = x.to(torch.float32).transpose(0, 1).reshape(C, M)  # integer values: the gather is exact in float32
    t = planes.index_select(1, idx.view(-1)).view(C, kx, ky, M).to(work)
    r = _interp(t, (u - fx).to(work).view(1, 1, M), interpolation) if kx > 1 else t[:, 0]  # [C, ky, M]
    out = _interp(r, (v - fy).to(work).view(1, M), interpolation) if ky > 1 else r[:, 0]  # [C, M]
    out = torch.floor(out).clamp_(0, 255).to(x.dtype).view(C, N, H, W).transpose(0, 1)
    fill_t = torch.as_tensor(fill, dtype=x.dtype).to(dev).flatten()
    if fill_t.numel() == 1:
        fill_t = fill_t.expand(C)
    return torch.where(inside[:, None], out, fill_t.view(1, C, 1, 1)).contiguous()
