"""What a recipe builds: the model at the data set's size, the data (splits, subsets, loaders and augmentation),
the optimiser with its schedule, the loss with Mixup/CutMix, and the official GPUs' per-GPU statistics (virtual
GPUs, below). `train.run` and `evaluate.evaluate_checkpoint` both build from here, so training and evaluation see
the same images.

Virtual GPUs: The official scripts train on 2 GPUs: each GPU's DAFF BatchNorms saw its own per-GPU batch (plain BatchNorm2d),
Mixup drew its lambda per GPU (each rank calls timm's Mixup on its own batch), and SOPE's BatchNorm was synchronised
(SyncBatchNorm: statistics over the total batch). `Recipe.virtual_gpus = V` reproduces this with W processes:
each process's batch is split into G = V / W groups of `per_gpu_batch` images; DAFF's BatchNorms (SplitBatchNorm2d)
and Mixup work per group, SOPE's BatchNorm over the process's batch (synchronised over processes under DDP on
CUDA). Group g of a batch is items g, g + G, ...: with the sampler's rank::world_size sharding these are exactly the
images official GPU (rank + W * g) sees at that step. The running statistics kept are group 0's (rank 0's, which
the official code saves and evaluates). V = 1 turns it off.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from typing import Any, Callable

import torch
import torch.distributed as dist
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from torch import nn

from ..data import DatasetInfo, dataset_info, default_data_dir, load_split, subset_per_class
from ..data.augment import BatchAugment, build_pil_transform
from ..data.folder import own_data
from ..data.loaders import FileLoader, InMemoryLoader
from ..models import DHVT, create_model, family, param_groups_weight_decay
from ..models.norms import SplitBatchNorm2d
from ..recipe import PRESETS, Recipe
from .runtime import Dist, cpu_workers

__all__ = ["RunData", "build_model", "build_data", "build_optimizer", "build_criterion", "load_own_data",
           "load_test_split", "build_test_loader", "groups_per_process", "set_bn_splits", "GroupMixup",
           "use_virtual_gpus", "compile_model"]


# ------------------------------------------------------------------------------------------------ model
def build_model(recipe: Recipe, info: DatasetInfo) -> nn.Module:
    """The recipe's model (any registered family) at the data set's image size, channels and classes, with its
    drop path. A CNN ignores the preset's own transformer kwargs (e.g. quick's embed_dim/depth/num_heads) when
    they are unchanged from the preset; any other argument the CNN does not take is an error."""
    data = {"num_classes": info.num_classes, "in_chans": info.in_chans, "img_size": info.img_size}
    for k, v in data.items():
        if k in recipe.model_kwargs and recipe.model_kwargs[k] != v:
            fix = "set img_size instead" if k == "img_size" else "drop it (the data set decides it)"
            raise ValueError(f"model_kwargs {k}={recipe.model_kwargs[k]!r} does not match the data set "
                             f"{info.name!r} ({k} {v}); {fix}.")
    kwargs = dict(recipe.model_kwargs)
    if family(recipe.model) is not DHVT and recipe.name in PRESETS:
        kwargs = {k: v for k, v in kwargs.items() if PRESETS[recipe.name].model_kwargs.get(k, object()) != v}
    return create_model(recipe.model, **{"img_size": info.img_size, "in_chans": info.in_chans,
                                         "num_classes": info.num_classes, "drop_path_rate": recipe.drop_path,
                                         "drop_rate": recipe.drop, **kwargs})


# ------------------------------------------------------------------------------------------------ data
@dataclasses.dataclass
class RunData:
    info: DatasetInfo
    train: InMemoryLoader | FileLoader
    test: InMemoryLoader | FileLoader
    generators: dict[str, torch.Generator]  # the augmentation RNGs a checkpoint saves (in-memory data sets)


def build_data(recipe: Recipe, data_dir, download: bool, d: Dist, device: torch.device) -> RunData:
    """The recipe's training and test loaders for this process (its share of the batch under torchrun); a failed
    download is one sentence."""
    try:
        return _build_data(recipe, data_dir, download, d, device)
    except OSError as e:
        if not download or isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"downloading {recipe.dataset} failed ({type(e).__name__}: {e}); without network, put the "
                         "files in data_dir yourself and drop download (--download).") from None


def _build_data(recipe: Recipe, data_dir, download: bool, d: Dist, device: torch.device) -> RunData:
    if recipe.dataset == "imagefolder":  # your own folder: checked, split, sized, decoded once (data/folder.py)
        info, train, test = load_own_data(recipe, data_dir, device, verbose=d.main)
    else:
        info = dataset_info(recipe.dataset, data_dir)
        if recipe.img_size:
            info = dataclasses.replace(info, img_size=recipe.img_size)
        if download and d.world_size > 1:  # rank 0 downloads, the others wait and read
            if d.main:
                load_split(recipe.dataset, data_dir, train=True, download=True)
            dist.barrier()
        train = load_split(recipe.dataset, data_dir, train=True, download=download)
        test = load_test_split(recipe.dataset, data_dir, recipe.test_samples_per_class, download)
        if recipe.samples_per_class:  # (load_own_data takes its own subsets)
            train = subset_per_class(train, recipe.samples_per_class, seed=recipe.seed)
    per_rank = recipe.batch_size // d.world_size
    if per_rank * d.world_size != recipe.batch_size:
        raise ValueError(f"batch_size {recipe.batch_size} is not divisible by the {d.world_size} processes; "
                         "choose a multiple of the world size.")
    if len(train) < recipe.batch_size:
        raise ValueError(f"the training set has {len(train)} images, fewer than batch_size {recipe.batch_size}; "
                         "lower batch_size or raise samples_per_class.")
    workers = cpu_workers(recipe.num_workers)
    generators = {}
    if info.in_memory:
        native = train.images.shape[-1]
        # DeiT: RandomCrop(padding=4) at <= 32 px when no resize is needed, else bicubic RandomResizedCrop
        aug = BatchAugment(info.img_size, info.mean, info.std, crop="pad" if info.img_size == native <= 32 else "rrc",
                           hflip=recipe.hflip, rand_augment=recipe.rand_augment,
                           random_erasing=recipe.random_erasing, rrc_interpolation="bicubic")
        generators["augment"] = torch.Generator().manual_seed(recipe.seed * 1_000_003 + d.rank)
        train_loader = InMemoryLoader(train, per_rank, device, info.mean, info.std, augment=aug,
                                      generator=generators["augment"], channels_last=recipe.channels_last)
    else:
        train.transform = build_pil_transform(info.img_size, info.mean, info.std, train=True,
                                              rand_augment=recipe.rand_augment, random_erasing=recipe.random_erasing)
        train_loader = FileLoader(train, per_rank, device, num_workers=workers, seed=recipe.seed + d.rank,
                                  channels_last=recipe.channels_last)
    test_loader = build_test_loader(info, test, recipe.eval_batch_size, device, num_workers=workers,
                                    channels_last=recipe.channels_last)
    return RunData(info, train_loader, test_loader, generators)


def load_own_data(recipe: Recipe, data_dir, device, *, verbose: bool = True, saved: dict | None = None):
    """(info, train, test) of an image folder (data/folder.py); `saved` (a checkpoint's data config) pins the
    image size, channels, split and mean/std that training used."""
    saved = saved or {}
    stats = (saved["mean"], saved["std"]) if saved.get("mean") else None
    own = own_data(data_dir if data_dir is not None else default_data_dir("imagefolder"), model=recipe.model,
                   model_kwargs=recipe.model_kwargs, img_size=saved.get("img_size") or recipe.img_size,
                   in_chans=saved.get("in_chans") or recipe.in_chans,
                   val_fraction=saved.get("val_fraction") or recipe.val_fraction, mean_std=recipe.mean_std,
                   skip_bad_files=saved.get("skip_bad_files") or recipe.skip_bad_files,
                   memory_budget_gb=recipe.memory_budget_gb, cache_dir=recipe.cache_dir, device=device, stats=stats,
                   verbose=verbose)
    train = _folder_subset(own.train, recipe.samples_per_class, "samples_per_class", "training", recipe.seed,
                           verbose)
    test = _folder_subset(own.test, recipe.test_samples_per_class, "test_samples_per_class", "test", 0, verbose)
    return own.info(), train, test


def _folder_subset(ds, n: int | None, flag: str, split: str, seed: int, verbose: bool):
    """n images per class of a folder's split. The presets' subsets are sized for their data sets (quick: 100 /
    200 Fashion-MNIST images per class): a folder with fewer in some class uses the whole split and says so."""
    if not n:
        return ds
    smallest = int(torch.bincount(torch.as_tensor(ds.targets)).min())
    if n <= smallest:
        return subset_per_class(ds, n, seed=seed, flag=flag, split=split)
    if verbose:
        print(f"{flag} {n} is more than the smallest class of the {split} split has ({smallest}); using every {split} "
              f"image (pass --{flag.replace('_', '-')} {smallest} for a balanced subset).", flush=True)
    return ds


def load_test_split(dataset: str, data_dir, per_class: int | None, download: bool = False):
    """The test split, or its deterministic per-class subset (seed 0, the same for every run)."""
    test = load_split(dataset, data_dir, train=False, download=download)
    return subset_per_class(test, per_class, seed=0, flag="test_samples_per_class", split="test") if per_class \
        else test


def build_test_loader(info: DatasetInfo, test, batch_size: int, device: torch.device, *, eval_size: int | None = None,
                      num_workers: int = 4, channels_last: bool = False) -> InMemoryLoader | FileLoader:
    """Evaluation batches: in-memory images normalised (resized to eval_size, default info.img_size), or files
    through DeiT's evaluation transform at eval_size (default info.img_size)."""
    if info.in_memory:
        return InMemoryLoader(test, batch_size, device, info.mean, info.std, channels_last=channels_last,
                              eval_size=eval_size or info.img_size)
    test.transform = build_pil_transform(eval_size or info.img_size, info.mean, info.std, train=False)
    return FileLoader(test, batch_size, device, num_workers=num_workers, channels_last=channels_last)


# ------------------------------------------------------------------------------------------------ optimisation
def build_optimizer(model: nn.Module, recipe: Recipe, optimizer: torch.optim.Optimizer | None = None,
                    steps_per_epoch: int = 1):
    """The optimiser over the official decay groups at lr * batch / lr_scale_batch (AdamW, or SGD with momentum for
    `opt='sgd'`) and timm's cosine schedule with linear warmup. `sched_unit='epoch'` (the paper's): stepped as
    `scheduler.step(epoch)` after each epoch (DeiT: epochs 0 and 1 both run at warmup_lr); `'step'`: the same
    curve over epochs x `steps_per_epoch` updates, stepped as `scheduler.step_update(updates)` after each one.
    With `optimizer`, only a new schedule for it (from its groups' `initial_lr`)."""
    if optimizer is None:
        groups = param_groups_weight_decay(model, recipe.weight_decay)
        if recipe.opt == "sgd":
            optimizer = torch.optim.SGD(groups, lr=recipe.effective_lr, momentum=recipe.momentum,
                                        nesterov=recipe.nesterov and recipe.momentum > 0)
        else:
            optimizer = torch.optim.AdamW(groups, lr=recipe.effective_lr, eps=recipe.opt_eps, betas=recipe.opt_betas)
    per_step = recipe.sched_unit == "step"
    unit = steps_per_epoch if per_step else 1
    cosine_log = logging.getLogger(CosineLRScheduler.__module__)
    level = cosine_log.level
    cosine_log.setLevel(logging.ERROR)  # its "no effect when t_initial = 1" note is expected for a 1-epoch run
    try:
        scheduler = CosineLRScheduler(optimizer, t_initial=recipe.epochs * unit, lr_min=recipe.min_lr,
                                      warmup_t=recipe.warmup_epochs * unit, warmup_lr_init=recipe.warmup_lr,
                                      cycle_limit=1, t_in_epochs=not per_step)
    finally:
        cosine_log.setLevel(level)
    return optimizer, scheduler


def build_criterion(recipe: Recipe, num_classes: int) -> tuple[nn.Module, Any]:
    """(loss, mixup_fn or None): soft-target CE under Mixup/CutMix (smoothing inside Mixup), else label-smoothed
    CE, else plain CE."""
    if recipe.mixup > 0 or recipe.cutmix > 0:
        mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, prob=recipe.mixup_prob,
                      switch_prob=recipe.mixup_switch_prob, mode="batch", label_smoothing=recipe.smoothing,
                      num_classes=num_classes)
        return SoftTargetCrossEntropy(), mixup
    if recipe.smoothing > 0:
        return LabelSmoothingCrossEntropy(recipe.smoothing), None
    return nn.CrossEntropyLoss(), None


