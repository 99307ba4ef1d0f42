"""Small data sets written in the real on-disk formats, shared by the tests."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

__all__ = ["write_idx", "fake_fashion_mnist", "image_folder", "MODES"]


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """An idx file (MNIST format: big-endian magic, dims, then uint8 data), gzipped when the name ends in .gz."""
    raw = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def fake_fashion_mnist(root: Path, train_per_class: int = 16, test_per_class: int = 4, seed: int = 0) -> Path:
    """Fashion-MNIST-shaped idx.gz files (10 classes, 28x28) whose classes are learnable: class c is a bright
    horizontal band at rows 2c..2c+7 plus noise."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, per in (("train", train_per_class), ("t10k", test_per_class)):
        labels = np.repeat(np.arange(10), per)
        rng.shuffle(labels)
        images = rng.integers(0, 60, (len(labels), 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c:2 * c + 8] += 150
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)
    return root


MODES = ("L", "RGB", "RGBA", "LA", "P", "CMYK", "I;16")


def _pil_image(arr: np.ndarray, mode: str):
    """A uint8 greyscale array [H, W] as a Pillow image of `mode` (16-bit: values * 257)."""
    from PIL import Image

    grey = Image.fromarray(arr.astype(np.uint8))
    if mode == "I;16":
        return Image.fromarray(arr.astype(np.uint16) * 257)
    if mode in ("RGBA", "LA"):
        im = grey.convert(mode)
        im.putalpha(255)
        return im
    return grey.convert(mode)


def image_folder(root: Path, classes: int = 3, per_class: int = 6, *, layout: str = "train/val",
                 test_per_class: int = 2, sizes: tuple[int, int] = (20, 40), modes: tuple[str, ...] = ("L",),
                 seed: int = 0) -> Path:
    """A learnable ImageFolder of real image files: class c has a bright band at the c-th fifth of the rows, on
    noise, at random sizes in `sizes` (square or not) and cycling through `modes` (PNG; CMYK as JPEG).
    layout 'train/val' or 'train/test' writes both splits; 'flat' writes root/<class>/ only."""
    rng = np.random.default_rng(seed)
    splits = [("", per_class)] if layout == "flat" else [("train", per_class), (layout.split("/")[1], test_per_class)]
    k = 0
    for split, n in splits:
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
                arr = rng.integers(0, 60, (h, w))
                arr[int(h * c / classes):int(h * (c + 1) / classes)] += 150
                mode = modes[k % len(modes)]
                k += 1
                ext = "jpg" if mode == "CMYK" else "png"
                _pil_image(arr, mode).save(folder / f"{i:04d}.{ext}")
    return root
