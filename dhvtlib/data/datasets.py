"""Data sets of the paper (CIFAR-100, DomainNet, ImageNet) and Fashion-MNIST: the registry, on-disk loaders and
per-class subsets.

CIFAR-10/100 and Fashion-MNIST load into `InMemoryImages` (uint8 [N, C, H, W]; augmentation runs on the batch, see
data/augment/); ImageNet and DomainNet load as torchvision `ImageFolder`s of (RGB PIL, int). Training on your own
folder ('imagefolder') goes through data/folder.py (decoded once into InMemoryImages when it fits in memory).
`DatasetInfo` and `InMemoryImages` are defined in data/types.py (re-exported here).
"""
from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
import subprocess
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Subset
from torchvision.datasets import CIFAR10, CIFAR100, FashionMNIST, ImageFolder
from torchvision.datasets.folder import find_classes
from torchvision.datasets.utils import check_integrity

from ..models.dhvt import IMAGENET_MEAN, IMAGENET_STD
from .decode import load_image
from .scan import scan_folder
from .types import DatasetInfo, InMemoryImages

__all__ = ["DatasetInfo", "DATASETS", "DOMAINNET_DOMAINS", "DOMAINNET_SPLIT_SIZES", "FASHION_MNIST_CLASSES",
           "DEBIAN_FASHION_MNIST", "InMemoryImages", "dataset_info", "default_data_dir", "load_split", "read_idx",
           "samples_per_class_indices", "subset_per_class", "fetch_fashion_mnist"]

DOMAINNET_DOMAINS = ("clipart", "painting", "sketch", "infograph", "real", "quickdraw")
# Official DomainNet split sizes (paper Tables 1 and 12): domain -> (train, test).
DOMAINNET_SPLIT_SIZES = {"clipart": (33525, 14604), "painting": (50416, 21850), "sketch": (48212, 20916),
                         "infograph": (36023, 15582), "real": (120906, 52041), "quickdraw": (120750, 51750)}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist (gz files)
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049  # unsigned bytes, 3 dims / 1 dim


def _domainnet_info(domain: str) -> DatasetInfo:
    train, test = DOMAINNET_SPLIT_SIZES[domain]
    return DatasetInfo(f"domainnet_{domain}", 345, 3, 224, IMAGENET_MEAN, IMAGENET_STD, False, train, test,
                       f"DomainNet {domain}, official split; root/train/<class>/, root/val/<class>/ "
                       "(python -m dhvtlib.data.domainnet)")


DATASETS: dict[str, DatasetInfo] = {
    # The official code normalises CIFAR with ImageNet statistics, so we do too.
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, IMAGENET_MEAN, IMAGENET_STD, True, 50000, 10000,
                            "CIFAR-100 (torchvision format: cifar-100-python/)"),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, IMAGENET_MEAN, IMAGENET_STD, True, 50000, 10000,
                           "CIFAR-10 (torchvision format: cifar-10-batches-py/)"),
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), True, 60000, 10000,
                                 "Fashion-MNIST idx files (the embedded default data set)"),
    "imagenet": DatasetInfo("imagenet", 1000, 3, 224, IMAGENET_MEAN, IMAGENET_STD, False, 1281167, 50000,
                            "ILSVRC2012; root/train/<wnid>/*.JPEG, root/val/<wnid>/*.JPEG"),
    **{f"domainnet_{d}": _domainnet_info(d) for d in DOMAINNET_DOMAINS},
    # num_classes is counted from the data directory by dataset_info; img_size may be overridden by the caller.
    "imagefolder": DatasetInfo("imagefolder", 0, 3, 224, IMAGENET_MEAN, IMAGENET_STD, False, None, None,
                               "any root/<class>/ (split here) or root/train/<class>/ + root/val/<class>/ (or "
                               "test/); see data/folder.py"),
}


def _check_name(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"dataset {name!r} is not known; use one of {sorted(DATASETS)}.")
    return DATASETS[name]


def default_data_dir(name: str) -> Path:
    """Where a data set lives by default, relative to the current directory (e.g. data/domainnet/clipart)."""
    _check_name(name)
    if name.startswith("domainnet_"):
        return Path("data", "domainnet", name.removeprefix("domainnet_"))
    return Path("data", name.replace("_", "-"))


def dataset_info(name: str, data_dir: str | Path | None = None) -> DatasetInfo:
    """The registry entry of `name`; for 'imagefolder' num_classes is counted from data_dir's train split."""
    info = _check_name(name)
    if name != "imagefolder":
        return info
    root = Path(data_dir) if data_dir is not None else default_data_dir(name)
    return replace(info, num_classes=len(scan_folder(root).classes))


