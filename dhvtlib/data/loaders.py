"""Epoch index streams (shuffle or DeiT's repeated augmentation, sharded per rank) and batch loaders.

Every epoch's order is a pure function of (seed, epoch, rank, world size), so a run resumed at step s of an epoch
rebuilds the same order and skips the first s batches. Two loaders yield (images, labels) on the device:
- `InMemoryLoader` (CIFAR, Fashion-MNIST, image folders that fit in memory): the uint8 data set lives on the
  device and a batch is gathered, augmented by `BatchAugment` (batched tensor ops, per-sample randomness from one
  torch.Generator) and normalised there: no worker processes, the cores stay on the model.
- `FileLoader` (ImageNet, DomainNet, image folders over the memory budget): a DataLoader over PIL transforms with
  persistent workers and per-image seeds.
"""
from __future__ import annotations

import random
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import normalize_batch, resize_center_crop
from .types import FolderError, InMemoryImages

__all__ = ["train_indices", "eval_indices", "InMemoryLoader", "FileLoader", "seed_worker"]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def train_indices(n: int, epoch: int, seed: int, *, rank: int = 0, world_size: int = 1,
                  repeated_aug: bool = False, repeats: int = 3) -> torch.Tensor:
    """This rank's sample order for one epoch.

    Plain: a seeded permutation, padded to a multiple of world_size and sharded rank::world_size (as
    DistributedSampler). Repeated augmentation (DeiT's RASampler): each index of the permutation repeated `repeats`
    times in a row, sharded, and cut to floor(n/256)*256/world_size samples per rank, so an epoch still sees about n
    images (n < 256: n // world_size). DeiT seeds the order with the epoch only; here the seed enters too, so runs
    with different seeds see different orders.
    """
    perm = torch.randperm(n, generator=_epoch_generator(seed, epoch))
    if repeated_aug:
        perm = perm.repeat_interleave(repeats)
    total = -(-len(perm) // world_size) * world_size
    perm = torch.cat([perm, perm[: total - len(perm)]])
    mine = perm[rank:total:world_size]
    if repeated_aug:
        mine = mine[: ((n // 256 * 256) or n) // world_size]
    return mine


def eval_indices(n: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Every test index exactly once over all ranks (uneven shards, no padding: exact accuracy)."""
    return torch.arange(rank, n, world_size)


class InMemoryLoader:
    """Batches of an InMemoryImages data set gathered, augmented and normalised on `device`."""

    def __init__(self, dataset: InMemoryImages, batch_size: int, device: torch.device, mean, std,
                 augment: Callable | None = None, generator: torch.Generator | None = None,
                 channels_last: bool = False, eval_size: int | None = None):
        self.images = dataset.images.to(device)
        self.targets = dataset.targets.to(device)
        self.batch_size, self.device, self.mean, self.std = batch_size, device, mean, std
        self.augment, self.generator, self.channels_last = augment, generator, channels_last
        # Evaluation at another size (e.g. CIFAR fine-tuned at 224): DeiT's Resize + CenterCrop.
        self.eval_size = eval_size if eval_size and eval_size != self.images.shape[-1] else None

    def __len__(self) -> int:
        return len(self.targets)

    def batches(self, indices: torch.Tensor, *, train: bool, start_step: int = 0, epoch: int = 0
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) from step `start_step` on; `epoch` is unused here (the augmentation draws from the
        loader's generator, saved in checkpoints) and kept so both loaders take the same arguments."""
        bs = self.batch_size
        steps = len(indices) // bs if train else -(-len(indices) // bs)  # drop_last when training
        indices = indices.to(self.device)
        for s in range(start_step, steps):
            idx = indices[s * bs:(s + 1) * bs]
            x = self.images.index_select(0, idx)
            if train and self.augment is not None:
                x = self.augment(x, self.generator)
            else:
                x = normalize_batch(resize_center_crop(x, self.eval_size) if self.eval_size else x,
                                    self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.targets.index_select(0, idx)

    def steps(self, indices: torch.Tensor) -> int:
        return len(indices) // self.batch_size


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from its torch seed (itself from the loader's generator)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class _Order(Sampler):
    """The items of the coming pass, set before each pass: one DataLoader (and its persistent workers) serves every
    epoch. Items are (augmentation seed or None, dataset index)."""

    def __init__(self):
        self.items: list[tuple[int | None, int]] = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class _Seeded(Dataset):
    """dataset[index] with Python's, numpy's and torch's RNGs seeded first (in the worker) from the item's seed,
    so every image's augmentation is a pure function of (run seed, epoch, position in the epoch)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int | None, int]):
        seed, index = item
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
        return self.dataset[index]


class FileLoader:
    """Batches of a file data set (ImageFolder-like with a `transform` already set) through a DataLoader.

    One DataLoader per pass kind (training, evaluation) with persistent workers, reused every epoch. Each image's
    augmentation is seeded by (seed, epoch, position in the epoch), so an epoch is repeatable and a resume in the
    middle of an epoch continues with the same draws. A file that cannot be decoded stops the run with one sentence
    naming it.
    """

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device, *, num_workers: int = 4,
                 seed: int = 0, channels_last: bool = False):
        self.dataset, self.batch_size, self.device = dataset, batch_size, device
        self.num_workers, self.seed, self.channels_last = num_workers, seed, channels_last
        self._loaders: dict[bool, tuple[DataLoader, _Order]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self, train: bool) -> tuple[DataLoader, _Order]:
        if train not in self._loaders:
            order = _Order()
            loader = DataLoader(_Seeded(self.dataset), batch_size=self.batch_size, sampler=order,
                                num_workers=self.num_workers, drop_last=train, worker_init_fn=seed_worker,
                                generator=_epoch_generator(self.seed, 0), pin_memory=self.device.type == "cuda",
                                persistent_workers=self.num_workers > 0)
            self._loaders[train] = (loader, order)
        return self._loaders[train]

    def batches(self, indices: torch.Tensor, *, train: bool, start_step: int = 0, epoch: int = 0
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader, order = self._loader(train)
        first = start_step * self.batch_size
        base = (self.seed * 1_000_003 + epoch) * 10_000_019
        order.items = [((base + first + k) % 2**63 if train else None, i)
                       for k, i in enumerate(indices[first:].tolist())]
        try:
            for x, y in loader:
                x = x.to(self.device, non_blocking=True)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                yield x, y.to(self.device, non_blocking=True)
        except FolderError as e:  # re-raised from a worker with its traceback: keep the sentence
            raise FolderError(str(e).strip().splitlines()[-1].split("FolderError: ", 1)[-1]) from None

    def steps(self, indices: torch.Tensor) -> int:
        return len(indices) // self.batch_size
