"""DeiT's training augmentation as batched tensor ops on the training device, and the PIL pipeline for files.

`BatchAugment` reproduces, for uint8 image batches [B, C, H, W] already in memory (CIFAR, Fashion-MNIST):
RandomCrop(padding=4) or RandomResizedCrop -> horizontal flip -> timm RandAugment -> ToTensor + Normalize ->
timm RandomErasing (mode 'pixel'), with per-sample randomness and no Python loop over the batch (the loops run over
RandAugment's op types). Every random number is drawn on the CPU from the caller's `torch.Generator` (in a fixed
order that does not depend on the data), then moved to the images' device, so the parameters depend only on the
generator state. The arithmetic replays Pillow's C code (LUTs, truncations, its bicubic with a = -1, edge clamping
and fill for the geometric ops, coordinates in float64), so every op equals timm's PIL op bitwise, except Rotate at
~1e-5 of pixels (one grey level off there: it interpolates in float32 for speed, Pillow in double).

Choices and deviations from timm + Pillow (deliberate):
- Geometric ops resample bicubic by default: DeiT passes train_interpolation='bicubic' to create_transform, which
  fixes RandAugment's resample to BICUBIC (timm's random bilinear/bicubic choice applies only without it; pass
  interpolation='random' for that). Fill = timm's img_mean, round(255 * mean) of the mean given here; DeiT
  normalises with the ImageNet mean, giving (124, 116, 104): pass fill=... to pin it independently of `mean`.
- RandomResizedCrop: timm's get_params vectorised, resampled bicubic as DeiT (timm's
  RandomResizedCropAndInterpolation with interpolation='bicubic'), but with torch's bicubic (a = -0.75, as
  torchvision's tensor resize; Pillow's has a = -0.5) through `grid_sample`, crop-then-resize geometry as
  torchvision, no antialiasing (Pillow antialiases when shrinking). `rrc_interpolation='bilinear'` is the former
  behaviour.
- Random numbers come from torch, not Python's `random`, so no output is bitwise timm's for a seed; the
  distributions and the per-op arithmetic are the same. Erasing noise is drawn only for the erased pixels.
- PosterizeIncreasing at magnitude 10 asks for 0 bits: a black image here (as older Pillow gave); Pillow 13.0
  (installed) raises ValueError, which `build_pil_transform` patches around.
- Rotate's cos/sin are rounded to 15 decimals with torch.round (Python's round may differ by one ulp).
- RandAugment 't' (weighted / 3-augment) transform sets are not supported.
- Rotate interpolates in float32 (see above); on MPS (no float64) everything is float32 (more one-level
  differences); on a GPU, isolated pixels may differ from the CPU by one level (float rounding before truncation).

`build_pil_transform` builds DeiT's `build_transform` (timm `create_transform`) for file data sets.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "BatchAugment", "build_pil_transform", "normalize_batch", "RandAugmentConfig", "parse_rand_augment",
    "AugmentParams", "RandAugmentLayer", "pad_crop", "resized_crop", "apply_op", "affine", "op_matrix",
    "level_to_arg", "RAND_TRANSFORMS", "RAND_INCREASING_TRANSFORMS", "GEOMETRIC_OPS",
]

RAND_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)
_ALL_OPS = tuple(dict.fromkeys(RAND_TRANSFORMS + RAND_INCREASING_TRANSFORMS))
GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
_GEO_AXES = {"Rotate": "xy", "ShearX": "x", "TranslateXRel": "x", "ShearY": "y", "TranslateYRel": "y"}
_AXES = ("xy", "x", "y")
_NO_ARG_OPS = ("AutoContrast", "Equalize", "Invert")
_LEVEL_DENOM = 10.0
INTERPOLATIONS = ("bicubic", "bilinear", "random")
CROPS = ("pad", "rrc", None)


# ----------------------------------------------------------------------------------------------------- helpers

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


# ------------------------------------------------------------------------------------------------------- crops

def pad_crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int, padding: int = 4) -> torch.Tensor:
    """Zero-pad by `padding` and take a size x size crop at per-sample (top, left) offsets in the padded image.

    Equals torchvision `RandomCrop(size, padding=padding)` (fill 0) with its offsets i=top, j=left.
    """
    _check_images(x)
    B, C, H, W = x.shape
    if H + 2 * padding < size or W + 2 * padding < size:
        raise ValueError(f"images of {H}x{W} padded by {padding} are smaller than the crop size {size}; "
                         f"raise padding or lower img_size.")
    xp = F.pad(x, (padding, padding, padding, padding)) if padding else x
    Hp, Wp = H + 2 * padding, W + 2 * padding
    dev = x.device
    ar = torch.arange(size, device=dev)
    idx = ((top.to(dev).view(B, 1, 1) + ar.view(1, size, 1)) * Wp
           + left.to(dev).view(B, 1, 1) + ar.view(1, 1, size))  # [B, S, S] flat offsets into each padded image
    out = torch.gather(xp.reshape(B, C, Hp * Wp), 2, idx.view(B, 1, size * size).expand(B, C, size * size))
    return out.view(B, C, size, size)


def resize_center_crop(x: torch.Tensor, size: int, crop_pct: float = 0.875) -> torch.Tensor:
    """DeiT's evaluation transform at 224 px on a uint8 batch: bicubic Resize(int(size / crop_pct)) then
    CenterCrop(size) (tensor bicubic without antialiasing, which matters only when shrinking). Returns uint8-valued
    floats 0..255, ready for `normalize_batch`."""
    big = int(size / crop_pct)
    if x.shape[-2:] == (big, big):  # already resized (image folders are stored at this size): the crop only
        y = x.float()
    else:
        y = F.interpolate(x.float(), size=(big, big), mode="bicubic", align_corners=False).round_().clamp_(0, 255)
    top = (big - size + 1) // 2  # torchvision's CenterCrop rounding
    return y[..., top:top + size, top:top + size]


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Per-sample crop boxes [B, 4] = (top, left, height, width) resized to size x size with `grid_sample`.

    As torchvision's `resized_crop` (crop, then resize with pixel-centre mapping, align_corners=False): sample
    coordinates are clamped to the box, so its edge pixels are replicated (exact for bilinear; bicubic taps may
    still read one pixel beyond the box). No antialiasing, so strong downscaling aliases where Pillow would average
    (fine for 28-32 px sources, the in-memory data sets). Returns floats rounded and clamped to 0..255 (uint8 values).
    """
    if interpolation not in ("bilinear", "bicubic"):
        raise ValueError(f"rrc interpolation {interpolation!r} is not supported; use 'bilinear' or 'bicubic'.")
    B, C, H, W = x.shape
    dev = x.device
    hp = _hp_dtype(dev)
    i, j, h, w = (v.to(device=dev, dtype=hp).view(B, 1) for v in boxes.unbind(1))
    o = (torch.arange(size, device=dev, dtype=hp) + 0.5).view(1, size) / size
    sx = torch.minimum(torch.maximum(j + o * w - 0.5, j), j + w - 1)  # source pixel index, clamped to the box
    sy = torch.minimum(torch.maximum(i + o * h - 0.5, i), i + h - 1)
    gx = ((2 * sx + 1) / W - 1).view(B, 1, size).expand(B, size, size)
    gy = ((2 * sy + 1) / H - 1).view(B, size, 1).expand(B, size, size)
    grid = torch.stack([gx, gy], dim=-1).to(torch.float32)
    out = F.grid_sample(x.to(torch.float32), grid, mode=interpolation, padding_mode="border", align_corners=False)
    return out.round_().clamp_(0, 255)


