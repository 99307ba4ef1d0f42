"""The data types the data package shares: `DatasetInfo` (what a model and the engine know about a data set),
`InMemoryImages` (a split as uint8 tensors) and `FolderError` (a folder that cannot be trained on as it is).

Every other module of the package may import this one; it imports none of them (no cycles).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import Dataset

__all__ = ["DatasetInfo", "InMemoryImages", "FolderError", "SHOW"]

SHOW = 5  # bad files (or classes) named in one FolderError sentence


class FolderError(ValueError):
    """A folder that cannot be trained on as it is; the message is one sentence naming the value and the fix."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the engine need to know about a data set (`train_images`/`test_images`: the real sizes)."""
    name: str
    num_classes: int
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_memory: bool
    train_images: int | None = None
    test_images: int | None = None
    description: str = ""
    config: dict | None = None  # folder data sets: how the data was prepared (see data/folder.py), for evaluation
    details: dict | None = None  # folder data sets: split, counts, skipped files, choices (for the run's manifest)

    def eval_config(self) -> dict:
        """What evaluating a model trained on this data needs (recorded in checkpoints and safetensors): the data
        set, image size, channels, mean/std and the resize rule."""
        if self.config is not None:
            return dict(self.config)
        if self.in_memory:
            resize = ("stored size; other img_size: bicubic Resize(int(img_size / 0.875)) + CenterCrop(img_size)")
        else:
            resize = ("bicubic Resize(int(img_size / 0.875)) + CenterCrop(img_size) above 32 px, Resize(img_size) + "
                      "CenterCrop(img_size) at or below")
        return {"dataset": self.name, "img_size": self.img_size, "in_chans": self.in_chans, "mean": list(self.mean),
                "std": list(self.std), "resize": resize}



class InMemoryImages(Dataset):
    """A whole split as tensors: images uint8 [N, C, H, W], targets int64 [N]; items are (uint8 [C, H, W], int)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 [N, C, H, W] tensor, got {images.dtype} {tuple(images.shape)}; "
                             "convert with .to(torch.uint8) and add the channel dimension.")
        if targets.shape != (images.shape[0],):
            raise ValueError(f"targets shape {tuple(targets.shape)} does not match {images.shape[0]} images; pass one "
                             "label per image.")
        self.images, self.targets, self.classes = images, targets.long(), list(classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

    def subset(self, indices: torch.Tensor | Sequence[int]) -> InMemoryImages:
        """A new InMemoryImages holding only `indices` (same classes)."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return InMemoryImages(self.images[indices], self.targets[indices], self.classes)
