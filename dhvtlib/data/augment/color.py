"""RandAugment's colour ops replayed from Pillow's C code: `COLOR_OPS[name](x, arg)` on a float batch
[N, C, H, W] of 0..255 integer values with per-sample arguments [N] -> the same shape, integer-valued."""
from __future__ import annotations

import torch

from .images import hp_dtype, per_sample


def _blend(degenerate: torch.Tensor, img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's `Image.blend(degenerate, img, factor)` (float32 alpha, truncation, clip outside [0, 1])."""
    f = per_sample(factor.to(device=img.device, dtype=torch.float32))
    return torch.floor(degenerate + f * (img - degenerate)).clamp_(0, 255)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L conversion (ITU-R 601-2 luma, fixed point, rounded): [N, 3, H, W] -> [N, 1, H, W]."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536)


def _auto_contrast(x: torch.Tensor) -> torch.Tensor:
    hp = hp_dtype(x.device)
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
    q = per_sample(torch.pow(2.0, 8 - bits.clamp(0, 8)).to(device=x.device, dtype=x.dtype))
    return torch.floor(x / q) * q


def _solarize(x: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
    t = per_sample(thresh.to(device=x.device, dtype=x.dtype))
    return torch.where(x < t, x, 255 - x)


def _solarize_add(x: torch.Tensor, add: torch.Tensor, thresh: float = 128) -> torch.Tensor:
    a = per_sample(add.to(device=x.device, dtype=x.dtype))
    return torch.where(x < thresh, torch.clamp(x + a, max=255), x)


def _color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:  # Pillow: the degenerate of an L image is the image itself
        return _blend(x, x, factor)
    return _blend(_grey(x).expand_as(x), x, factor)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    hp = hp_dtype(x.device)
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


COLOR_OPS = {
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