# ------------------------------------------------------------------------------------------------ virtual GPUs
def groups_per_process(virtual_gpus: int, world_size: int) -> int:
    """How many virtual GPUs each of `world_size` processes holds (1 when virtual_gpus is 1: off)."""
    if virtual_gpus == 1:
        return 1
    if virtual_gpus % world_size:
        raise ValueError(f"virtual_gpus {virtual_gpus} cannot be shared by {world_size} processes; use a multiple "
                         f"of {world_size} (each process then holds virtual_gpus / {world_size} GPUs) or 1 (off).")
    return virtual_gpus // world_size


def set_bn_splits(model: nn.Module, groups: int) -> int:
    """Split every DAFF BatchNorm (SplitBatchNorm2d) of `model` into `groups` per-GPU groups; SOPE's BatchNorms are
    plain BatchNorm2d/SyncBatchNorm and keep whole-batch statistics. Returns how many layers were set."""
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups {groups!r} must be a positive integer (1: whole-batch statistics).")
    layers = [m for m in model.modules() if isinstance(m, SplitBatchNorm2d)]
    for m in layers:
        m.num_splits = groups
    return len(layers)


class GroupMixup:
    """Calls `mixup` (timm's Mixup, batch mode) once per group of interleaved items g::G, so each group draws its
    own lambda and mixes only within itself, as each official GPU does with its own batch."""

    def __init__(self, mixup: Callable, groups: int):
        self.mixup, self.groups = mixup, groups

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.groups
        if x.shape[0] % g:
            raise ValueError(f"a batch of {x.shape[0]} images cannot be split into {g} per-GPU groups for Mixup; "
                             f"use a batch size divisible by {g}.")
        parts = [self.mixup(x[i::g].contiguous(), y[i::g]) for i in range(g)]
        xs = torch.stack([p[0] for p in parts], dim=1).flatten(0, 1)  # back to item order i*g + group
        ys = torch.stack([p[1] for p in parts], dim=1).flatten(0, 1)
        return xs, ys


def use_virtual_gpus(model: nn.Module, mixup_fn: Callable | None, virtual_gpus: int,
                     world_size: int = 1) -> tuple[Callable | None, int]:
    """Set up `model` and `mixup_fn` for `virtual_gpus` official GPUs over `world_size` processes; returns the
    mixup function to use and the number of groups per process."""
    groups = groups_per_process(virtual_gpus, world_size)
    set_bn_splits(model, groups)
    if mixup_fn is not None and groups > 1:
        mixup_fn = GroupMixup(mixup_fn, groups)
    return mixup_fn, groups


def compile_model(model: nn.Module, dev: torch.device) -> None:
    """torch.compile `model` in place (the same module and state_dict keys; the EMA copy stays eager). On a CPU,
    inductor builds C++ kernels: without a compiler the run stops here in one sentence."""
    if dev.type == "cpu" and not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")):
        raise RuntimeError("compile=True needs a C++ compiler on this CPU (torch.compile's inductor builds C++ "
                           "kernels): install g++ (or set CXX), or train with compile=False.")
    model.compile()
