"""DeiT's PIL transforms for file data sets (timm `create_transform`), with RandAugment's posterize made safe for 0
bits; `pil_fit` (any image -> size x size) is also how data/decode.py decodes each file."""
from __future__ import annotations

from typing import Sequence

from PIL import ImageOps
from timm.data import create_transform
from timm.data.auto_augment import RandAugment
from torchvision import transforms as T


def pil_posterize(img, bits_to_keep, **__):
    """timm's `posterize`, except that 0 bits gives a black image (as older Pillow did) instead of the ValueError
    of a Pillow whose `ImageOps.posterize` accepts only 1..8 bits, which PosterizeIncreasing at magnitude 10
    (2.3 % of draws for m9 mstd0.5) would raise."""
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
    safe for 0 bits (`pil_posterize`). eval: Resize(int(img_size / 0.875), bicubic) + CenterCrop when
    img_size > 32, then ToTensor + Normalize.
    At img_size <= 32 both put Resize(img_size, bicubic) (shorter side) + CenterCrop(img_size) first, so images of
    any size work (a no-op for images already img_size x img_size, such as CIFAR's).
    """
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if train:
        tf = create_transform(img_size, is_training=True, color_jitter=0.4, auto_augment=rand_augment,
                              interpolation="bicubic", re_prob=random_erasing, re_mode="pixel", re_count=1,
                              mean=mean, std=std)
        if img_size <= 32:
            tf.transforms[0:1] = pil_fit(img_size) + [T.RandomCrop(img_size, padding=4)]
        for t in tf.transforms:
            if isinstance(t, RandAugment):
                for op in t.ops:
                    if op.name.startswith("Posterize"):
                        op.aug_fn = pil_posterize
        return tf
    tfl = pil_fit(img_size)
    if img_size > 32:
        tfl = [T.Resize(int(img_size / 0.875), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(img_size)]
    tfl += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(tfl)


def pil_fit(size: int) -> list:
    """Resize(size, bicubic) of the shorter side + CenterCrop(size): any image to size x size (identity at that
    size)."""
    return [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)]
