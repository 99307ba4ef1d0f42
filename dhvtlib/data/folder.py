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
  between 2 patches and min(224, 16 patches) (at most 256 tokens); decided in one place, `_decide_img_size`, for
  `own_data` and `own_image_size`.
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

Where: scanning and splitting in data/scan.py, decoding and the header and decoded-image caches in data/decode.py,
the cache directory and cache files in data/cache.py; here, the choices (channels, image size, memory, mean/std)
and `own_data`, which assembles them. `own_image_size` is the image size alone (headers only, no decoding).
"""
from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..models import VARIANTS
from ..models.dhvt import IMAGENET_MEAN, IMAGENET_STD
from .augment import resize_center_crop
from .cache import LEGACY_NAME, cache_dir_for, fingerprint
from .decode import (GREY_MODES, RULE, RULE_TEXT, FileImages, bad_files_sentence, decode_and_save, decode_file,
                     decoded_cache_path, load_decoded, load_image, read_headers, stored_size)
from .scan import IMG_EXTENSIONS, SPLIT_SEED, FolderScan, check_folder, scan_folder
from .types import SHOW, DatasetInfo, FolderError, InMemoryImages

__all__ = ["FolderError", "FolderScan", "OwnData", "check_folder", "scan_folder", "load_image", "stored_size",
           "infer_img_size", "own_data", "own_image_size", "FileImages", "IMG_EXTENSIONS", "RULE",
           "default_memory_budget"]

IMAGENET_GREY = ((sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,))


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
        n = min(n, len(self.test))
        if self.in_memory:
            x = self.test.images[:n]
        else:
            x = torch.stack([torch.from_numpy(decode_file(self.test.root, self.test.samples[i][0], self.in_chans,
                                                          stored_size(self.img_size))) for i in range(n)])
        if x.shape[-1] != self.img_size:
            x = resize_center_crop(x, self.img_size).to(torch.uint8)
        return x, [int(self.test.targets[i]) for i in range(n)]

    def summary(self) -> str:
        """One line: classes, split sizes, image size, channels, layout, mean/std choice, in memory or not."""
        return (f"{len(self.classes)} classes, {len(self.train)} training / {len(self.test)} test images, "
                f"{self.img_size} px, {self.in_chans} channel(s), layout {self.details['layout']}, "
                f"mean/std: {self.details['mean_std']['choice']}, in memory: {self.in_memory}")

    def counts(self) -> list[dict[str, Any]]:
        """Images per class in each split: one {'class', 'train', 'test'} row per class."""
        train, test = self.details["train_counts"], self.details["test_counts"]
        return [{"class": c, "train": train.get(c, 0), "test": test.get(c, 0)} for c in self.classes]

    def info(self):
        """The `DatasetInfo` a model and the engine read."""
        return DatasetInfo("imagefolder", len(self.classes), self.in_chans, self.img_size, self.mean, self.std,
                           self.in_memory, len(self.train), len(self.test), f"image folder {self.details['root']}",
                           config=self.config, details=self.details)


# ----------------------------------------------------------------------------------------------------- the folder

def own_data(root: str | os.PathLike, *, model: str = "dhvt_tiny_cifar_patch4", model_kwargs: dict | None = None,
             img_size: int | None = None, in_chans: int | None = None, val_fraction: float = 0.2,
             mean_std: str = "auto", skip_bad_files: bool = False, memory_budget_gb: float | None = None,
             cache_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             stats: tuple[Sequence[float], Sequence[float]] | None = None, verbose: bool = True) -> OwnData:
    """Scan, check, split, size and load a folder (see the module docstring). `stats`=(mean, std) pins the
    normalisation (evaluation of a checkpoint passes what training used); prints its choices when verbose."""
    _check_arguments(mean_std, in_chans, memory_budget_gb)
    t0 = time.perf_counter()
    files = _usable_files(Path(root), val_fraction, cache_dir, skip_bad_files, verbose)
    root, classes = files.root, files.scan.classes
    details: dict[str, Any] = {"root": str(root), "layout": files.scan.layout, "hidden_ignored": files.scan.hidden}
    chans = _channels(files, in_chans, details)
    patch = _patch_size(model, model_kwargs or {})
    img_size, why = _decide_img_size(files, patch, img_size, verbose)
    details["img_size"] = {"value": img_size, "why": why}
    _warn_tokens(img_size, patch, device)
    size = stored_size(img_size)
    _check_classes(files, details, verbose)
    need, budget, in_memory = _fits_in_memory(files, chans, size, memory_budget_gb, details)
    config = {"dataset": "imagefolder", "img_size": img_size, "in_chans": chans, "stored_size": size,
              "resize": RULE_TEXT, "rule": RULE, "val_fraction": val_fraction, "split_seed": SPLIT_SEED,
              "skip_bad_files": skip_bad_files, "classes": classes}
    if in_memory:
        train, test, data = _decoded(files, size, chans, skip_bad_files, details, verbose, t0)
    else:
        _say(verbose, f"{root}: {_size(need)} decoded exceeds the memory budget of {_size(budget)}; reading the "
                      "files every epoch (raise --memory-budget-gb to decode once).")
        train, test = (FileImages(root, split, classes, chans) for split in (files.train, files.test))
        data = None
    mean, std = _mean_std(mean_std, stats, chans, data, need, details)
    config.update(mean=list(mean), std=list(std))
    return OwnData(train, test, classes, img_size, chans, tuple(mean), tuple(std), in_memory, config, details)


def own_image_size(root: str | os.PathLike, *, model: str = "dhvt_tiny_cifar_patch4",
                   model_kwargs: dict | None = None, img_size: int | None = None, val_fraction: float = 0.2,
                   skip_bad_files: bool = False, cache_dir: str | os.PathLike | None = None,
                   verbose: bool = True) -> int:
    """The image size `own_data` gives `root` with the same arguments (`img_size` when given, else inferred from
    the training images for `model`'s patch size, see `infer_img_size`), from the file headers only (cached, no
    decoding); prints the reason when it is inferred and verbose. Bad folders raise as in `own_data`."""
    files = _usable_files(Path(root), val_fraction, cache_dir, skip_bad_files, verbose)
    return _decide_img_size(files, _patch_size(model, model_kwargs or {}), img_size, verbose)[0]


# ----------------------------------------------------------------------------------------------------- its steps

def _check_arguments(mean_std: str, in_chans: int | None, memory_budget_gb: float | None) -> None:
    if mean_std not in ("auto", "train", "imagenet"):
        raise FolderError(f"mean_std {mean_std!r} is not supported; use 'auto', 'train' or 'imagenet'.")
    if in_chans not in (None, 1, 3):
        raise FolderError(f"in_chans {in_chans} is not supported for image folders; use 1 (greyscale) or 3 (RGB).")
    if memory_budget_gb is not None and memory_budget_gb < 0:
        raise FolderError(f"memory_budget_gb {memory_budget_gb} must be >= 0 (0 reads the files every epoch).")


@dataclass
class _Files:
    """A scanned folder's usable images (its split without the skipped files) and their headers."""
    root: Path
    scan: FolderScan
    cache: Path  # the folder's cache directory
    fingerprint: str  # of every file's relative path, size and mtime
    headers: dict[str, Any]  # relative path -> (width, height, mode), or the reason it cannot be read
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    skipped: list[str]  # not images, or unreadable headers (with skip_bad_files)