def _rrc_boxes(B: int, H: int, W: int, scale: tuple[float, float], ratio: tuple[float, float],
               g: torch.Generator) -> torch.Tensor:
    """timm `RandomResizedCropAndInterpolation.get_params`, vectorised: 10 attempts, then the central fallback."""
    area = H * W
    u_area = torch.rand(B, 10, generator=g, dtype=torch.float64)
    u_ratio = torch.rand(B, 10, generator=g, dtype=torch.float64)
    u_i = torch.rand(B, generator=g, dtype=torch.float64)
    u_j = torch.rand(B, generator=g, dtype=torch.float64)
    target_area = (scale[0] + (scale[1] - scale[0]) * u_area) * area
    lr0, lr1 = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lr0 + (lr1 - lr0) * u_ratio)
    tw = torch.round(torch.sqrt(target_area * aspect)).long()
    th = torch.round(torch.sqrt(target_area / aspect)).long()
    ok = (tw <= W) & (th <= H)
    first = ok.int().argmax(dim=1, keepdim=True)
    w = tw.gather(1, first).squeeze(1)
    h = th.gather(1, first).squeeze(1)
    i = torch.floor(u_i * (H - h + 1)).long()
    j = torch.floor(u_j * (W - w + 1)).long()
    in_ratio = W / H
    if in_ratio < min(ratio):
        fw, fh = W, int(round(W / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(H * max(ratio))), H
    else:
        fw, fh = W, H
    fb = ~ok.any(dim=1)
    h = torch.where(fb, fh, h)
    w = torch.where(fb, fw, w)
    i = torch.where(fb, (H - fh) // 2, i)
    j = torch.where(fb, (W - fw) // 2, j)
    return torch.stack([i, j, h, w], dim=1)


# ------------------------------------------------------------------------------------------------- RandAugment

@dataclass(frozen=True)
class RandAugmentConfig:
    """timm's RandAugment settings (`rand-m{M}-n{N}-mstd{S}-inc{0|1}-mmax{X}-p{P}`)."""

    magnitude: float = 10.0
    num_layers: int = 2
    prob: float = 0.5
    magnitude_std: float = 0.0  # > 0: N(M, std); inf (config value > 100): U(0, M)
    magnitude_max: float | None = None  # clip bound; None (or 0) -> 10, as timm
    increasing: bool = False
    translate_pct: float = 0.45

    @property
    def ops(self) -> tuple[str, ...]:
        return RAND_INCREASING_TRANSFORMS if self.increasing else RAND_TRANSFORMS

    @property
    def upper_bound(self) -> float:
        return float(self.magnitude_max or _LEVEL_DENOM)


def parse_rand_augment(config_str: str) -> RandAugmentConfig:
    """Parse a timm RandAugment string exactly as `timm.data.auto_augment.rand_augment_transform` does."""
    parts = config_str.split("-")
    if parts[0] != "rand":
        raise ValueError(f"RandAugment config {config_str!r} must start with 'rand-' (e.g. 'rand-m9-mstd0.5-inc1').")
    kw: dict = {}
    for c in parts[1:]:
        if c.startswith("t"):
            raise ValueError(f"RandAugment transform-set section {c!r} in {config_str!r} is not supported by "
                             f"BatchAugment; drop it to use timm's default op set.")
        cs = re.split(r"(\d.*)", c)
        if len(cs) < 2:
            continue  # timm ignores sections without a number
        key, val = cs[:2]
        try:
            if key == "mstd":
                mstd = float(val)
                kw.setdefault("magnitude_std", float("inf") if mstd > 100 else mstd)
            elif key == "mmax":
                kw.setdefault("magnitude_max", int(val))
            elif key == "inc":
                kw["increasing"] = bool(int(val))
            elif key == "m":
                kw["magnitude"] = int(val)
            elif key == "n":
                kw["num_layers"] = int(val)
            elif key == "p":
                kw["prob"] = float(val)
            else:
                raise ValueError(f"unknown RandAugment section {c!r} in {config_str!r}; use m, n, mstd, mmax, inc "
                                 f"or p.")
        except ValueError as e:
            if "unknown RandAugment" in str(e):
                raise
            raise ValueError(f"RandAugment section {c!r} in {config_str!r} has a malformed number; write e.g. "
                             f"'m9' or 'mstd0.5'.") from e
    return RandAugmentConfig(**kw)


def level_to_arg(name: str, level: torch.Tensor, negate: torch.Tensor, translate_pct: float = 0.45) -> torch.Tensor:
    """timm's `LEVEL_TO_ARG[name]` on float64 magnitudes [N]; `negate` [N] bool is `_randomly_negate`'s coin."""
    lv = level.to(torch.float64)
    sgn = torch.where(negate, -1.0, 1.0).to(torch.float64)
    if name in _NO_ARG_OPS:
        return torch.zeros_like(lv)
    if name == "Rotate":
        return sgn * ((lv / _LEVEL_DENOM) * 30.0)
    if name == "Posterize":
        return torch.trunc((lv / _LEVEL_DENOM) * 4)
    if name == "PosterizeIncreasing":
        return 4 - torch.trunc((lv / _LEVEL_DENOM) * 4)
    if name == "Solarize":
        return torch.clamp(torch.trunc((lv / _LEVEL_DENOM) * 256), max=256)
    if name == "SolarizeIncreasing":
        return 256 - torch.clamp(torch.trunc((lv / _LEVEL_DENOM) * 256), max=256)
    if name == "SolarizeAdd":
        return torch.clamp(torch.trunc((lv / _LEVEL_DENOM) * 110), max=128)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (lv / _LEVEL_DENOM) * 1.8 + 0.1
    if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        return torch.clamp(1.0 + sgn * ((lv / _LEVEL_DENOM) * 0.9), min=0.1)
    if name in ("ShearX", "ShearY"):
        return sgn * ((lv / _LEVEL_DENOM) * 0.3)
    if name in ("TranslateXRel", "TranslateYRel"):
        return sgn * ((lv / _LEVEL_DENOM) * translate_pct)
    raise ValueError(f"RandAugment op {name!r} is not supported; use one of {_ALL_OPS}.")


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
    hp = _hp_dtype(dev)
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


def _blend(degenerate: torch.Tensor, img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's `Image.blend(degenerate, img, factor)` (float32 alpha, truncation, clip outside [0, 1])."""
    f = _col(factor.to(device=img.device, dtype=torch.float32))
    return torch.floor(degenerate + f * (img - degenerate)).clamp_(0, 255)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L conversion (ITU-R 601-2 luma, fixed point, rounded): [N, 3, H, W] -> [N, 1, H, W]."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536)


def _auto_contrast(x: torch.Tensor) -> torch.Tensor:
    hp = _hp_dtype(x.device)
    lo = x.amin(dim=(2, 3), keepdim=True).to(hp)
    hi = x.amax(dim=(2, 3), keepdim=True).to(hp)
    keep = hi <= lo
    scale = 255.0 / torch.where(keep, 1.0, hi - lo)
    offset = -lo * scale
    out = torch.floor(x.to(hp) * scale + offset).clamp_(0, 255)
    return torch.where(keep, x.to(hp), out).to(x.dtype)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    N, C, H, W = x.shape
    idx = x.reshape(N * C, H * W).long()
    hist = torch.zeros(N * C, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, idx, torch.ones_like(idx))
    present = hist > 0
    last = 255 - present.flip(1).int().argmax(dim=1, keepdim=True)
    step = (H * W - hist.gather(1, last)) // 255  # (sum(histo) - histo[-1]) // 255
    cum = torch.cumsum(hist, dim=1) - hist  # exclusive prefix sum
    lut = ((step // 2 + cum) // step.clamp(min=1)).clamp_(max=255)
    identity = (present.sum(dim=1, keepdim=True) <= 1) | (step == 0)
    lut = torch.where(identity, torch.arange(256, device=x.device), lut)
    return lut.gather(1, idx).to(x.dtype).view(N, C, H, W)


def _posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    q = _col(torch.pow(2.0, 8 - bits.clamp(0, 8)).to(device=x.device, dtype=x.dtype))
    return torch.floor(x / q) * q


def _solarize(x: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
    t = _col(thresh.to(device=x.device, dtype=x.dtype))
    return torch.where(x < t, x, 255 - x)


def _solarize_add(x: torch.Tensor, add: torch.Tensor, thresh: float = 128) -> torch.Tensor:
    a = _col(add.to(device=x.device, dtype=x.dtype))
    return torch.where(x < thresh, torch.clamp(x + a, max=255), x)


def _color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:  # Pillow: the degenerate of an L image is the image itself
        return _blend(x, x, factor)
    return _blend(_grey(x).expand_as(x), x, factor)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    hp = _hp_dtype(x.device)
    grey = _grey(x).to(hp)
    mean = torch.floor(grey.mean(dim=(1, 2, 3), keepdim=True) + 0.5).to(x.dtype)
    return _blend(mean.expand_as(x), x, factor)


def _brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(torch.zeros_like(x), x, factor)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """Pillow's ImageFilter.SMOOTH (3x3 [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded); border pixels are copied."""
    H, W = x.shape[-2:]
    if H < 3 or W < 3:
        return x.clone()
    s = 4 * x[..., 1:H - 1, 1:W - 1]
    for i in range(3):
        for j in range(3):
            s = s + x[..., i:H - 2 + i, j:W - 2 + j]
    out = x.clone()
    out[..., 1:H - 1, 1:W - 1] = torch.floor(s / 13 + 0.5)
    return out


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(_smooth(x), x, factor)


_COLOR_FNS = {
    "AutoContrast": lambda x, a: _auto_contrast(x),
    "Equalize": lambda x, a: _equalize(x),
    "Invert": lambda x, a: 255 - x,
    "Posterize": _posterize,
    "PosterizeIncreasing": _posterize,
    "Solarize": _solarize,
    "SolarizeIncreasing": _solarize,
    "SolarizeAdd": _solarize_add,
    "Color": _color,
    "ColorIncreasing": _color,
    "Contrast": _contrast,
    "ContrastIncreasing": _contrast,
    "Brightness": _brightness,
    "BrightnessIncreasing": _brightness,
    "Sharpness": _sharpness,
    "SharpnessIncreasing": _sharpness,
}


def apply_op(name: str, x: torch.Tensor, arg: torch.Tensor | float | None = None, *,
             fill: Sequence[float] | None = None, interpolation: str = "bicubic") -> torch.Tensor:
    """Apply timm op `name` with its argument (the level_to_arg output; scalar or per-sample [N]) to a batch.

    `x` is uint8 or float 0..255 [N, C, H, W]; returns float32 with integer values, like the PIL image timm's
    `NAME_TO_OP[name](img, arg, fillcolor=fill, resample=...)` returns. `fill` defaults to 128 (timm's _FILL).
    Pass tensor arguments as float64 (Python floats are): float32 factors shift Pillow's truncations.
    """
    _check_images(x)
    xf = x.to(torch.float32)
    n = xf.shape[0]
    a = torch.as_tensor(0.0 if arg is None else arg, dtype=torch.float64).flatten()
    if a.numel() == 1:
        a = a.expand(n)
    if name in GEOMETRIC_OPS:
        return affine(xf, op_matrix(name, a, xf.shape[2], xf.shape[3]), 128.0 if fill is None else fill,
                      interpolation, _GEO_AXES[name])
    if name not in _COLOR_FNS:
        raise ValueError(f"RandAugment op {name!r} is not supported; use one of {_ALL_OPS}.")
    return _COLOR_FNS[name](xf, a.to(xf.device))


# --------------------------------------------------------------------------------------------- sampled params

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


class BatchAugment:
    """DeiT's per-image training augmentation applied to a whole uint8 batch on its device.

    `BatchAugment(32, mean, std)(x_uint8, generator)` -> normalised float32 [B, C, 32, 32].
    crop: 'pad' (RandomCrop(img_size, padding) with zero fill), 'rrc' (RandomResizedCrop, resampled with
    `rrc_interpolation`: 'bicubic' as DeiT's train_interpolation, or 'bilinear'; see `resized_crop`) or None
    (images must already be img_size). `rand_augment` is a timm config string or None;
    `interpolation` is the resampling of its geometric ops: 'bicubic' (what timm uses under DeiT's
    train_interpolation='bicubic'), 'bilinear', or 'random' (timm's per-op choice when no interpolation is set).
    `fill` (0..255 per channel) defaults to timm's img_mean, round(255 * mean). `random_erasing` is the
    probability of one per-pixel N(0, 1) box (timm RandomErasing mode='pixel', count 1) after normalisation.
    """

    def __init__(self, img_size: int, mean: Sequence[float], std: Sequence[float], *, crop: str | None = "pad",
                 padding: int = 4, rrc_scale: tuple[float, float] = (0.08, 1.0),
                 rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: float = 0.5,
                 rand_augment: str | None = "rand-m9-mstd0.5-inc1", random_erasing: float = 0.25,
                 interpolation: str = "bicubic", rrc_interpolation: str = "bicubic",
                 fill: Sequence[float] | None = None):
        if crop not in CROPS:
            raise ValueError(f"crop {crop!r} is not supported; use 'pad', 'rrc' or None.")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {interpolation!r} is not supported; use one of {INTERPOLATIONS}.")
        if rrc_interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"rrc_interpolation {rrc_interpolation!r} is not supported; use 'bilinear' or "
                             f"'bicubic'.")
        for name, p in (("hflip", hflip), ("random_erasing", random_erasing)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} probability {p} is outside [0, 1]; pass a probability.")
        self.img_size, self.crop, self.padding = int(img_size), crop, int(padding)
        self.rrc_scale, self.rrc_ratio = tuple(rrc_scale), tuple(rrc_ratio)
        self.hflip, self.random_erasing = float(hflip), float(random_erasing)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}; give one per channel.")
        self.ra = parse_rand_augment(rand_augment) if rand_augment else None
        self.interpolation, self.rrc_interpolation = interpolation, rrc_interpolation
        self.fill = tuple(float(f) for f in fill) if fill is not None else \
            tuple(float(min(255, round(255 * m))) for m in self.mean)

    def __repr__(self) -> str:
        return (f"BatchAugment(img_size={self.img_size}, crop={self.crop!r}, hflip={self.hflip}, ra={self.ra}, "
                f"interpolation={self.interpolation!r}, random_erasing={self.random_erasing}, fill={self.fill})")

    # -- sampling (CPU only) --------------------------------------------------------------------------------
    def sample(self, batch: int, channels: int, height: int, width: int, generator: torch.Generator) -> AugmentParams:
        """Draw every random parameter for a batch from `generator` (a CPU generator), in a fixed order."""
        if generator.device.type != "cpu":
            raise ValueError(f"the generator lives on {generator.device}; pass a CPU torch.Generator so the "
                             f"augmentation does not depend on the device.")
        g, B, S = generator, batch, self.img_size
        if self.crop == "pad":
            if height + 2 * self.padding < S or width + 2 * self.padding < S:
                raise ValueError(f"images of {height}x{width} padded by {self.padding} are smaller than img_size "
                                 f"{S}; raise padding or lower img_size.")
            top = torch.randint(0, height + 2 * self.padding - S + 1, (B,), generator=g)
            left = torch.randint(0, width + 2 * self.padding - S + 1, (B,), generator=g)
            crop = torch.stack([top, left], dim=1)
        elif self.crop == "rrc":
            crop = _rrc_boxes(B, height, width, self.rrc_scale, self.rrc_ratio, g)
        else:
            if (height, width) != (S, S):
                raise ValueError(f"crop=None needs {S}x{S} images but got {height}x{width}; use crop='pad' or "
                                 f"'rrc'.")
            crop = None
        flip = torch.rand(B, generator=g) < self.hflip
        params = AugmentParams(crop=crop, flip=flip)
        if self.ra is not None:
            params.layers = [self._sample_layer(B, g) for _ in range(self.ra.num_layers)]
        if self.random_erasing > 0:
            self._sample_erasing(params, B, channels, S, g)
        return params

    def _sample_layer(self, B: int, g: torch.Generator) -> RandAugmentLayer:
        cfg = self.ra
        ops = cfg.ops
        op = torch.randint(0, len(ops), (B,), generator=g)
        applied = torch.rand(B, generator=g, dtype=torch.float64) <= cfg.prob  # timm: skip if random() > prob
        noise = torch.randn(B, generator=g, dtype=torch.float64)
        u_mag = torch.rand(B, generator=g, dtype=torch.float64)
        negate = torch.rand(B, generator=g, dtype=torch.float64) > 0.5  # timm: -v if random() > 0.5
        bicubic = torch.rand(B, generator=g) < 0.5
        mag = torch.full((B,), float(cfg.magnitude), dtype=torch.float64)
        if cfg.magnitude_std == float("inf"):
            mag = cfg.magnitude * u_mag
        elif cfg.magnitude_std > 0:
            mag = cfg.magnitude + cfg.magnitude_std * noise
        mag = mag.clamp(0.0, cfg.upper_bound)
        arg = torch.zeros(B, dtype=torch.float64)
        for k, name in enumerate(ops):
            sel = op == k
            if sel.any():
                arg[sel] = level_to_arg(name, mag[sel], negate[sel], cfg.translate_pct)
        return RandAugmentLayer(op=op, applied=applied, magnitude=mag, arg=arg, bicubic=bicubic)

    def _sample_erasing(self, params: AugmentParams, B: int, C: int, S: int, g: torch.Generator) -> None:
        """timm RandomErasing(probability, mode='pixel', count 1): area U(0.02, 1/3), log-aspect U(log .3, log 1/.3),
        h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)), first of 10 attempts with h, w < size."""
        u_do = torch.rand(B, generator=g, dtype=torch.float64)
        u_area = torch.rand(B, 10, generator=g, dtype=torch.float64)
        u_asp = torch.rand(B, 10, generator=g, dtype=torch.float64)
        u_top = torch.rand(B, generator=g, dtype=torch.float64)
        u_left = torch.rand(B, generator=g, dtype=torch.float64)
        area = S * S
        target = (0.02 + (1 / 3 - 0.02) * u_area) * area
        la, lb = math.log(0.3), math.log(1 / 0.3)
        aspect = torch.exp(la + (lb - la) * u_asp)
        h = torch.round(torch.sqrt(target * aspect)).long()
        w = torch.round(torch.sqrt(target / aspect)).long()
        ok = (w < S) & (h < S)
        first = ok.int().argmax(dim=1, keepdim=True)
        h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
        erase = (u_do <= self.random_erasing) & ok.any(dim=1)
        h, w = torch.where(erase, h, 0), torch.where(erase, w, 0)
        top = torch.floor(u_top * (S - h + 1)).long()
        left = torch.floor(u_left * (S - w + 1)).long()
        params.erase = erase
        params.erase_box = torch.stack([top, left, h, w], dim=1)
        params.noise = torch.randn(int((C * h * w).sum()), generator=g)

    # -- application (on the images' device) -----------------------------------------------------------------
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_images(x)
        if x.dtype != torch.uint8:
            raise ValueError(f"BatchAugment expects uint8 images, got {x.dtype}; pass the raw 0..255 tensor.")
        B, C, H, W = x.shape
        if C != len(self.mean):
            raise ValueError(f"images have {C} channels but mean/std have {len(self.mean)} values; build "
                             f"BatchAugment with the data set's per-channel statistics.")
        return self.apply(x, self.sample(B, C, H, W, generator))

    def apply(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply sampled parameters to a uint8 batch: crop -> flip -> RandAugment -> normalise -> erase."""
        dev = x.device
        S = self.img_size
        if self.crop == "pad":
            out = pad_crop(x, params.crop[:, 0], params.crop[:, 1], S, self.padding).to(torch.float32)
        elif self.crop == "rrc":
            out = resized_crop(x, params.crop, S, self.rrc_interpolation)
        else:
            out = x.to(torch.float32)
        out = torch.where(_col(params.flip.to(dev)), out.flip(-1), out)
        for layer in params.layers:
            out = self._apply_layer(out, layer)
        out = normalize_batch(out, self.mean, self.std)
        if params.erase is not None and params.noise.numel():
            t, l, h, w = (v.view(-1, 1) for v in params.erase_box.unbind(1))
            r = torch.arange(S).view(1, S)
            rows = (r >= t) & (r < t + h)  # [B, S]
            cols = (r >= l) & (r < l + w)
            mask = (rows[:, None, :, None] & cols[:, None, None, :]).to(dev)  # [B, 1, S, S]
            out = out.masked_scatter(mask.expand_as(out), params.noise.to(dev))
        return out

    def _apply_layer(self, x: torch.Tensor, layer: RandAugmentLayer) -> torch.Tensor:
        """One RandAugment layer: samples are grouped by op (one sort on the CPU, one transfer each for the order
        and the arguments); geometric ops share one batched resampling per (interpolation, axes) pair, each colour
        op runs on its subset."""
        B, C, H, W = x.shape
        ops = self.ra.ops
        n_ops, n_geo = len(ops), 2 * len(_AXES)
        # group keys: 3 * interp + axes for geometric ops (interp 0 bicubic / 1 bilinear, axes index in _AXES),
        # n_geo + k for colour op k, n_geo + n_ops for skipped samples
        axes_of_op = torch.tensor([_AXES.index(_GEO_AXES[o]) if o in _GEO_AXES else -1 for o in ops])[layer.op]
        if self.interpolation == "random":
            interp = torch.where(layer.bicubic, 0, 1)
        else:
            interp = torch.full((B,), 0 if self.interpolation == "bicubic" else 1)
        key = torch.where(axes_of_op >= 0, 3 * interp + axes_of_op, n_geo + layer.op)
        key = torch.where(layer.applied, key, n_geo + n_ops)
        counts = torch.bincount(key, minlength=n_geo + n_ops + 1).tolist()
        if counts[-1] == B:
            return x
        order = torch.argsort(key, stable=True)
        mats = torch.zeros(B, 6, dtype=torch.float64)
        for name in GEOMETRIC_OPS:
            if name in ops:
                sel = layer.op == ops.index(name)
                if sel.any():
                    mats[sel] = op_matrix(name, layer.arg[sel], H, W)
        packed = torch.cat([layer.arg[:, None], mats], dim=1)[order]
        dev = x.device
        order_d = order.to(dev)
        packed_d = packed.to(device=dev, dtype=_hp_dtype(dev))
        out = x.clone()
        start = 0
        for k, cnt in enumerate(counts[:-1]):
            if cnt:
                idx = order_d[start:start + cnt]
                sub = x.index_select(0, idx)
                if k < n_geo:
                    res = affine(sub, packed_d[start:start + cnt, 1:], self.fill, ("bicubic", "bilinear")[k // 3],
                                 _AXES[k % 3])
                else:
                    res = _COLOR_FNS[ops[k - n_geo]](sub, packed_d[start:start + cnt, 0])
                out.index_copy_(0, idx, res.to(out.dtype))
            start += cnt
        return out


# ------------------------------------------------------------------------------------------------- PIL path

def _pil_posterize(img, bits_to_keep, **__):
    """timm's `posterize`, except that 0 bits gives a black image (as older Pillow did) instead of Pillow 13's
    ValueError, which PosterizeIncreasing at magnitude 10 (2.3 % of draws for m9 mstd0.5) would raise."""
    from PIL import ImageOps
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, int(bits_to_keep))


def build_pil_transform(img_size: int, mean: Sequence[float], std: Sequence[float], train: bool, *,
                        rand_augment: str | None = "rand-m9-mstd0.5-inc1", random_erasing: float = 0.25):
    """DeiT's `build_transform` for PIL images (file data sets).

    train: timm `create_transform(img_size, is_training=True, color_jitter=0.4, auto_augment=rand_augment,
    interpolation='bicubic', re_prob=random_erasing, re_mode='pixel', re_count=1, mean, std)`, with the first
    transform replaced by RandomCrop(img_size, padding=4) when img_size <= 32, and RandAugment's posterize made
    safe for 0 bits (`_pil_posterize`). eval: Resize(int(img_size / 0.875), bicubic) + CenterCrop when
    img_size > 32, then ToTensor + Normalize.
    At img_size <= 32 both put Resize(img_size, bicubic) (shorter side) + CenterCrop(img_size) first, so images of
    any size work (a no-op for images already img_size x img_size, such as CIFAR's).
    """
    from timm.data import create_transform
    from timm.data.auto_augment import RandAugment
    from torchvision import transforms as T

    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if train:
        tf = create_transform(img_size, is_training=True, color_jitter=0.4, auto_augment=rand_augment,
                              interpolation="bicubic", re_prob=random_erasing, re_mode="pixel", re_count=1,
                              mean=mean, std=std)
        if img_size <= 32:
            tf.transforms[0:1] = _fit(img_size) + [T.RandomCrop(img_size, padding=4)]
        for t in tf.transforms:
            if isinstance(t, RandAugment):
                for op in t.ops:
                    if op.name.startswith("Posterize"):
                        op.aug_fn = _pil_posterize
        return tf
    tfl = _fit(img_size)
    if img_size > 32:
        tfl = [T.Resize(int(img_size / 0.875), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(img_size)]
    tfl += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(tfl)


def _fit(size: int) -> list:
    """Resize(size, bicubic) of the shorter side + CenterCrop(size): any image to size x size (identity at that
    size)."""
    from torchvision import transforms as T

    return [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)]
