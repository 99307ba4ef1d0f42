"""The training path's crops on uint8 batches [B, C, H, W]: RandomCrop with zero padding (`pad_crop`, offsets
[B] each), RandomResizedCrop (`rrc_boxes` samples boxes [B, 4], `resized_crop` resamples them), and DeiT's
evaluation resize + centre crop (`resize_center_crop`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .images import check_images, hp_dtype


def pad_crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int, padding: int = 4) -> torch.Tensor:
    """Zero-pad by `padding` and take a size x size crop at per-sample (top, left) offsets in the padded image.

    Equals torchvision `RandomCrop(size, padding=padding)` (fill 0) with its offsets i=top, j=left.
    """
    check_images(x)
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
    hp = hp_dtype(dev)
    i, j, h, w = (v.to(device=dev, dtype=hp).view(B, 1) for v in boxes.unbind(1))
    o = (torch.arange(size, device=dev, dtype=hp) + 0.5).view(1, size) / size
    sx = torch.minimum(torch.maximum(j + o * w - 0.5, j), j + w - 1)  # source pixel index, clamped to the box
    sy = torch.minimum(torch.maximum(i + o * h - 0.5, i), i + h - 1)
    gx = ((2 * sx + 1) / W - 1).view(B, 1, size).expand(B, size, size)
    gy = ((2 * sy + 1) / H - 1).view(B, size, 1).expand(B, size, size)
    grid = torch.stack([gx, gy], dim=-1).to(torch.float32)
    out = F.grid_sample(x.to(torch.float32), grid, mode=interpolation, padding_mode="border", align_corners=False)
    return out.round_().clamp_(0, 255)


def rrc_boxes(B: int, H: int, W: int, scale: tuple[float, float], ratio: tuple[float, float],
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

