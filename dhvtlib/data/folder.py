"""Your own data set: any folder of class folders, checked, split, decoded once into memory and cached on disk.

Layouts: `root/train/<class>/` with `root/val/<class>/` (or `root/test/<class>/`); or `root/<class>/` only (and
`root/train/` alone), which is split here: stratified, `val_fraction` of each class, seed 0 (the same split for every
run and seed, like the fixed test subsets), recorded in the run's manifest.

Rules, stated once:
- **Decoding** (`load_image`): the first frame; 16-bit and 32-bit greyscale scaled to 8 bits (v / 257), float
  images as 0..1 or 0..255; transparency (RGBA, LA, P with a transparent colour) composited over white; CMYK and
  other modes through Pillow's conversion; then Pillow's `convert('L')` (ITU-R 601 luma) for 1 channel or
  `convert('RGB')` for 3. `in_chans` (None) is 1 when every image of the folder is greyscale, else 3.
- **Resize** (`stored_size`): what DeiT's (timm's) evaluation transform does, applied once: the shorter side to S
  (bicubic, Pillow's antialiasing), then a centre crop S x S, with S = img_size when img_size <= 32 (DeiT's small
  images: no resize at test time, RandomCrop(img_size, padding=4) for training, as CIFAR) and S =
  int(img_size / 0.875) above 32 (then training takes bicubic RandomResizedCrops of the stored square and testing
  its centre img_size crop: exactly timm's Resize(int(img_size / 0.875)) + CenterCrop(img_size)).
- **img_size** (None): the median shorter side of the training images rounded to a multiple of the patch size,
  between 2 patches and min(224, 16 patches) (at most 256 tokens).
- **Mean/std** (`mean_std`): 'auto' is the training split's own per-channel statistics on the in-memory path
  (computed from the decoded images, cached with them) and ImageNet's on the file path; 'train' or 'imagenet'
  force one (1-channel ImageNet statistics: the channel means of ImageNet's).
- **Memory**: the decoded uint8 tensors of both splits must fit `memory_budget_gb` (None: a quarter of the RAM),
  else the folder is read from files (DataLoader workers, the same resize rule in PIL).
- **Cache**: `<cache_dir>/<key>.pt`, a `torch.save` of tensors and a JSON string, loaded with weights_only=True and
  written atomically; cache_dir None is the user's cache directory (`$XDG_CACHE_HOME/dhvtlib/<folder>-<hash>`, see
  data/cache.py), never the data folder. The key hashes every file's relative path, size and mtime, the stored
  size, channels, the decode rule version and the skipped files, so a changed file, size or rule rebuilds it; a
  cache missing a field (another version) is rebuilt too, and the `KEEP` most recently used ones per folder are kept.
  `python -m dhvtlib.data cache list|clear` shows and removes them.
- **Bad folders** raise `FolderError` (a ValueError) with one sentence naming the value and the fix; files that are
  not images, or cannot be decoded, are named (the first few) and skipped only with `skip_bad_files=True`, listed
  in the manifest. Hidden files and folders (.name) are ignored and counted.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import statistics
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from PIL import Image

from ..files import atomic_write
from ..models.dhvt import IMAGENET_MEAN, IMAGENET_STD
from .cache import LEGACY_NAME, folder_cache, prune, touch, writable_cache
from .types import DatasetInfo, FolderError, InMemoryImages

__all__ = ["FolderError", "FolderScan", "OwnData", "check_folder", "scan_folder", "load_image", "stored_size",
           "infer_img_size", "own_data", "FileImages", "IMG_EXTENSIONS", "RULE", "default_memory_budget"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
RULE = "deit-eval-v1"  # the decode + resize rule; bump to invalidate caches when it changes
RULE_TEXT = ("shorter side to S (bicubic, antialiased), centre crop S x S; S = img_size if img_size <= 32 else "
             "int(img_size / 0.875)")
SPLIT_SEED = 0
SHOW = 5  # bad files named in an error sentence
IMAGENET_GREY = ((sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,))


# ----------------------------------------------------------------------------------------------------- scanning

@dataclass
class FolderScan:
    """What is in a data folder: classes, (relative path, label) pairs of each split, and what was left out."""
    root: Path
    layout: str  # 'train/val', 'train/test' or 'split' (class folders only: split here by val_fraction)
    classes: list[str]
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    not_images: list[str] = field(default_factory=list)  # files without an image extension (relative paths)
    hidden: int = 0  # hidden files and folders ignored
    val_fraction: float | None = None

    @property
    def files(self) -> list[str]:
        return [p for p, _ in self.train + self.test]


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of what `path` leads to, or None when it cannot be followed (a broken link)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk(folder: Path, root: Path, seen: dict[tuple[int, int], str] | None = None
          ) -> tuple[list[str], list[str], int]:
    """(image files, other files, hidden count) under folder, relative to root, sorted, following links. `seen`
    (shared by one scan) holds every real folder and file met: each is read once, so a link loop or a folder or
    image reached twice (it would be labelled twice, or copied into the test split) is refused in one sentence."""
    seen = {} if seen is None else seen
    images, others, hidden = [], [], 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        _see(seen, Path(dirpath), root, "folder")
        hidden += sum(d.startswith(".") for d in dirnames) + sum(f.startswith(".") for f in filenames)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            _see(seen, Path(dirpath, name), root, "file")
            rel = Path(dirpath, name).relative_to(root).as_posix()
            (images if name.lower().endswith(IMG_EXTENSIONS) else others).append(rel)
    return images, others, hidden


def _see(seen: dict[tuple[int, int], str], path: Path, root: Path, what: str) -> None:
    key = _identity(path)
    if key is None:
        return  # a broken link: named later as an unreadable file
    rel = path.relative_to(root).as_posix() if path != root else "."
    first = seen.setdefault(key, rel)
    if first != rel:
        loop = what == "folder" and (first == "." or (rel + "/").startswith(first + "/"))
        raise FolderError(f"{what} {root / rel} is {root / first} reached a second time through a link"
                          f"{' (a loop)' if loop else ''}; remove the link (or copy the files) so that every image "
                          "is read once, under one class.")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _read_split(root: Path, folder: Path, what: str, seen: dict[tuple[int, int], str]
                ) -> tuple[dict[str, list[str]], list[str], int]:
    """{class: image files} of one split folder, non-image files, hidden count; empty splits and empty class
    folders raise."""
    classes = _class_dirs(folder)
    if not classes:
        loose = [e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
        if loose:
            raise FolderError(f"{folder} holds {len(loose)} files but no class folders; put each class's images in "
                              f"{folder}/<class>/ (one folder per class).")
        raise FolderError(f"{folder} is empty; put each class's images in {folder}/<class>/ (one folder per class).")
    per_class, others, hidden = {}, [], 0
    for c in classes:
        images, other, h = _walk(folder / c, root, seen)
        others += other
        hidden += h
        if not images and not other:
            raise FolderError(f"class folder {folder / c} of the {what} split holds no images; add images to it or "
                              "remove it.")
        per_class[c] = images
    return per_class, others, hidden


def check_folder(root: str | os.PathLike | None, val_fraction: float = 0.2) -> FolderScan:
    """`scan_folder`, with one sentence when no folder is given: what a notebook checks before any training."""
    if not root:
        raise FolderError("data_dir is not set; point it at your folder of class folders (root/<class>/*.png, or "
                          "root/train/<class>/ and root/val/<class>/).")
    return scan_folder(root, val_fraction)


def scan_folder(root: str | os.PathLike, val_fraction: float = 0.2) -> FolderScan:
    """Find the layout, classes and files of `root` (see the module docstring); bad folders raise FolderError."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist; pass --data-dir with a folder of class folders "
                                "(root/<class>/*.png) or of train/ and val/ (or test/) class folders.")
    if not 0.0 < val_fraction < 1.0:
        raise FolderError(f"val_fraction {val_fraction} must lie strictly between 0 and 1 (0.2 keeps a fifth "
                          "of each class for testing).")
    train_dir = root / "train"
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    seen: dict[tuple[int, int], str] = {}  # every real folder and file, once for the whole folder
    for d in (root, train_dir, test_dir):
        if d is not None and d.is_dir():
            _see(seen, d, root, "folder")
    if train_dir.is_dir() and test_dir is not None:
        train, others, hidden = _read_split(root, train_dir, "train", seen)
        test, others_t, hidden_t = _read_split(root, test_dir, test_dir.name, seen)
        layout, others, hidden = f"train/{test_dir.name}", others + others_t, hidden + hidden_t
        extra = sorted(set(test) - set(train))
        if extra:
            raise FolderError(f"{test_dir} has class folder(s) {extra[:SHOW]} that {train_dir} lacks, so they could "
                              f"never be predicted; add them to train/ or remove them from {test_dir.name}/.")
        missing = sorted(set(train) - set(test))
        if missing:
            warnings.warn(f"{test_dir} has no folder for class(es) {missing[:SHOW]} of {train_dir}; they are "
                          "trained on but not tested.", stacklevel=2)
        classes = sorted(train)
        scan = FolderScan(root, layout, classes, _pairs(train, classes), _pairs(test, classes), others, hidden)
    else:
        source = train_dir if train_dir.is_dir() else root
        per_class, others, hidden = _read_split(root, source, "train", seen)
        classes = sorted(per_class)
        train, test = _stratified_split(per_class, classes, val_fraction)
        scan = FolderScan(root, "split", classes, train, test, others, hidden, val_fraction)
    if len(scan.classes) < 2:
        raise FolderError(f"{root} has one class folder ({scan.classes[0]!r}); a classifier needs at least two "
                          "classes, so add a folder per class.")
    return scan