def _usable_files(root: Path, val_fraction: float, cache_dir: str | os.PathLike | None, skip_bad_files: bool,
                  verbose: bool) -> _Files:
    """Scan `root` and read every image's header; files that are not images, or whose header cannot be read,
    raise (one sentence), or with skip_bad_files are left out and listed."""
    scan = scan_folder(root, val_fraction)
    cache = cache_dir_for(root, cache_dir)
    if (root / LEGACY_NAME).is_dir() and cache != root / LEGACY_NAME:
        _say(verbose, f"{root / LEGACY_NAME} is a cache an earlier version left inside your folder (torchvision's "
                      f"ImageFolder reads it as a class); remove it: python -m dhvtlib.data cache clear {root}")
    if scan.not_images and not skip_bad_files:
        raise FolderError(bad_files_sentence(root, [(p, "not an image file extension") for p in scan.not_images]))
    folder_fingerprint = fingerprint(root, scan.files)
    headers = read_headers(root, scan.files, cache, folder_fingerprint)
    bad = [(p, h) for p, h in headers.items() if isinstance(h, str)]
    if bad and not skip_bad_files:
        raise FolderError(bad_files_sentence(root, bad))
    skipped = sorted(scan.not_images) + [p for p, _ in bad]
    bad_set = {p for p, _ in bad}
    train = [(p, t) for p, t in scan.train if p not in bad_set]
    test = [(p, t) for p, t in scan.test if p not in bad_set]
    return _Files(root, scan, cache, folder_fingerprint, headers, train, test, skipped)


