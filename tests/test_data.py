"""Loaders read the real on-disk formats (small fakes under tmp_path); per-class subsets are deterministic."""
from __future__ import annotations

import gzip
import hashlib
import pickle
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset
from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder

from dhvtlib.data import (DATASETS, InMemoryImages, dataset_info, default_data_dir, fetch_fashion_mnist, load_split,
                          samples_per_class_indices, subset_per_class)
from dhvtlib.data import datasets
from dhvtlib.data.datasets import DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES, read_idx
from dhvtlib.data.domainnet import paper_count_warnings, prepare_domainnet
from fakedata import write_idx


# --- registry ------------------------------------------------------------------------------------------------------

def test_registry_and_default_dirs():
    assert dataset_info("cifar100").num_classes == 100 and dataset_info("cifar100").mean == (0.485, 0.456, 0.406)
    fm = dataset_info("fashion_mnist")
    assert (fm.num_classes, fm.in_chans, fm.img_size, fm.in_memory) == (10, 1, 28, True)
    assert dataset_info("domainnet_sketch").num_classes == 345 and not DATASETS["imagenet"].in_memory
    assert default_data_dir("domainnet_clipart") == Path("data/domainnet/clipart")
    assert default_data_dir("fashion_mnist") == Path("data/fashion-mnist")
    with pytest.raises(ValueError, match="cifar100"):
        dataset_info("cifar1000")


# --- CIFAR ----------------------------------------------------------------------------------------------------------

class _Py2Str(bytes):
    """A Python 2 `str`, which is what the CIFAR pickles' keys and label names are."""


class _Py2Pickler(pickle._Pickler):
    """Writes _Py2Str as Python 2 pickles do (BINSTRING), so loading with encoding='latin1' yields str."""
    dispatch = {**pickle._Pickler.dispatch,
                _Py2Str: lambda self, obj: self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)}


def _pickle(path: Path, obj: dict) -> str:
    """Write obj as the CIFAR python pickles are (protocol 2, Python 2 str keys), return its md5."""
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump({_Py2Str(k): v for k, v in obj.items()})
    return hashlib.md5(path.read_bytes()).hexdigest()