def load_split(name: str, data_dir: str | Path | None, train: bool, download: bool = False
               ) -> InMemoryImages | ImageFolder:
    """Load the train (or test/val) split of `name` from data_dir (default: `default_data_dir(name)`).

    Only CIFAR and Fashion-MNIST can be downloaded (download=True); missing data raises FileNotFoundError saying
    how to get it. Folder data sets get no transform (the engine sets `dataset.transform`).
    """
    _check_name(name)
    if name == "fashion_mnist":
        return _load_fashion_mnist(data_dir, train, download)
    root = Path(data_dir) if data_dir is not None else default_data_dir(name)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, root, train, download)
    return _load_folder(name, root, train)


# --- CIFAR ---------------------------------------------------------------------------------------------------------

def _load_cifar(name: str, root: Path, train: bool, download: bool) -> InMemoryImages:
    cls = CIFAR100 if name == "cifar100" else CIFAR10
    if not download:
        _check_cifar_files(cls, root)
    ds = cls(str(root), train=train, download=download)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    return InMemoryImages(images, torch.tensor(ds.targets, dtype=torch.long), ds.classes)


def _check_cifar_files(cls: type[CIFAR10], root: Path) -> None:
    """torchvision's own md5 check, with errors that name the file and the fix."""
    folder = root / cls.base_folder
    for filename, md5 in cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]:
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(f"{cls.__name__} file {path} not found; pass download=True / --download, or "
                                    f"place {cls.base_folder}/ (from {cls.url}) in {root}.")
        if not check_integrity(str(path), md5):
            raise ValueError(f"{cls.__name__} file {path} fails its md5 check (corrupt or partial); delete {folder} "
                             "and pass download=True / --download.")


# --- Fashion-MNIST --------------------------------------------------------------------------------------------------

def read_idx(path: str | Path, magic: int) -> torch.Tensor:
    """Read an idx file (gzip or plain) of unsigned bytes: magic 2051 -> [N, H, W] images, 2049 -> [N] labels."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            msg = f"{path} is not a valid gzip file ({err}); delete it and fetch Fashion-MNIST again."
            raise ValueError(msg) from err
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        raise ValueError(f"{path} has idx magic number {found}, expected {magic}; the file is corrupt or not an idx "
                         "file, so delete it and fetch Fashion-MNIST again.")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    if not dims or len(raw) - header != math.prod(dims):
        raise ValueError(f"{path} is truncated ({len(raw)} bytes for header dims {dims}); delete it and fetch "
                         "Fashion-MNIST again.")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy())


def _idx_file(folder: Path, stem: str) -> Path | None:
    """`folder/stem`, else `folder/stem.gz`, else None."""
    return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)


def _fashion_mnist_dirs(data_dir: str | Path | None) -> list[Path]:
    """Folders searched for the idx files, in order."""
    if data_dir is not None:
        return [Path(data_dir), Path(data_dir, "FashionMNIST", "raw")]
    local = default_data_dir("fashion_mnist")
    return [DEBIAN_FASHION_MNIST, local, local / "FashionMNIST" / "raw", Path("data", "FashionMNIST", "raw")]


def _find_fashion_mnist(dirs: list[Path], prefix: str = "train") -> Path | None:
    return next((d for d in dirs if _idx_file(d, f"{prefix}-images-idx3-ubyte")
                 and _idx_file(d, f"{prefix}-labels-idx1-ubyte")), None)


def _download_fashion_mnist(root: Path) -> Path:
    """torchvision's download into root/FashionMNIST/raw (md5-checked); returns that folder."""
    FashionMNIST(str(root), download=True)
    return root / "FashionMNIST" / "raw"


def _load_fashion_mnist(data_dir: str | Path | None, train: bool, download: bool) -> InMemoryImages:
    prefix = "train" if train else "t10k"
    dirs = _fashion_mnist_dirs(data_dir)
    folder = _find_fashion_mnist(dirs, prefix)
    if folder is None and download:
        folder = _download_fashion_mnist(Path(data_dir) if data_dir is not None else dirs[1])
    if folder is None:
        raise FileNotFoundError(f"Fashion-MNIST {prefix}-*-ubyte[.gz] files not found in {[str(d) for d in dirs]}; "
                                "apt-get install dataset-fashion-mnist, or pass download=True / --download.")
    images = read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"), IDX_IMAGES_MAGIC)
    labels = read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"), IDX_LABELS_MAGIC).long()
    if images.dim() != 3 or images.shape[0] != labels.shape[0] or (labels.numel() and labels.max() >= 10):
        raise ValueError(f"Fashion-MNIST files in {folder} disagree ({tuple(images.shape)} images, "
                         f"{labels.shape[0]} labels, max label {int(labels.max()) if labels.numel() else None}); "
                         "delete them and fetch Fashion-MNIST again.")
    return InMemoryImages(images.unsqueeze(1), labels, FASHION_MNIST_CLASSES)


