"""Scanning your own folder: its layout, classes and image files, checked (`scan_folder`, `check_folder`), and
split when it has no val/ or test/ folder (stratified, seed `SPLIT_SEED`). The layouts and rules are in
data/folder.py's docstring; a bad folder raises `FolderError` in one sentence.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .types import SHOW, FolderError

__all__ = ["FolderScan", "check_folder", "scan_folder", "IMG_EXTENSIONS", "SPLIT_SEED"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
SPLIT_SEED = 0


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