def _pairs(per_class: dict[str, list[str]], classes: list[str]) -> list[tuple[str, int]]:
    index = {c: i for i, c in enumerate(classes)}
    return [(p, index[c]) for c in sorted(per_class) for p in per_class[c]]


def _stratified_split(per_class: dict[str, list[str]], classes: list[str], fraction: float
                      ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """round(fraction * n) images of each class (at least 1 when the class has 2 or more, never all) to the test
    split, chosen by one torch.Generator(SPLIT_SEED) permuting each class in class order."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    train, test = [], []
    for label, c in enumerate(classes):
        files = per_class[c]
        n = len(files)
        k = min(max(round(fraction * n), 1 if n >= 2 else 0), n - 1) if n else 0
        perm = torch.randperm(n, generator=g).tolist()
        chosen = set(perm[:k])
        test += [(files[i], label) for i in sorted(chosen)]
        train += [(files[i], label) for i in range(n) if i not in chosen]
    return train, test


# ----------------------------------------------------------------------------------------------------- decoding

def _flatten_mode(im):
    """Any Pillow image -> 'L' or 'RGB' with 8 bits (see the module docstring)."""
    from PIL import Image

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
    from PIL import Image

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


def _decode(root: Path, rel: str, channels: int, size: int) -> np.ndarray:
    """One file as uint8 [C, size, size]: torchvision's Resize(size, bicubic) (shorter side, Pillow's antialias)
    + CenterCrop(size), as timm's evaluation transform."""
    from .augment.pil import _fit

    im = _open(root / rel, channels)
    for t in _fit(size):
        im = t(im)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _header(path: Path) -> tuple[int, int, str] | str:
    """(width, height, mode) from the file header (no decode), or the reason it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size[0], im.size[1], im.mode
    except _DECODE_ERRORS as e:
        return _reason(e)


# ----------------------------------------------------------------------------------------------------- sizes

def infer_img_size(shorter_sides: Sequence[int], patch: int) -> tuple[int, str]:
    """(img_size, why): the median shorter side rounded to a multiple of `patch`, within [2 patches,
    min(224, 16 patches)]."""
    med = statistics.median(shorter_sides)
    lo, hi = 2 * patch, min(224 // patch * patch, 16 * patch)
    size = min(max(int(med / patch + 0.5) * patch, lo), hi)  # half up
    why = (f"the median shorter side of the {len(shorter_sides)} training images is {med:g} px, rounded to a "
           f"multiple of the patch size {patch}")
    if size == hi and med > hi:
        why += f" and capped at {hi} ({(hi // patch) ** 2} tokens)"
    elif size == lo and med < lo:
        why += f" and raised to {lo} (2 patches a side)"
    return size, why


def default_memory_budget() -> int:
    """A quarter of the machine's RAM, in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _patch_size(model: str, model_kwargs: dict[str, Any]) -> int:
    from ..models import VARIANTS

    if "patch_size" in model_kwargs:
        return int(model_kwargs["patch_size"])
    v = VARIANTS.get(model)
    return int(v.arch.get("patch_size", 1)) if v is not None else 1