def _channels(files: _Files, in_chans: int | None, details: dict[str, Any]) -> int:
    """in_chans when given, else 1 when every image is greyscale, else 3."""
    modes = Counter(files.headers[p][2] for p, _ in files.train + files.test)
    grey = all(m in GREY_MODES for m in modes)
    chans = in_chans or (1 if grey else 3)
    details["modes"] = dict(modes)
    details["in_chans"] = {"value": chans, "why": "given" if in_chans else
                           ("every image is greyscale" if grey else "some images have colour")}
    return chans


def _decide_img_size(files: _Files, patch: int, img_size: int | None, verbose: bool) -> tuple[int, str]:
    """(img_size, why): where a folder's image size is decided (`own_data` and `own_image_size`)."""
    if img_size is not None:
        return img_size, "given"
    img_size, why = infer_img_size([min(files.headers[p][:2]) for p, _ in files.train], patch)
    _say(verbose, f"img_size {img_size}: {why} ({(img_size // patch) ** 2} tokens); pass img_size= (--img-size) "
                  "to choose.")
    return img_size, why


def _warn_tokens(img_size: int, patch: int, device: str | torch.device) -> None:
    tokens = (img_size // max(patch, 1)) ** 2
    if tokens > (256 if torch.device(device).type == "cpu" else 1024):
        warnings.warn(f"img_size {img_size} with patch size {patch} gives {tokens} tokens per image, slow on "
                      f"{torch.device(device).type}; pass a smaller img_size= (--img-size), e.g. "
                      f"{min(64, 16 * patch)}.", stacklevel=3)


def _check_classes(files: _Files, details: dict[str, Any], verbose: bool) -> None:
    """Every class keeps training images; counts, imbalance and the split recorded; a class without test images
    warns, a folder without any raises."""
    scan, train, test = files.scan, files.train, files.test
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
    if untested and test and (scan.layout == "split" or files.skipped):  # (a missing val/ folder already warns)
        warnings.warn(f"class(es) {untested[:SHOW]} have no test images (too few images to split, or all skipped); "
                      "they are trained on but not tested.", stacklevel=3)
    if hi > 2 * lo:
        _say(verbose, f"class imbalance: {scan.classes[counts.index(hi)]!r} has {hi} training images, "
                      f"{scan.classes[counts.index(lo)]!r} {lo} ({hi / lo:.1f}x); accuracy favours the large classes.")
    if not test:
        raise FolderError(f"{files.root} leaves no images to test on; add a val/ (or test/) folder or more images "
                          "per class.")
    details["split"] = {"layout": scan.layout, "val_fraction": scan.val_fraction, "seed": SPLIT_SEED,
                        "test_files": [p for p, _ in test] if scan.layout == "split" else None}
    details["skipped"] = files.skipped


def _fits_in_memory(files: _Files, chans: int, size: int, memory_budget_gb: float | None,
                    details: dict[str, Any]) -> tuple[int, int, bool]:
    """(decoded bytes, budget bytes, whether they fit): both splits as uint8 tensors against the budget."""
    need = (len(files.train) + len(files.test)) * chans * size * size
    budget = default_memory_budget() if memory_budget_gb is None else int(memory_budget_gb * 2**30)
    in_memory = need <= budget
    details["memory"] = {"decoded_bytes": need, "budget_bytes": budget, "in_memory": in_memory}
    return need, budget, in_memory


def _decoded(files: _Files, size: int, chans: int, skip_bad_files: bool, details: dict[str, Any], verbose: bool,
             t0: float) -> tuple[InMemoryImages, InMemoryImages, dict[str, Any]]:
    """Both splits as uint8 tensors, from the folder's decode cache or decoded once into it, and the cache's
    content (with the training split's mean/std); files whose header was fine but which fail to decode raise
    (or, with skip_bad_files, are listed as skipped)."""
    root = files.root
    path, key = decoded_cache_path(files.cache, files.fingerprint, size, chans, files.skipped, files.train,
                                   files.test)
    data = load_decoded(path, key)
    if data is None:
        _say(verbose, f"decoding {len(files.train) + len(files.test)} images of {root} at {size}x{size} ({chans} "
                      f"channel(s)) into {path} (once) ...")
        data = decode_and_save(path, key, root, files.train, files.test, size, chans, skip_bad_files)
        details["cache"] = {"path": str(path), "built_s": round(time.perf_counter() - t0, 2)}
    else:
        details["cache"] = {"path": str(path), "loaded_s": round(time.perf_counter() - t0, 2)}
    late = json.loads(data["late_skipped"])  # [path, reason]: headers fine, decoding failed
    if late and not skip_bad_files:  # (a cache built with skip_bad_files=True)
        raise FolderError(bad_files_sentence(root, [tuple(x) for x in late]))
    if late:
        details["skipped"] = files.skipped + [p for p, _ in late]
    classes = files.scan.classes
    return (InMemoryImages(data["train_images"], data["train_targets"], classes),
            InMemoryImages(data["test_images"], data["test_targets"], classes), data)


def _mean_std(mean_std: str, stats: tuple[Sequence[float], Sequence[float]] | None, chans: int,
              data: dict[str, Any] | None, need: int, details: dict[str, Any]
              ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation: `stats` when given, else ImageNet's ('imagenet'; 'auto' on the file path) or the
    decoded training split's ('train'; 'auto' in memory). `data` is None on the file path."""
    if stats is not None:
        mean, std, choice = tuple(stats[0]), tuple(stats[1]), "given"
    elif mean_std == "imagenet" or (data is None and mean_std == "auto"):
        (mean, std), choice = _imagenet(chans), "imagenet"
    elif data is None:
        raise FolderError(f"mean_std 'train' needs the decoded training split in memory, but {_size(need)} "
                          "exceeds the budget; raise --memory-budget-gb or use mean_std 'imagenet'.")
    else:
        mean, std, choice = tuple(data["mean"].tolist()), tuple(data["std"].tolist()), "train"
    details["mean_std"] = {"choice": choice, "mean": list(mean), "std": list(std)}
    return mean, std


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
    if "patch_size" in model_kwargs:
        return int(model_kwargs["patch_size"])
    v = VARIANTS.get(model)
    return int(v.arch.get("patch_size", 1)) if v is not None else 1


def _say(verbose: bool, msg: str) -> None:
    if verbose:  # information (what was chosen and why), on stdout: a notebook shows no red stderr block
        print(msg, flush=True)


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _imagenet(chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (IMAGENET_MEAN, IMAGENET_STD) if chans == 3 else IMAGENET_GREY
