"""Small data sets written in the real on-disk formats, shared by the tests."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

__all__ = ["write_idx", "fake_fashion_mnist"]


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