# ----------------------------------------------------------------------------------------------------- caching

def _cache_dir(root: Path, cache_dir: str | os.PathLike | None) -> Path:
    """The cache directory asked for, else the folder's own one in the user's cache (never inside `root`), created
    and checked for writing (one sentence naming it otherwise)."""
    try:
        if cache_dir is not None:
            return writable_cache(Path(cache_dir))
        return writable_cache(folder_cache(root), data_root=root)
    except ValueError as e:
        raise FolderError(str(e)) from None


def _fingerprint(root: Path, files: Sequence[str]) -> str:
    """sha256 of every file's relative path, size and mtime (ns)."""
    h = hashlib.sha256()
    for rel in files:
        st = os.stat(root / rel)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _save(path: Path, obj: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_write(path) as f:
        f.write(buf.getbuffer())


def _load(path: Path, fields: Sequence[str] = ()) -> dict[str, Any] | None:
    """A cache file holding every one of `fields`, or None when absent, unreadable or written by another version
    (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        got = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a corrupt cache is rebuilt, never trusted
        return None
    if not isinstance(got, dict) or any(f not in got for f in fields):
        return None
    touch(path)
    return got


_CACHE_FIELDS = ("key", "train_images", "train_targets", "test_images", "test_targets", "mean", "std", "late_skipped")


# ----------------------------------------------------------------------------------------------------- the data

@dataclass
class OwnData:
    """A prepared folder: the splits (InMemoryImages or FileImages), what a model and evaluation need, and a
    manifest-ready description (`details`)."""
    train: Any
    test: Any
    classes: list[str]
    img_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_memory: bool
    config: dict[str, Any]  # what evaluation needs to rebuild the same test split (recorded in checkpoints)
    details: dict[str, Any]  # split, counts, skipped files, choices and reasons (recorded in the manifest)

    def examples(self, n: int = 4) -> tuple[torch.Tensor, list[int]]:
        """The first n test images as the model sees them (uint8 [n, C, img_size, img_size], centre crop of the
        stored square) and their labels, e.g. for head-token maps."""
        from .augment import resize_center_crop

        n = min(n, len(self.test))
        if self.in_memory:
            x = self.test.images[:n]
        else:
            x = torch.stack([torch.from_numpy(_decode(self.test.root, self.test.samples[i][0], self.in_chans,
                                                      stored_size(self.img_size))) for i in range(n)])
        if x.shape[-1] != self.img_size:
            x = resize_center_crop(x, self.img_size).to(torch.uint8)
        return x, [int(self.test.targets[i]) for i in range(n)]

    def info(self):
        """The `DatasetInfo` a model and the engine read."""
        return DatasetInfo("imagefolder", len(self.classes), self.in_chans, self.img_size, self.mean, self.std,
                           self.in_memory, len(self.train), len(self.test), f"image folder {self.details['root']}",
                           config=self.config, details=self.details)


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


def _say(verbose: bool, msg: str) -> None:
    if verbose:  # information (what was chosen and why), on stdout: a notebook shows no red stderr block
        print(msg, flush=True)


def _bad_sentence(root: Path, bad: list[tuple[str, str]]) -> str:
    named = "; ".join(f"{p} ({why})" for p, why in bad[:SHOW])
    more = f" and {len(bad) - SHOW} more" if len(bad) > SHOW else ""
    return (f"{len(bad)} file(s) in {root} are not readable images: {named}{more}; delete or fix them, or pass "
            "skip_bad_files=True (--skip-bad-files true) to skip them (listed in the run's manifest).")


def _headers(root: Path, scan: FolderScan, cache: Path, fingerprint: str) -> dict[str, Any]:
    """Header size and mode of every image (cached by the folder's fingerprint)."""
    path = cache / f"headers-{fingerprint[:24]}.pt"
    got = _load(path, ("fingerprint", "headers"))
    if got is not None and got.get("fingerprint") == fingerprint:
        return json.loads(got["headers"])
    headers = {rel: _header(root / rel) for rel in scan.files}
    _save(path, {"fingerprint": fingerprint, "headers": json.dumps(headers)})
    return headers


def own_data(root: str | os.PathLike, *, model: str = "dhvt_tiny_cifar_patch4", model_kwargs: dict | None = None,
             img_size: int | None = None, in_chans: int | None = None, val_fraction: float = 0.2,
             mean_std: str = "auto", skip_bad_files: bool = False, memory_budget_gb: float | None = None,
             cache_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             stats: tuple[Sequence[float], Sequence[float]] | None = None, verbose: bool = True) -> OwnData:
    """Scan, check, split, size and load a folder (see the module docstring). `stats`=(mean, std) pins the
    normalisation (evaluation of a checkpoint passes what training used); prints its choices when verbose."""
    root = Path(root)
    if mean_std not in ("auto", "train", "imagenet"):
        raise FolderError(f"mean_std {mean_std!r} is not supported; use 'auto', 'train' or 'imagenet'.")
    if in_chans not in (None, 1, 3):
        raise FolderError(f"in_chans {in_chans} is not supported for image folders; use 1 (greyscale) or 3 (RGB).")
    if memory_budget_gb is not None and memory_budget_gb < 0:
        raise FolderError(f"memory_budget_gb {memory_budget_gb} must be >= 0 (0 reads the files every epoch).")
    t0 = time.perf_counter()
    scan = scan_folder(root, val_fraction)
    cache = _cache_dir(root, cache_dir)
    if (root / LEGACY_NAME).is_dir() and cache != root / LEGACY_NAME:
        _say(verbose, f"{root / LEGACY_NAME} is a cache an earlier version left inside your folder (torchvision's "
                      f"ImageFolder reads it as a class); remove it: python -m dhvtlib.data cache clear {root}")
    if scan.not_images and not skip_bad_files:
        raise FolderError(_bad_sentence(root, [(p, "not an image file extension") for p in scan.not_images]))
    fingerprint = _fingerprint(root, scan.files)
    headers = _headers(root, scan, cache, fingerprint)
    bad = [(p, h) for p, h in headers.items() if isinstance(h, str)]
    if bad and not skip_bad_files:
        raise FolderError(_bad_sentence(root, bad))
    skipped = sorted(scan.not_images) + [p for p, _ in bad]
    bad_set = {p for p, _ in bad}
    train = [(p, t) for p, t in scan.train if p not in bad_set]
    test = [(p, t) for p, t in scan.test if p not in bad_set]
    details: dict[str, Any] = {"root": str(root), "layout": scan.layout, "hidden_ignored": scan.hidden}

    # channels and size
    modes = Counter(headers[p][2] for p, _ in train + test)
    grey = all(m in GREY_MODES for m in modes)
    chans = in_chans or (1 if grey else 3)
    details["modes"] = dict(modes)
    details["in_chans"] = {"value": chans, "why": "given" if in_chans else
                           ("every image is greyscale" if grey else "some images have colour")}
    patch = _patch_size(model, model_kwargs or {})
    if img_size is None:
        img_size, why = infer_img_size([min(headers[p][:2]) for p, _ in train], patch)
        _say(verbose, f"img_size {img_size}: {why} ({(img_size // patch) ** 2} tokens); pass img_size= (--img-size) to choose.")
    else:
        why = "given"
    details["img_size"] = {"value": img_size, "why": why}
    tokens = (img_size // max(patch, 1)) ** 2
    if tokens > (256 if torch.device(device).type == "cpu" else 1024):
        warnings.warn(f"img_size {img_size} with patch size {patch} gives {tokens} tokens per image, slow on "
                      f"{torch.device(device).type}; pass a smaller img_size= (--img-size), e.g. {min(64, 16 * patch)}.",
                      stacklevel=2)
    size = stored_size(img_size)

    # class balance
    counts = [0] * len(scan.classes)
    for _, t in train:
        counts[t] += 1
    empty = [scan.classes[i] for i, n in enumerate(counts) if n == 0]
    if empty:
        raise FolderError(f"class(es) {empty[:SHOW]} have no training images left (after the split or skipping); "
                          "add images, or lower val_fraction.")
    lo, hi = min(counts), max(counts)
    details["train_counts"] = dict(zip(scan.classes, counts))
    details["test_counts"] = dict(zip(scan.classes, [sum(t == i for _, t in test) for i in range(len(counts))]))
    details["imbalance"] = round(hi / lo, 3)
    untested = [c for c, n in details["test_counts"].items() if n == 0]
    if untested and test and (scan.layout == "split" or skipped):  # (a missing val/ folder already warns)
        warnings.warn(f"class(es) {untested[:SHOW]} have no test images (too few images to split, or all skipped); "
                      "they are trained on but not tested.", stacklevel=2)
    if hi > 2 * lo:
        _say(verbose, f"class imbalance: {scan.classes[counts.index(hi)]!r} has {hi} training images, "
                      f"{scan.classes[counts.index(lo)]!r} {lo} ({hi / lo:.1f}x); accuracy favours the large classes.")
    if not test:
        raise FolderError(f"{root} leaves no images to test on; add a val/ (or test/) folder or more images per "
                          "class.")
    details["split"] = {"layout": scan.layout, "val_fraction": scan.val_fraction, "seed": SPLIT_SEED,
                        "test_files": [p for p, _ in test] if scan.layout == "split" else None}
    details["skipped"] = skipped

    need = (len(train) + len(test)) * chans * size * size
    budget = default_memory_budget() if memory_budget_gb is None else int(memory_budget_gb * 2**30)
    in_memory = need <= budget
    details["memory"] = {"decoded_bytes": need, "budget_bytes": budget, "in_memory": in_memory}
    config = {"dataset": "imagefolder", "img_size": img_size, "in_chans": chans, "stored_size": size,
              "resize": RULE_TEXT, "rule": RULE, "val_fraction": val_fraction, "split_seed": SPLIT_SEED,
              "skip_bad_files": skip_bad_files, "classes": scan.classes}
    if not in_memory:
        _say(verbose, f"{root}: {_size(need)} decoded exceeds the memory budget of {_size(budget)}; reading the "
                      "files every epoch (raise --memory-budget-gb to decode once).")
        mean, std = _imagenet(chans) if stats is None else stats
        choice = "imagenet" if stats is None else "given"
        if mean_std == "train" and stats is None:
            raise FolderError(f"mean_std 'train' needs the decoded training split in memory, but {_size(need)} "
                              "exceeds the budget; raise --memory-budget-gb or use mean_std 'imagenet'.")
        details["mean_std"] = {"choice": choice, "mean": list(mean), "std": list(std)}
        config.update(mean=list(mean), std=list(std))
        return OwnData(FileImages(root, train, scan.classes, chans), FileImages(root, test, scan.classes, chans),
                       scan.classes, img_size, chans, tuple(mean), tuple(std), False, config, details)

    key = hashlib.sha256(json.dumps([fingerprint, size, chans, RULE, skipped, train, test]).encode()).hexdigest()
    path = cache / f"{key[:24]}.pt"
    data = _load(path, _CACHE_FIELDS)
    if data is None or data.get("key") != key:
        _say(verbose, f"decoding {len(train) + len(test)} images of {root} at {size}x{size} ({chans} channel(s)) "
                      f"into {path} (once) ...")
        data = _decode_all(root, train, test, size, chans, skip_bad_files)
        data["key"] = key
        _save(path, data)
        prune(cache)
        details["cache"] = {"path": str(path), "built_s": round(time.perf_counter() - t0, 2)}
    else:
        details["cache"] = {"path": str(path), "loaded_s": round(time.perf_counter() - t0, 2)}
    late = json.loads(data["late_skipped"])  # [path, reason]: headers fine, decoding failed
    if late and not skip_bad_files:  # (a cache built with skip_bad_files=True)
        raise FolderError(_bad_sentence(root, [tuple(x) for x in late]))
    if late:
        details["skipped"] = skipped + [p for p, _ in late]
    train_ds = InMemoryImages(data["train_images"], data["train_targets"], scan.classes)
    test_ds = InMemoryImages(data["test_images"], data["test_targets"], scan.classes)
    if stats is not None:
        mean, std, choice = tuple(stats[0]), tuple(stats[1]), "given"
    elif mean_std == "imagenet":
        (mean, std), choice = _imagenet(chans), "imagenet"
    else:
        mean, std, choice = tuple(data["mean"].tolist()), tuple(data["std"].tolist()), "train"
    details["mean_std"] = {"choice": choice, "mean": list(mean), "std": list(std)}
    config.update(mean=list(mean), std=list(std))
    return OwnData(train_ds, test_ds, scan.classes, img_size, chans, tuple(mean), tuple(std), True, config, details)


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _imagenet(chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (IMAGENET_MEAN, IMAGENET_STD) if chans == 3 else IMAGENET_GREY


def _decode_all(root: Path, train: list[tuple[str, int]], test: list[tuple[str, int]], size: int, chans: int,
                skip_bad_files: bool) -> dict[str, Any]:
    """Decode both splits into uint8 tensors (two threads: Pillow releases the GIL while decoding and resizing),
    plus the training split's per-channel mean and std."""
    from concurrent.futures import ThreadPoolExecutor

    def one(rel: str):
        try:
            return _decode(root, rel, chans, size)
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
        raise FolderError(_bad_sentence(root, late))
    x = out["train_images"]
    flat = x.transpose(0, 1).reshape(chans, -1).double() / 255.0
    out["mean"] = flat.mean(dim=1).float()
    out["std"] = flat.std(dim=1).clamp_min(1e-3).float()
    out["late_skipped"] = json.dumps(late)
    return out
