"""`BatchAugment`: DeiT's training augmentation on a uint8 batch [B, C, H, W] on its device (the choices and
deviations from timm + Pillow are listed in the package docstring, data/augment/__init__.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .color import COLOR_OPS
from .crops import pad_crop, resized_crop, rrc_boxes
from .geometric import AXES, GEOMETRIC_OPS, OP_AXES, affine, op_matrix
from .images import check_images, hp_dtype, normalize_batch, per_sample
from .randaugment import level_to_arg, parse_rand_augment

INTERPOLATIONS = ("bicubic", "bilinear", "random")
CROPS = ("pad", "rrc", None)


# Everything random about one batch, as CPU tensors: `BatchAugment.sample` draws it, `BatchAugment.apply` uses it.
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
            crop = rrc_boxes(B, height, width, self.rrc_scale, self.rrc_ratio, g)
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
        check_images(x)
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
        out = torch.where(per_sample(params.flip.to(dev)), out.flip(-1), out)
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
        n_ops, n_geo = len(ops), 2 * len(AXES)
        # group keys: 3 * interp + axes for geometric ops (interp 0 bicubic / 1 bilinear, axes index in AXES),
        # n_geo + k for colour op k, n_geo + n_ops for skipped samples
        axes_of_op = torch.tensor([AXES.index(OP_AXES[o]) if o in OP_AXES else -1 for o in ops])[layer.op]
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
        packed_d = packed.to(device=dev, dtype=hp_dtype(dev))
        out = x.clone()
        start = 0
        for k, cnt in enumerate(counts[:-1]):
            if cnt:
                idx = order_d[start:start + cnt]
                sub = x.index_select(0, idx)
                if k < n_geo:
                    res = affine(sub, packed_d[start:start + cnt, 1:], self.fill, ("bicubic", "bilinear")[k // 3],
                                 AXES[k % 3])
                else:
                    res = COLOR_OPS[ops[k - n_geo]](sub, packed_d[start:start + cnt, 0])
                out.index_copy_(0, idx, res.to(out.dtype))
            start += cnt
        return out