def fetch_fashion_mnist(dest: str | Path = Path("data/fashion-mnist")) -> Path:
    """Make Fashion-MNIST available and return its folder: existing copy, else apt (root only), else download."""
    dest = Path(dest)
    dirs = [DEBIAN_FASHION_MNIST, dest, dest / "FashionMNIST" / "raw"]
    if (found := _find_fashion_mnist(dirs)) is not None:
        return found
    if getattr(os, "geteuid", lambda: -1)() == 0 and shutil.which("apt-get"):
        for cmd in (["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]):  # retry once with fresh lists
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            if _find_fashion_mnist([DEBIAN_FASHION_MNIST]) is not None:
                return DEBIAN_FASHION_MNIST
    return _download_fashion_mnist(dest)


# --- folders (ImageNet, DomainNet, any ImageFolder) ---------------------------------------------------------------

def _folder_hint(name: str, root: Path) -> str:
    if name == "imagenet":
        return "extract ILSVRC2012 train/val into class folders (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG)"
    if name.startswith("domainnet_"):
        domain = name.removeprefix("domainnet_")
        return (f"run python -m dhvtlib.data.domainnet --src <folder with {domain}.zip and {domain}_train.txt/"
                f"_test.txt> --out {root.parent} --domains {domain}")
    return "put the images in <root>/train/<class>/ and <root>/val/<class>/ (or <root>/test/<class>/)"


def _split_dir(name: str, root: Path, train: bool) -> Path:
    """root/train, or root/val falling back to root/test."""
    candidates = [root / "train"] if train else [root / "val", root / "test"]
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"{name} {'train' if train else 'val/test'} split not found at "
                            f"{' or '.join(map(str, candidates))}; {_folder_hint(name, root)}.")


def _load_folder(name: str, root: Path, train: bool) -> ImageFolder:
    # load_image: RGB from any mode (16-bit, alpha, CMYK); a bad file named in one sentence
    ds = ImageFolder(str(_split_dir(name, root, train)), loader=load_image)
    expected = DATASETS[name].num_classes or len(ds.classes)
    if not train and (root / "train").is_dir():
        train_classes, _ = find_classes(str(root / "train"))
        if ds.classes != train_classes:
            raise ValueError(f"{ds.root} has {len(ds.classes)} classes that differ from the {len(train_classes)} of "
                             f"{root / 'train'}, so labels would not match; use the same class folders in both.")
    if len(ds.classes) != expected:
        raise ValueError(f"{ds.root} has {len(ds.classes)} class folders but {name} has {expected}; "
                         f"{_folder_hint(name, root)}.")
    return ds


# --- per-class subsets ----------------------------------------------------------------------------------------------

def samples_per_class_indices(targets: torch.Tensor | Sequence[int], n: int, seed: int, *,
                              flag: str = "samples_per_class", split: str = "training",
                              classes: Sequence[str] | None = None) -> torch.Tensor:
    """Sorted indices of n samples per class: one CPU torch.Generator(seed) permutes each class in label order.
    `flag`, `split` and `classes` only word the error when a class has fewer than n samples."""
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"{flag} {n!r} must be a positive integer.")
    targets = torch.as_tensor(targets, dtype=torch.long).cpu()
    counts = torch.bincount(targets)
    if len(counts) and int(counts.min()) < n:
        small = int(counts.argmin())
        name = f" ({classes[small]})" if classes is not None and small < len(classes) else ""
        raise ValueError(f"{flag} (--{flag.replace('_', '-')}) is {n}, but the smallest class of the {split} "
                         f"split, class {small}{name}, has only {int(counts.min())} images; set it to at most "
                         f"{int(counts.min())}, or leave it unset to use every image.")
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for cls, count in enumerate(counts.tolist()):
        members = (targets == cls).nonzero().flatten()
        kept.append(members[torch.randperm(count, generator=generator)[:n]])
    return torch.cat(kept).sort().values


class _FolderSubset(Subset):
    """A Subset that keeps `targets`/`classes` and forwards `transform` to the wrapped ImageFolder."""

    def __init__(self, dataset: ImageFolder, indices: Sequence[int]):
        super().__init__(dataset, indices)
        self.targets = [dataset.targets[i] for i in indices]
        self.classes = dataset.classes

    @property
    def transform(self):
        return self.dataset.transform

    @transform.setter
    def transform(self, value) -> None:
        self.dataset.transform = value


def subset_per_class(dataset: InMemoryImages | ImageFolder, n: int, seed: int, *, flag: str = "samples_per_class",
                     split: str = "training") -> InMemoryImages | Subset:
    """n samples per class of `dataset` (see samples_per_class_indices), same type for InMemoryImages."""
    indices = samples_per_class_indices(dataset.targets, n, seed, flag=flag, split=split,
                                        classes=getattr(dataset, "classes", None))
    if isinstance(dataset, InMemoryImages):
        return dataset.subset(indices)
    return _FolderSubset(dataset, indices.tolist())
