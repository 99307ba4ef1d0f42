"""timm's RandAugment settings: the two op sets, the config string ('rand-m9-mstd0.5-inc1' -> `RandAugmentConfig`)
and each op's magnitude -> argument (timm's LEVEL_TO_ARG, on magnitudes [N])."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

RAND_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)
ALL_OPS = tuple(dict.fromkeys(RAND_TRANSFORMS + RAND_INCREASING_TRANSFORMS))
_NO_ARG_OPS = ("AutoContrast", "Equalize", "Invert")
_LEVEL_DENOM = 10.0


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
    raise ValueError(f"RandAugment op {name!r} is not supported; use one of {ALL_OPS}.")