def _fake_cifar(root: Path, cls: type[CIFAR10], monkeypatch, n: int = 6) -> np.ndarray:
    """Real-format fake batches and meta; the class's md5 table is patched to the fakes' md5s."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    fine = cls is CIFAR100
    label_key, names_key = (b"fine_labels", b"fine_label_names") if fine else (b"labels", b"label_names")
    n_classes = 100 if fine else 10
    md5 = {}
    files = cls.train_list + cls.test_list
    for (name, _), part in zip(files, np.array_split(np.arange(n), len(files))):
        entry = {b"data": data[part], label_key: [int(i) % n_classes for i in part]}
        md5[name] = _pickle(folder / name, {**entry, b"coarse_labels": [19] * len(part)} if fine else entry)
    names = [_Py2Str(f"c{i}".encode()) for i in range(n_classes)]
    meta_md5 = _pickle(folder / cls.meta["filename"], {names_key: names})
    monkeypatch.setattr(cls, "train_list", [[name, md5[name]] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, md5[name]] for name, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})
    return data


@pytest.mark.parametrize("name,cls", [("cifar100", CIFAR100), ("cifar10", CIFAR10)])
def test_cifar_real_format(tmp_path, monkeypatch, name, cls):
    data = _fake_cifar(tmp_path, cls, monkeypatch)
    train, test = load_split(name, tmp_path, train=True), load_split(name, tmp_path, train=False)
    n_train = 3 if cls is CIFAR100 else 5
    assert isinstance(train, InMemoryImages) and len(train) + len(test) == 6 and len(train) == n_train
    assert train.images.shape == (n_train, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[1], torch.from_numpy(data[1].reshape(3, 32, 32)))  # CHW, as stored
    assert train.targets.tolist() == list(range(n_train)) and train.classes[:2] == ["c0", "c1"]
    image, target = test[0]
    assert image.shape == (3, 32, 32) and target == n_train


def test_cifar_corrupt_and_missing(tmp_path, monkeypatch):
    _fake_cifar(tmp_path, CIFAR100, monkeypatch)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="md5.*download=True"):
        load_split("cifar100", tmp_path, train=True)
    with pytest.raises(RuntimeError, match="corrupted"):  # torchvision's own check, the path our check mirrors
        CIFAR100(str(tmp_path), train=True)
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*download=True"):
        load_split("cifar100", tmp_path / "nowhere", train=True)


# --- Fashion-MNIST --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_fashion_mnist_idx_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (7, 28, 28)), np.arange(7) % 10
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images, 2051)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 2049)
    ds = load_split("fashion_mnist", tmp_path, train=False)
    assert ds.images.shape == (7, 1, 28, 28) and ds.classes == list(FASHION_MNIST_CLASSES)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images.astype(np.uint8)))
    assert ds.targets.tolist() == labels.tolist() and ds.targets.dtype == torch.int64


def test_fashion_mnist_corrupt_and_missing(tmp_path):
    write_idx(tmp_path / "x-images-idx3-ubyte", np.zeros((2, 4, 4)), 2049)  # label magic on an image file
    with pytest.raises(ValueError, match="magic number 2049, expected 2051"):
        read_idx(tmp_path / "x-images-idx3-ubyte", 2051)
    (tmp_path / "y.gz").write_bytes(gzip.compress(struct.pack(">II", 2049, 5) + b"\0\0"))  # 2 of 5 labels
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "y.gz", 2049)
    (tmp_path / "z.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(ValueError, match="gzip"):
        read_idx(tmp_path / "z.gz", 2049)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_split("fashion_mnist", tmp_path / "empty", train=True)


def test_fetch_fashion_mnist_finds_a_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    raw = tmp_path / "dest" / "FashionMNIST" / "raw"  # where torchvision's download puts the files
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((1, 28, 28)), 2051)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(1), 2049)
    assert fetch_fashion_mnist(tmp_path / "dest") == raw


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = load_split("fashion_mnist", None, train=True)
    assert ds.images.shape == (60000, 1, 28, 28)
    assert torch.bincount(ds.targets).tolist() == [6000] * 10


# --- folders --------------------------------------------------------------------------------------------------------

def _image_folder(root: Path, classes: list[str], per_class: int = 2) -> None:
    for split in ("train", "val"):
        for c, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                Image.new("L", (5, 4), color=10 * c + i).save(root / split / cls / f"{i}.png")


def test_imagefolder(tmp_path):
    _image_folder(tmp_path, ["ant", "bee", "cat"])
    assert dataset_info("imagefolder", tmp_path).num_classes == 3
    ds = load_split("imagefolder", tmp_path, train=False)
    image, target = ds[5]
    assert isinstance(ds, ImageFolder) and ds.transform is None and image.mode == "RGB" and target == 2
    sub = subset_per_class(ds, 1, seed=0)
    assert isinstance(sub, Subset) and sorted(sub.targets) == [0, 1, 2]
    sub.transform = np.asarray  # the engine sets the transform on whatever it gets
    assert sub[0][0].shape == (4, 5, 3)


def test_folder_missing_and_mismatched(tmp_path):
    hint = re.escape(str(tmp_path / "val")) + ".*python -m dhvtlib.data.domainnet"
    with pytest.raises(FileNotFoundError, match=hint):
        load_split("domainnet_clipart", tmp_path, train=False)
    with pytest.raises(FileNotFoundError, match="ILSVRC2012"):
        load_split("imagenet", tmp_path, train=True)
    _image_folder(tmp_path, ["a", "b"])
    with pytest.raises(ValueError, match="2 class folders but domainnet_clipart has 345"):
        load_split("domainnet_clipart", tmp_path, train=True)
    (tmp_path / "val" / "b").rename(tmp_path / "val" / "c")
    with pytest.raises(ValueError, match="differ"):
        load_split("imagefolder", tmp_path, train=False)


# --- DomainNet prep -------------------------------------------------------------------------------------------------

def _fake_domainnet(src: Path, domain: str = "clipart") -> dict[str, list[str]]:
    src.mkdir()
    lists = {"train": [], "test": []}
    with zipfile.ZipFile(src / f"{domain}.zip", "w") as zf:
        for label, cls in enumerate(["apple", "bus", "zebra"]):
            for i in range(3):
                member = f"{domain}/{cls}/{domain}_{label:03d}_{i:06d}.jpg"
                zf.writestr(member, f"jpeg {member}")
                lists["test" if i == 2 else "train"].append(f"{member} {label}")
    for split, lines in lists.items():
        (src / f"{domain}_{split}.txt").write_text("\n".join(lines) + "\n")
    return lists


def test_domainnet_prep(tmp_path):
    _fake_domainnet(tmp_path / "src")
    out = tmp_path / "out"
    counts = prepare_domainnet(tmp_path / "src", out, ["clipart"], expect_classes=3)
    assert counts == {"clipart": {"train": 6, "val": 3}}
    member = out / "clipart" / "val" / "bus" / "clipart_001_000002.jpg"
    assert member.read_text() == "jpeg clipart/bus/clipart_001_000002.jpg" and not (out / "clipart.partial").exists()
    assert dataset_info("imagefolder", out / "clipart").num_classes == 3
    assert len(load_split("imagefolder", out / "clipart", train=True)) == 6
    assert prepare_domainnet(tmp_path / "src", out, ["clipart"], expect_classes=3) == counts  # already prepared
    assert "paper reports 33525/14604" in paper_count_warnings(counts)[0]


def test_domainnet_prep_errors(tmp_path):
    lists = _fake_domainnet(tmp_path / "src")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="3 classes, expected 345"):
        prepare_domainnet(tmp_path / "src", out, ["clipart"])
    with pytest.raises(ValueError, match="sha256"):
        prepare_domainnet(tmp_path / "src", out, ["clipart"], checksums={"clipart": "0" * 64}, expect_classes=3)
    (tmp_path / "src" / "clipart_test.txt").write_text("\n".join(lists["test"] + ["clipart/bus/gone.jpg 1"]))
    (out / "clipart.partial").mkdir(parents=True)  # an interrupted earlier prep
    with pytest.raises(ValueError, match="lacks 1 listed files.*gone.jpg"):
        prepare_domainnet(tmp_path / "src", out, ["clipart"], expect_classes=3)
    assert not (out / "clipart").exists()
    with pytest.raises(ValueError, match="not known"):
        prepare_domainnet(tmp_path / "src", out, ["cartoon"])


# --- per-class subsets ----------------------------------------------------------------------------------------------

def test_samples_per_class_indices():
    targets = torch.arange(40) % 4
    a, b = samples_per_class_indices(targets, 3, seed=7), samples_per_class_indices(targets.tolist(), 3, seed=7)
    assert torch.equal(a, b) and a.dtype == torch.long and torch.equal(a, a.sort().values)
    assert torch.bincount(targets[a]).tolist() == [3, 3, 3, 3]
    assert not torch.equal(a, samples_per_class_indices(targets, 3, seed=8))
    ds = InMemoryImages(torch.zeros(40, 1, 2, 2, dtype=torch.uint8), targets, list("abcd"))
    assert torch.equal(subset_per_class(ds, 3, seed=7).targets, targets[a])
    with pytest.raises(ValueError, match=re.escape("samples_per_class (--samples-per-class) is 2, but the smallest "
                                                   "class of the training split, class 2, has only 1 images; set it "
                                                   "to at most 1")):
        samples_per_class_indices(torch.tensor([0, 0, 1, 1, 2, 3, 3]), 2, seed=0)
    # the first short class is not the smallest: the message names the smallest (104 vs 84)
    small = InMemoryImages(torch.zeros(9, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2]),
                           ["ant", "bee", "cat"])
    with pytest.raises(ValueError, match=r"test_samples_per_class \(--test-samples-per-class\) is 4, but the "
                                         r"smallest class of the test split, class 2 \(cat\), has only 2 images"):
        subset_per_class(small, 4, seed=0, flag="test_samples_per_class", split="test")
