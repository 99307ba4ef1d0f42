"""Decoding your own folder's images once (the Decoding, Resize and Cache rules are in data/folder.py's docstring).

- One file: `load_image` (an 8-bit 'L' or 'RGB' Pillow image), `decode_file` (uint8 [C, S, S], S = `stored_size`).
- Every image's header size and mode, cached by the folder's fingerprint: `read_headers`.
- Both splits as uint8 tensors with the training split's mean/std, cached under a key of everything they depend
  on: `decoded_cache_path`, `load_decoded`, `decode_and_save`.
- `FileImages`: the file path of a folder too large for memory (each item decoded by `load_image`).
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .augment.pil import pil_fit
from .cache import load_cache, prune, save_cache
from .types import SHOW, FolderError

__all__ = ["load_image", "stored_size", "decode_file", "read_headers", "bad_files_sentence", "FileImages",
           "decoded_cache_path", "load_decoded", "decode_and_save", "GREY_MODES", "RULE", "RULE_TEXT"]

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
RULE = "deit-eval-v1"  # the decode + resize rule; bump to invalidate caches when it changes
RULE_TEXT = ("shorter side to S (bicubic, antialiased), centre crop S x S; S = img_size if img_size <= 32 else "
             "int(img_size / 0.875)")
_CACHE_FIELDS = ("key", "train_images", "train_targets", "test_images", "test_targets", "mean", "std", "late_skipped")


# ----------------------------------------------------------------------------------------------------- one file

def _flatten_mode(im):
    """Any Pillow image -> 'L' or 'RGB' with 8 bits (the Decoding rule in data/folder.py's docstring)."""
    mode = im.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        if mode == "F":
            a = a * 255.0 if a.size and a.max() <= 1.0 else a
        elif mode != "I" or (a.size and a.max() > 255):
            a = a / 257.0  # 16-bit range 0..65535 -> 0..255
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("LA", "La", "RGBA", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(white, rgba).convert("RGB")
        return out.convert("L") if im.mode in ("LA", "La") else out
    if im.mode in ("1", "L", "RGB"):
        return im.convert("L") if im.mode == "1" else im
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


# PIL.UnidentifiedImageError is an OSError; an image over twice Pillow's pixel limit (a decompression bomb) is
# refused like any unreadable file
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _reason(e: BaseException) -> str:
    first = str(e).splitlines()[0] if str(e) else "unreadable"
    return f"{type(e).__name__}: {first}"


def _open(path: str | os.PathLike, channels: int):
    with Image.open(path) as im:
        im.load()
        return _flatten_mode(im).convert("L" if channels == 1 else "RGB")


def load_image(path: str | os.PathLike, channels: int = 3):
    """Decode one image file as an 8-bit 'L' (channels=1) or 'RGB' (channels=3) Pillow image; an unreadable file
    raises FolderError naming it."""
    try:
        return _open(path, channels)
    except _DECODE_ERRORS as e:
        raise FolderError(f"cannot decode image {path} ({_reason(e)}); delete or replace it, or pass "
                          "skip_bad_files=True (--skip-bad-files true).") from None


def stored_size(img_size: int) -> int:
    """The side of the stored square: img_size (<= 32 px, DeiT's small-image regime), else int(img_size / 0.875)."""
    return img_size if img_size <= 32 else int(img_size / 0.875)


def decode_file(root: Path, rel: str, channels: int, size: int) -> np.ndarray:
    """One file as uint8 [C, size, size]: torchvision's Resize(size, bicubic) (shorter side, Pillow's antialias)
    + CenterCrop(size), as timm's evaluation transform."""
    im = _open(root / rel, channels)
    for t in pil_fit(size):
        im = t(im)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _header(path: Path) -> tuple[int, int, str] | str:
    """(width, height, mode) from the file header (no decode), or the reason it cannot be read."""
    try:
        with Image.open(path) as im:
            return im.size[0], im.size[1], im.mode
    except _DECODE_ERRORS as e:
        return _reason(e)


def read_headers(root: Path, files: Sequence[str], cache: Path, fingerprint: str) -> dict[str, Any]:
    """Header size and mode of every image (cached by the folder's fingerprint)."""
    path = cache / f"headers-{fingerprint[:24]}.pt"
    got = load_cache(path, ("fingerprint", "headers"))
    if got is not None and got.get("fingerprint") == fingerprint:
        return json.loads(got["headers"])
    headers = {rel: _header(root / rel) for rel in files}
    save_cache(path, {"fingerprint": fingerprint, "headers": json.dumps(headers)})
    return headers


def bad_files_sentence(root: Path, bad: list[tuple[str, str]]) -> str:
    """The FolderError sentence for unreadable files ((relative path, reason) pairs): the first `SHOW` named."""
    named = "; ".join(f"{p} ({why})" for p, why in bad[:SHOW])
    more = f" and {len(bad) - SHOW} more" if len(bad) > SHOW else ""
    return (f"{len(bad)} file(s) in {root} are not readable images: {named}{more}; delete or fix them, or pass "
            "skip_bad_files=True (--skip-bad-files true) to skip them (listed in the run's manifest).")


class FileImages(Dataset):
    """(path, label) samples decoded by `load_image` with `transform` applied: the file path of a folder that
    does not fit the memory budget."""

    def __init__(self, root: Path, samples: Sequence[tuple[str, int]], classes: Sequence[str], channels: int,
                 transform: Callable | None = None):
        self.root, self.samples, self.classes, self.channels = Path(root), list(samples), list(classes), channels
        self.targets = [t for _, t in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        rel, target = self.samples[index]
        im = load_image(self.root / rel, self.channels)
        return (self.transform(im) if self.transform is not None else im), target


# ----------------------------------------------------------------------------------------------------- both splits

def _decode_all(root: Path, train: list[tuple[str, int]], test: list[tuple[str, int]], size: int, chans: int,
                skip_bad_files: bool) -> dict[str, Any]:
    """Decode both splits into uint8 tensors (two threads: Pillow releases the GIL while decoding and resizing),
    plus the training split's per-channel mean and std."""

    def one(rel: str):
        try:
            return decode_file(root, rel, chans, size)
        except _DECODE_ERRORS as e:
            return _reason(e)

    out: dict[str, Any] = {}
    late: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        for name, samples in (("train", train), ("test", test)):
            arrays = list(pool.map(one, [p for p, _ in samples], chunksize=64))
            ok = [i for i, a in enumerate(arrays) if not isinstance(a, str)]
            late += [(samples[i][0], a) for i, a in enumerate(arrays) if isinstance(a, str)]
            images = np.stack([arrays[i] for i in ok]) if ok else np.zeros((0, chans, size, size), np.uint8)
            out[f"{name}_images"] = torch.from_numpy(images)
            out[f"{name}_targets"] = torch.tensor([samples[i][1] for i in ok], dtype=torch.long)
    if late and not skip_bad_files:
        raise FolderError(bad_files_sentence(root, late))
    x = out["train_images"]
    flat = x.transpose(0, 1).reshape(chans, -1).double() / 255.0
    out["mean"] = flat.mean(dim=1).float()
    out["std"] = flat.std(dim=1).clamp_min(1e-3).float()
    out["late_skipped"] = json.dumps(late)
    return out


def decoded_cache_path(cache: Path, fingerprint: str, size: int, chans: int, skipped: list[str],
                       train: list[tuple[str, int]], test: list[tuple[str, int]]) -> tuple[Path, str]:
    """(the decoded-image cache file, its full key) of a folder decoded at size x size with chans channels."""
    key = hashlib.sha256(json.dumps([fingerprint, size, chans, RULE, skipped, train, test]).encode()).hexdigest()
    return cache / f"{key[:24]}.pt", key


def load_decoded(path: Path, key: str) -> dict[str, Any] | None:
    """The decoded splits cached at `path` under `key`, or None (absent, unreadable, another version or key)."""
    data = load_cache(path, _CACHE_FIELDS)
    return None if data is None or data.get("key") != key else data


def decode_and_save(path: Path, key: str, root: Path, train: list[tuple[str, int]], test: list[tuple[str, int]],
                    size: int, chans: int, skip_bad_files: bool) -> dict[str, Any]:
    """Decode both splits (`_decode_all`), cache them at `path` under `key` and prune the folder's older caches."""
    data = _decode_all(root, train, test, size, chans, skip_bad_files)
    data["key"] = key
    save_cache(path, data)
    prune(path.parent)
    return data
