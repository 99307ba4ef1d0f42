"""Orchestration: recipe -> data -> model -> optimiser and schedule -> epochs -> checkpoints and records.

    python -m dhvtlib.train --preset quick --output runs/quick
    torchrun --nproc_per_node 2 -m dhvtlib.train --preset cifar100 --model dhvt_tiny_cifar_patch2 --data-dir data/cifar100
    python -m dhvtlib.train --preset quick --output runs/quick --resume        # continue after a crash or Ctrl-C
    dhvt-eval --checkpoint runs/quick/checkpoint-best.pt --dataset fashion_mnist

`run()` is the same from Python (the notebooks call it) and returns the run manifest. A run directory holds
config.json, metrics.jsonl/.csv, manifest.json, checkpoint-last.pt, checkpoint-best.pt and model.safetensors.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime as dt
import io
import json
import logging
import math
import os
import platform
import random
import signal
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import __version__
from .checkpoint import (build_recorded_model, check_finite, export_safetensors, load_checkpoint,
                         load_weights, rng_state, safetensors_info, save_checkpoint, set_rng_state)
from .data import dataset_info, default_data_dir, load_split, subset_per_class
from .data.augment import BatchAugment, build_pil_transform
from .data.loaders import FileLoader, InMemoryLoader, eval_indices, train_indices
from .files import atomic_write, write_json
from .engine import EpochState, NonFiniteLossError, StopRequested, evaluate, train_one_epoch
from .groups import use_virtual_gpus
from .models import DHVT, convert_sope_sync_batchnorm, create_model, family, param_groups_weight_decay
from .models.profile import count_params
from .precision import resolve_precision
from .recipe import NONE, PRESETS, Recipe, describe_diff, recipe_diff, recipe_from_dict, resolve
from .rundir import (RunInterrupted, RunLock, RunLockedError, StopSignals, make_run_dir, nonfinite_tensors,
                     read_manifest, remove_stale_temp)
from .progress import interrupted, progress_bar as _progress

__all__ = ["run", "evaluate_checkpoint", "build_model", "build_optimizer", "main", "eval_main"]

# Recipe fields that may change when a diverged run is resumed from its last finite checkpoint on purpose.
RECIPE_CHANGES_ON_RESUME = frozenset({"lr", "clip_grad", "precision"})  # with change_recipe=True (after divergence)


# ------------------------------------------------------------------------------------------------ environment
@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cpu', 'cuda', 'cuda:N' and 'mps' are checked against
    what this torch build and machine have, with one sentence when they cannot work."""
    name = str(device).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps.")
    if kind == "cuda" and not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        raise ValueError(f"device {device!r} was asked for but no CUDA GPU is visible ({build}); use device='auto' "
                         "or 'cpu'.")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} GPU(s) are visible.")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} was asked for but MPS is not available here; use device='auto' or 'cpu'.")
    return name


def init_distributed(device: str) -> tuple[Dist, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: NCCL on CUDA, gloo on CPU. A plain launch is one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device)
    if world == 1:
        return Dist(), torch.device(device)
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    dev = torch.device("cuda", d.local_rank) if device.startswith("cuda") else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return d, dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_state() -> tuple[str | None, bool | None]:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def environment(device: torch.device) -> dict[str, Any]:
    import timm
    import torchvision

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "timm": timm.__version__, "dhvtlib": __version__,
                         "numpy": np.__version__},
            "hardware": {"cpu": cpu, "threads": torch.get_num_threads(), "platform": platform.platform(),
                         "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None}}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    with atomic_write(out / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in history)
    buf = io.StringIO()
    cols = list(dict.fromkeys(k for r in history for k in r))
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(history)
    with atomic_write(out / "metrics.csv", "w") as f:
        f.write(buf.getvalue())


# ------------------------------------------------------------------------------------------------ building
def build_model(recipe: Recipe, info) -> nn.Module:
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


def _build_data(recipe: Recipe, data_dir, download: bool, d: Dist, device: torch.device):
    if recipe.dataset == "imagefolder":  # your own folder: checked, split, sized, decoded once (data/folder.py)
        info, train, test = _own_data(recipe, data_dir, device, verbose=d.main)
    else:
        info = dataset_info(recipe.dataset, data_dir)
        if recipe.img_size:
            info = dataclasses.replace(info, img_size=recipe.img_size)
        if download and d.world_size > 1:  # rank 0 downloads, the others wait and read
            if d.main:
                load_split(recipe.dataset, data_dir, train=True, download=True)
            dist.barrier()
        train = load_split(recipe.dataset, data_dir, train=True, download=download)
        test = _test_split(recipe.dataset, data_dir, recipe.test_samples_per_class, download)
    if recipe.samples_per_class and recipe.dataset != "imagefolder":  # (_own_data takes its own subsets)
        train = subset_per_class(train, recipe.samples_per_class, seed=recipe.seed)
    per_rank = recipe.batch_size // d.world_size
    if per_rank * d.world_size != recipe.batch_size:
        raise ValueError(f"batch_size {recipe.batch_size} is not divisible by the {d.world_size} processes; "
                         "choose a multiple of the world size.")
    if len(train) < recipe.batch_size:
        raise ValueError(f"the training set has {len(train)} images, fewer than batch_size {recipe.batch_size}; "
                         "lower batch_size or raise samples_per_class.")
    workers = _workers(recipe.num_workers)
    if info.in_memory:
        native = train.images.shape[-1]
        # DeiT: RandomCrop(padding=4) at <= 32 px when no resize is needed, else bicubic RandomResizedCrop
        aug = BatchAugment(info.img_size, info.mean, info.std, crop="pad" if info.img_size == native <= 32 else "rrc",
                           hflip=recipe.hflip, rand_augment=recipe.rand_augment,
                           random_erasing=recipe.random_erasing, rrc_interpolation="bicubic")
        gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + d.rank)
        train_loader = InMemoryLoader(train, per_rank, device, info.mean, info.std, augment=aug, generator=gen,
                                      channels_last=recipe.channels_last)
        generators = {"augment": gen}
    else:
        train.transform = build_pil_transform(info.img_size, info.mean, info.std, train=True,
                                              rand_augment=recipe.rand_augment, random_erasing=recipe.random_erasing)
        train_loader = FileLoader(train, per_rank, device, num_workers=workers, seed=recipe.seed + d.rank,
                                  channels_last=recipe.channels_last)
        generators = {}
    test_loader = _test_loader(info, test, recipe.eval_batch_size, device, num_workers=workers,
                               channels_last=recipe.channels_last)
    return info, train_loader, test_loader, generators


def _workers(asked: int) -> int:
    """DataLoader workers for file data sets: the recipe's count, at most the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(asked, cpus))


def _own_data(recipe: Recipe, data_dir, device, *, verbose: bool = True, saved: dict | None = None):
    """(info, train, test) of an image folder (data/folder.py); `saved` (a checkpoint's data config) pins the
    image size, channels, split and mean/std that training used."""
    from .data.folder import own_data

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


def _test_split(dataset: str, data_dir, per_class: int | None, download: bool = False):
    """The test split, or its deterministic per-class subset (seed 0, the same for every run)."""
    test = load_split(dataset, data_dir, train=False, download=download)
    return subset_per_class(test, per_class, seed=0, flag="test_samples_per_class", split="test") if per_class \
        else test


def _test_loader(info, test, batch_size: int, device: torch.device, *, eval_size: int | None = None,
                 num_workers: int = 4, channels_last: bool = False) -> InMemoryLoader | FileLoader:
    """Evaluation batches: in-memory images normalised (resized to eval_size, default info.img_size), or files
    through DeiT's evaluation transform at eval_size (default info.img_size)."""
    if info.in_memory:
        return InMemoryLoader(test, batch_size, device, info.mean, info.std, channels_last=channels_last,
                              eval_size=eval_size or info.img_size)
    test.transform = build_pil_transform(eval_size or info.img_size, info.mean, info.std, train=False)
    return FileLoader(test, batch_size, device, num_workers=num_workers, channels_last=channels_last)


def build_optimizer(model: nn.Module, recipe: Recipe, optimizer: torch.optim.Optimizer | None = None):
    """AdamW over the official decay groups at lr * batch / 512, and timm's cosine schedule with linear warmup,
    to be stepped as `scheduler.step(epoch)` after each epoch (DeiT: epochs 0 and 1 both run at warmup_lr).
    With `optimizer`, only a new schedule for it (from its groups' `initial_lr`)."""
    from timm.scheduler import CosineLRScheduler

    if optimizer is None:
        optimizer = torch.optim.AdamW(param_groups_weight_decay(model, recipe.weight_decay),
                                      lr=recipe.effective_lr, eps=recipe.opt_eps, betas=recipe.opt_betas)
    cosine_log = logging.getLogger(CosineLRScheduler.__module__)
    level = cosine_log.level
    cosine_log.setLevel(logging.ERROR)  # its "no effect when t_initial = 1" note is expected for a 1-epoch run
    try:
        scheduler = CosineLRScheduler(optimizer, t_initial=recipe.epochs, lr_min=recipe.min_lr,
                                      warmup_t=recipe.warmup_epochs, warmup_lr_init=recipe.warmup_lr, cycle_limit=1,
                                      t_in_epochs=True)
    finally:
        cosine_log.setLevel(level)
    return optimizer, scheduler


def _criterion_and_mixup(recipe: Recipe, num_classes: int):
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if recipe.mixup > 0 or recipe.cutmix > 0:
        mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, prob=recipe.mixup_prob,
                      switch_prob=recipe.mixup_switch_prob, mode="batch", label_smoothing=recipe.smoothing,
                      num_classes=num_classes)
        return SoftTargetCrossEntropy(), mixup
    if recipe.smoothing > 0:
        return LabelSmoothingCrossEntropy(recipe.smoothing), None
    return nn.CrossEntropyLoss(), None


# ------------------------------------------------------------------------------------------------ the run
def run(preset: str | Recipe | None = None, *, output: str | os.PathLike | None = None, data_dir: str | None = None,
        download: bool = False, resume: bool = False, device: str = "auto", experiment: str | None = None,
        tag: str | None = None, progress: bool = True, tensorboard: bool = False, verbose: bool = True,
        change_recipe: bool = False, **overrides: Any) -> dict[str, Any]:
    """Train one model with a preset recipe (any recipe value can be overridden) and return its manifest.

    `preset`: a name from PRESETS or a Recipe; None is 'quick' for a new run and the run's own saved recipe when
    resuming. `output`: the run directory (default runs/<preset>/<model>-<dataset>-s<seed>); one process writes
    it at a time (a lock). `resume=True` continues from its checkpoint-last.pt (model, optimiser, scheduler,
    scaler, EMA, every RNG state, sampler position) and ends bitwise equal to an uninterrupted run on CPU; the
    recipe must equal the saved one (values not given are taken from it), except `EXECUTION_FIELDS`. A completed
    run is never reopened: resuming it returns its manifest unchanged. After a divergence, `change_recipe=True`
    resumes the last finite checkpoint with another lr, clip_grad or precision; the manifest records the change.
    `experiment` and `tag` label the run for results tables.
    """
    d, dev = init_distributed(device)
    ckpt, saved = None, None
    if resume:
        if output is None:
            raise ValueError("resume needs the run directory: pass output= (--output runs/...).")
        last = Path(output) / "checkpoint-last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: {last} does not exist; start the run without resume or point "
                                    "output at the run directory to continue.")
        ckpt = load_checkpoint(last)
        saved = ckpt["config"]
    recipe = resolve(recipe_from_dict(saved) if preset is None and saved else preset or "quick", **overrides)
    if saved and recipe.precision == "auto" and saved.get("precision", "auto") != "auto":
        recipe = dataclasses.replace(recipe, precision=saved["precision"])  # a run continues as it started
    out = Path(output) if output else Path("runs") / recipe.name / f"{recipe.model}-{recipe.dataset}-s{recipe.seed}"
    if not d.main:
        return _train(recipe, out, d, dev, ckpt, data_dir=data_dir, download=download, experiment=experiment,
                      tag=tag, progress=progress, tensorboard=tensorboard, verbose=verbose, changes={})
    created = make_run_dir(out)
    try:
        with RunLock(out):
            previous = read_manifest(out)
            changes = _check_reuse(out, previous, saved, recipe, resume, change_recipe)
            if resume and previous.get("status") == "completed":
                if verbose:
                    print(f"{out} is already completed; nothing to resume.", flush=True)
                return previous
            remove_stale_temp(out)
            return _train(recipe, out, d, dev, ckpt, data_dir=data_dir, download=download, experiment=experiment,
                          tag=tag, progress=progress, tensorboard=tensorboard, verbose=verbose, changes=changes)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):  # nothing was written: leave no empty folder
            with contextlib.suppress(OSError):
                out.rmdir()


def _check_reuse(out: Path, previous: dict[str, Any], saved: dict[str, Any] | None, recipe: Recipe, resume: bool,
                 change_recipe: bool) -> dict[str, tuple[Any, Any]]:
    """Refuse to overwrite a run, or to continue one with another recipe; returns the allowed changes."""
    if not resume:
        if previous or (out / "checkpoint-last.pt").exists():
            raise FileExistsError(f"{out} already holds a run; pass resume=True (--resume) to continue it or choose "
                                  "another output directory.")
        return {}
    diff = recipe_diff(saved, recipe)
    if not diff:
        return {}
    if previous.get("status") == "completed":
        raise ValueError(f"{out} is a completed run of another recipe ({describe_diff(diff)}); a completed run is "
                         "never reopened: train the new recipe into another output directory.")
    if change_recipe and set(diff) <= RECIPE_CHANGES_ON_RESUME:
        return diff
    if change_recipe:
        raise ValueError(f"cannot resume {out} with {describe_diff(diff)}: only "
                         f"{', '.join(sorted(RECIPE_CHANGES_ON_RESUME))} may change on resume (change_recipe); "
                         "train the new recipe into another output directory.")
    hint = ("a run's cosine schedule is fixed by its epochs: train the new length into another output directory"
            if "epochs" in diff else
            "omit them (and the preset) to continue with the saved recipe; after a divergence, pass change_recipe="
            "True (--change-recipe) to continue with another lr, clip_grad or precision")
    raise ValueError(f"cannot resume {out}: the recipe differs in {sorted(diff)} ({describe_diff(diff)}); {hint}.")


def _train(recipe: Recipe, out: Path, d: Dist, dev: torch.device, ckpt: dict[str, Any] | None, *, data_dir,
           download: bool, experiment, tag, progress: bool, tensorboard: bool, verbose: bool,
           changes: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    last, best_path = out / "checkpoint-last.pt", out / "checkpoint-best.pt"
    precision, precision_reason = resolve_precision(recipe.precision, dev, ckpt.get("precision") if ckpt else None)
    seed_everything(recipe.seed + d.rank)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = False
    try:
        info, train_loader, test_loader, generators = _build_data(recipe, data_dir, download, d, dev)
    except OSError as e:
        if not download or isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"downloading {recipe.dataset} failed ({type(e).__name__}: {e}); without network, put the "
                         "files in data_dir yourself and drop download (--download).") from None
    model = build_model(recipe, info)
    model.data_config = info.eval_config()  # size, channels, mean/std, resize rule: saved for evaluation
    if recipe.finetune and ckpt is None:
        skipped = load_weights(model, recipe.finetune, new_head_ok=True)
        if verbose and d.main and skipped:
            print(f"fine-tuning from {recipe.finetune}: new head ({', '.join(skipped)} re-initialised)")
    sync_bn = d.world_size > 1
    if sync_bn:  # SOPE's BatchNorm over all processes: torch's SyncBatchNorm on CUDA, all_reduce-based elsewhere
        convert_sope_sync_batchnorm(model, native=dev.type == "cuda")
    model.to(dev)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, recipe)
    from timm.utils import ModelEmaV3

    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
    ema = ModelEmaV3(model, decay=recipe.model_ema_decay) if recipe.model_ema else None
    criterion, mixup_fn = _criterion_and_mixup(recipe, info.num_classes)
    mixup_fn, bn_groups = use_virtual_gpus(model, mixup_fn, recipe.virtual_gpus, d.world_size)
    net: nn.Module = model
    if d.world_size > 1:
        # Table 8's "split CLS" rows without SE leave the last block's patch FFN unused (see ablations.py).
        unused = recipe.model_kwargs.get("daff_se") == "none"
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                  find_unused_parameters=unused)

    history: list[dict[str, Any]] = []
    start_epoch, epoch_state, best = 0, None, {"top1": -1.0, "top5": 0.0, "epoch": -1}
    started, wall_before = _now(), 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.module.load_state_dict(ckpt["ema"])
        history, best = list(ckpt["history"]), dict(ckpt["best"])
        start_epoch = ckpt["epoch"]
        epoch_state = EpochState(**ckpt["epoch_state"]) if ckpt.get("epoch_state") else None
        started, wall_before = ckpt.get("started", started), ckpt.get("wall_s", 0.0)
        set_rng_state(ckpt["rng"][d.rank] if isinstance(ckpt["rng"], list) else ckpt["rng"], generators)
    recipe_changes = list(ckpt.get("recipe_changes", [])) if ckpt is not None else []
    if changes:  # change_recipe after a divergence: the new lr takes effect from the resumed epoch on
        if "lr" in changes:
            for g in optimizer.param_groups:
                g["initial_lr"] = recipe.effective_lr
            _, scheduler = build_optimizer(model, recipe, optimizer=optimizer)
            scheduler.step(max(start_epoch - 1, 0))  # the lr DeiT's per-epoch stepping gives the resumed epoch
        recipe_changes.append({"epoch": start_epoch, "step": epoch_state.step if epoch_state else 0, "at": _now(),
                               "changes": {k: list(v) for k, v in changes.items()}})
        if verbose and d.main:
            print(f"resuming with a changed recipe: {describe_diff(changes)} (recorded in the manifest)", flush=True)

    env = environment(dev)
    commit, dirty = git_state()
    manifest: dict[str, Any] = {
        "run_id": out.name, "experiment": experiment or recipe.name, "tag": tag, "model": recipe.model,
        "model_kwargs": recipe.model_kwargs, "dataset": recipe.dataset, "preset": recipe.name, "seed": recipe.seed,
        "config": recipe.to_dict(), "samples_per_class": recipe.samples_per_class,
        "train_images": len(train_loader), "test_images": len(test_loader), "data": info.details,
        "params": count_params(model), "model_config": model.config,
        "git_commit": commit, "git_dirty": dirty, **env, "device": str(dev), "world_size": d.world_size,
        "sync_bn": sync_bn, "precision": precision, "precision_reason": precision_reason,
        "bn_groups_per_process": bn_groups, "effective_lr": recipe.effective_lr,
        "started": started, "ended": None, "wall_s": None, "status": "running", "output": str(out),
        "recipe_changes": recipe_changes}
    if d.main:
        write_json(out / "config.json", recipe.to_dict())
        write_json(out / "manifest.json", manifest)
    writer = _tensorboard(out) if tensorboard and d.main else None
    t_start = time.perf_counter()
    saved_at = [time.monotonic()]

    def checkpoint(epoch: int, state: EpochState | None, path: Path = last) -> None:
        """Save (rank 0) unless the weights are no longer finite: then the last finite checkpoint stays."""
        _check_finite(model, ema, epoch, state.step if state else None, out)
        saved_at[0] = time.monotonic()
        rngs = rng_state(generators)
        if d.world_size > 1:  # every rank's RNG state, gathered to rank 0
            gathered: list[Any] = [None] * d.world_size
            dist.all_gather_object(gathered, rngs)
            rngs = gathered
        if not d.main:
            return
        save_checkpoint({"model": model.state_dict(), "model_name": recipe.model, "model_config": model.config,
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "scaler": scaler.state_dict() if scaler else None,
                         "ema": ema.module.state_dict() if ema else None, "rng": rngs, "epoch": epoch,
                         "epoch_state": state.to_dict() if state else None, "history": history, "best": best,
                         "config": recipe.to_dict(), "precision": precision, "data_config": model.data_config,
                         "started": started, "recipe_changes": recipe_changes,
                         "wall_s": wall_before + time.perf_counter() - t_start}, path)

    status, error = "running", None
    stop = StopSignals()
    due = _checkpoint_due(recipe, saved_at, dev)
    bar = None
    try:
        with stop:
            for epoch in range(start_epoch, recipe.epochs):
                idx = train_indices(len(train_loader), epoch, recipe.seed, rank=d.rank, world_size=d.world_size,
                                    repeated_aug=recipe.repeated_aug, repeats=recipe.ra_repeats)
                state = epoch_state or EpochState()
                epoch_state = None
                kwargs = {"epoch": epoch} if isinstance(train_loader, FileLoader) else {}
                batches = train_loader.batches(idx, train=True, start_step=state.step, **kwargs)
                lr = optimizer.param_groups[0]["lr"]
                every = recipe.checkpoint_every_steps
                bar = _progress(progress and d.main, train_loader.steps(idx), state.step,
                                f"epoch {epoch + 1}/{recipe.epochs}")
                state = train_one_epoch(
                    net, batches, criterion, optimizer, device=dev, precision=precision, mixup_fn=mixup_fn,
                    ema=ema, scaler=scaler, clip_grad=recipe.clip_grad, state=state, epoch=epoch, progress=bar,
                    on_step=lambda s: _after_step(s, epoch, every, due, checkpoint),
                    stop_requested=lambda: stop.set, train_mode=not (recipe.finetune and recipe.finetune_eval_mode))
                if bar is not None:
                    bar.close()
                _check_finite(model, ema, epoch, state.step, out)  # before evaluating diverged weights
                scheduler.step(epoch)  # as DeiT: lr_scheduler.step(epoch) after each epoch
                row = {"epoch": epoch, "train_loss": state.loss_sum / max(state.samples, 1), "lr": lr,
                       "epoch_s": state.data_s + state.compute_s,
                       "img_s": state.samples / max(state.compute_s + state.data_s, 1e-9) * d.world_size,
                       "data_s": state.data_s, "compute_s": state.compute_s}
                if (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs:
                    ev = evaluate(net, test_loader.batches(eval_indices(len(test_loader), d.rank, d.world_size),
                                                           train=False), device=dev, precision=precision)
                    if not math.isfinite(ev["test_loss"]):
                        raise NonFiniteLossError(
                            f"the test loss is {ev['test_loss']} after epoch {epoch + 1} although the weights are "
                            f"finite (an overflow); the run stopped and keeps its last good checkpoint: lower lr "
                            f"or use precision='fp32' ({_resume_hint(out)}).")
                    row.update(test_loss=ev["test_loss"], top1=ev["top1"], top5=ev["top5"])
                    if ema is not None and recipe.eval_ema:
                        ev_ema = evaluate(ema.module, test_loader.batches(
                            eval_indices(len(test_loader), d.rank, d.world_size), train=False), device=dev,
                            precision=precision)
                        row.update(ema_top1=ev_ema["top1"], ema_top5=ev_ema["top5"])
                history.append(row)
                if "top1" in row and row["top1"] > best["top1"]:
                    best = {"top1": row["top1"], "top5": row["top5"], "epoch": epoch}
                    checkpoint(epoch + 1, None, best_path)
                checkpoint(epoch + 1, None)
                if d.main:
                    _write_metrics(out, history)
                    if writer is not None:
                        for k, v in row.items():
                            if k != "epoch":
                                writer.add_scalar(k, v, epoch)
                    if verbose:
                        print(_epoch_line(row, best, recipe.epochs), flush=True)
            if d.world_size > 1:
                _check_params_in_sync(model)
                manifest["ddp_params_in_sync"] = True
        status = "completed"
    except StopRequested as e:
        checkpoint(epoch, e.state)
        status = "interrupted"
    except NonFiniteLossError as e:
        status, error = "diverged", str(e)
        if "--change-recipe" not in str(e):
            raise NonFiniteLossError(f"{e} ({_resume_hint(out)})") from None
        raise
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        if bar is not None:  # an interrupted epoch's bar too
            bar.close()
        if status == "running":
            status = "failed"
        if writer is not None:
            writer.close()
        if d.main:
            wall = wall_before + time.perf_counter() - t_start
            manifest.update(_summary(history, best), ended=_now(), wall_s=round(wall, 1), status=status)
            if error:
                manifest["error"] = error
            if status == "completed":
                manifest["weights"] = "model.safetensors"
                manifest["weights_sha256"] = export_safetensors(model, out / "model.safetensors")
            _write_metrics(out, history)  # the manifest and metrics always describe the same epochs
            write_json(out / "manifest.json", manifest)
    if status == "interrupted":
        raise interrupted(out, tell=verbose and d.main, signum=stop.signum or signal.SIGINT)
    return manifest


def _resume_hint(out: Path) -> str:
    return (f"to continue from it with a lower lr: dhvt-train --resume --output {out} --lr <lower> "
            "--change-recipe, or run(..., resume=True, change_recipe=True, lr=...)")


def _check_finite(model: nn.Module, ema: Any, epoch: int, step: int | None, out: Path) -> None:
    bad = nonfinite_tensors(model.state_dict(), ema.module.state_dict() if ema is not None else None)
    if bad:
        where = f"epoch {epoch + 1}" + (f", step {step}" if step is not None else "")
        raise NonFiniteLossError(f"the weights became non-finite in {where} ({len(bad)} tensors, e.g. {bad[0]}); "
                                 f"the run stopped and keeps its last finite checkpoint ({_resume_hint(out)}).")


def _checkpoint_due(recipe: Recipe, saved_at: list[float], dev: torch.device):
    """() -> whether checkpoint_every_minutes have passed since the last checkpoint, agreed over all ranks (rank 0's
    clock decides, so every rank checkpoints at the same step)."""
    minutes = recipe.checkpoint_every_minutes

    def due() -> bool:
        if not minutes:
            return False
        flag = time.monotonic() - saved_at[0] >= 60 * minutes
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = torch.tensor([float(flag)], device=dev)
            dist.broadcast(t, 0)
            flag = bool(t.item())
        return flag
    return due


def _after_step(state: EpochState, epoch: int, every: int, due, checkpoint) -> None:
    if (every and state.step % every == 0) or due():
        checkpoint(epoch, state)
    # Tests deliver a real signal at an exact step ("KILL:e:s" or "INT:e:s") to check crash and Ctrl-C resume.
    sig = os.environ.get("DHVTLIB_TEST_SIGNAL")
    if sig:
        name, e, s = sig.split(":")
        if (int(e), int(s)) == (epoch, state.step):
            os.kill(os.getpid(), getattr(signal, "SIG" + name))


def _summary(history: list[dict[str, Any]], best: dict[str, Any]) -> dict[str, Any]:
    evals = [r for r in history if "top1" in r]
    final = evals[-1] if evals else {}
    return {"epochs_run": len(history), "best_top1": best["top1"] if best["epoch"] >= 0 else None,
            "best_top5": best["top5"] if best["epoch"] >= 0 else None,
            "best_epoch": best["epoch"] if best["epoch"] >= 0 else None,
            "final_top1": final.get("top1"), "final_top5": final.get("top5"),
            "final_ema_top1": final.get("ema_top1"),
            "data_overhead": (sum(r["data_s"] for r in history) / max(sum(r["epoch_s"] for r in history), 1e-9)
                              if history else None)}


def _epoch_line(row: dict[str, Any], best: dict[str, Any], epochs: int) -> str:
    s = f"epoch {row['epoch'] + 1:>3}/{epochs}  loss {row['train_loss']:.4f}  lr {row['lr']:.2e}"
    if "top1" in row:
        s += f"  top1 {row['top1']:6.2f}  top5 {row['top5']:6.2f}  (best {best['top1']:.2f})"
    return s + f"  {row['epoch_s']:.1f}s  {row['img_s']:.0f} img/s"


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("tensorboard=True needs the tensorboard package; pip install tensorboard.") from e
    return SummaryWriter(str(out / "tensorboard"))


def _check_params_in_sync(model: nn.Module) -> None:
    """DDP keeps replicas equal; verify it (cheap: one all-reduce of a checksum)."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    mine = torch.stack([flat.sum(), flat.abs().sum()]).double()
    ref = mine.clone()
    dist.broadcast(ref, 0)
    if not torch.equal(mine, ref):
        raise RuntimeError(f"DDP replicas diverged on rank {dist.get_rank()}; report this with the run directory.")


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate_checkpoint(checkpoint: str | os.PathLike, dataset: str, *, data_dir: str | None = None,
                        model: str | None = None, batch_size: int = 256, device: str = "auto",
                        precision: str = "auto", test_samples_per_class: int | None = None,
                        use_ema: bool = False) -> dict[str, Any]:
    """Top-1/top-5 of a checkpoint (dhvtlib .pt, safetensors, or an official state_dict with `model=`; a run folder
    means its model.safetensors), evaluated with the image size, channels, mean/std, resize rule and (image
    folders) test split it was trained with, as recorded in the file; files without the record use the data set's
    registry values at the model's size. Shapes are checked against the recorded config before anything is built."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    d, dev = init_distributed(device)
    precision = resolve_precision(precision, dev)[0]
    path = Path(checkpoint)
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    if path.suffix == ".safetensors":
        if use_ema:
            raise ValueError(f"{path} holds the final weights only; pass the run's checkpoint-last.pt for use_ema.")
        rec = safetensors_info(path)
        shapes, data_cfg = rec["shapes"], rec.get("data") or {}
    else:
        ck = load_checkpoint(path)
        if use_ema and ck.get("ema") is None:
            raise ValueError(f"{path} holds no EMA weights; drop use_ema.")
        state = ck["ema"] if use_ema else ck["model"] if isinstance(ck.get("model"), dict) else ck
        rec = {"model": ck.get("model_name"), "config": ck.get("model_config")}
        shapes = {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}
        data_cfg = ck.get("data_config") or {}
    name, cfg = rec.get("model"), rec.get("config")
    if data_cfg.get("dataset") and data_cfg["dataset"] != dataset:
        warnings.warn(f"{path.name} was trained on {data_cfg['dataset']}; evaluating it on {dataset}.", stacklevel=2)
    if dataset == "imagefolder":
        saved = {"img_size": (cfg or {}).get("img_size"), "in_chans": (cfg or {}).get("in_chans"), **data_cfg}
        recipe = Recipe(dataset="imagefolder", model=name or model or Recipe.model,
                        test_samples_per_class=test_samples_per_class)
        info, _, test = _own_data(recipe, data_dir, dev, verbose=False, saved=saved)
    else:
        info = dataset_info(dataset, data_dir)
        if data_cfg.get("mean") and data_cfg.get("dataset") == dataset:
            info = dataclasses.replace(info, mean=tuple(data_cfg["mean"]), std=tuple(data_cfg["std"]))
        test = _test_split(dataset, data_dir, test_samples_per_class)
    if cfg:
        net = build_recorded_model(rec, shapes, path)
    elif model:
        net = create_model(model, img_size=info.img_size, in_chans=info.in_chans, num_classes=info.num_classes)
    else:
        raise ValueError(f"{path} does not say which model it holds; pass model= (--model) with its variant name.")
    net.variant = name or model
    classes = net.config.get("num_classes")
    if classes != info.num_classes:
        raise ValueError(f"{path.name} has a {classes}-class head but {dataset} has {info.num_classes} classes; "
                         "evaluate it on the data set it was trained on (or fine-tune it: finetune=).")
    if use_ema:
        check_finite(ck["ema"], path, "EMA ")
        net.load_state_dict(ck["ema"])
    else:
        load_weights(net, path)
    loader = _test_loader(info, test, batch_size, dev, eval_size=net.config["img_size"], num_workers=_workers(4))
    res = evaluate(net.to(dev), loader.batches(eval_indices(len(loader), d.rank, d.world_size), train=False),
                   device=dev, precision=precision)
    return {"checkpoint": str(path), "model": net.variant, "dataset": dataset, "img_size": net.config["img_size"],
            **res}


# ------------------------------------------------------------------------------------------------ command line
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dhvt-train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS), help="recipe preset (default: 'ablation' with --ablation, the "
                    "run's own recipe with --resume, else 'quick')")
    ap.add_argument("--output", type=Path, help="run directory (default runs/<preset>/<model>-<dataset>-s<seed>)")
    ap.add_argument("--data-dir", help="data set folder (default: the data set's usual place)")
    ap.add_argument("--download", action="store_true", help="download the data set if torchvision can")
    ap.add_argument("--resume", action="store_true", help="continue the run in --output from checkpoint-last.pt")
    ap.add_argument("--change-recipe", action="store_true", help="with --resume after a divergence: continue from "
                    "the last finite checkpoint with another --lr, --clip-grad or --precision (recorded)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    ap.add_argument("--experiment", help="label for results tables")
    ap.add_argument("--tag", help="row label for results tables (e.g. table5/sope)")
    ap.add_argument("--ablation", metavar="ROW", help="train one ablation row, e.g. table5/sope (sets --model, "
                    "--model-kwargs, the row's recipe values and --tag)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--tensorboard", action="store_true")
    ap.add_argument("--threads", type=_positive_int, help="torch intra-op threads")
    g = ap.add_argument_group("recipe overrides (default: the preset's value)")
    for f in dataclasses.fields(Recipe):
        if f.name == "name":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "model_kwargs":
            g.add_argument(flag, type=_json_object, help='JSON object of model arguments, e.g. \'{"depth": 6}\'')
        elif f.type in ("bool", bool):
            g.add_argument(flag, type=_bool, metavar="BOOL")
        elif f.name == "opt_betas":
            g.add_argument(flag, type=float, nargs=2)
        else:
            g.add_argument(flag, type=_type_of(f.type), metavar=f.name.upper())
    return ap


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{s!r} is not a boolean; use true or false.")


def _type_of(annotation: str):
    """Command-line converter for a Recipe annotation such as 'int', 'float | None' or 'str | None'. 'none' turns an
    optional value off (kept as the string, which `resolve` reads as an explicit None)."""
    base = {"int": int, "float": float, "str": str}[annotation.split("|")[0].strip()]
    if "None" not in annotation:
        return base
    return lambda s: NONE if s.lower() == NONE else base(s)


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"{s!r} is not a positive integer")
    return v


def _json_object(s: str) -> dict[str, Any]:
    try:
        v = json.loads(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{s!r} is not valid JSON ({e.msg} at character {e.pos}); write an object "
                                         'such as \'{"depth": 6}\'') from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError(f"{s!r} is a JSON {type(v).__name__}, not an object; write an object such "
                                         'as \'{"depth": 6}\'')
    return v


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe) if f.name != "name"}
    if args.ablation:
        from .models.ablations import ABLATIONS

        if args.ablation not in ABLATIONS:
            raise SystemExit(f"dhvt-train: unknown ablation row {args.ablation!r}; choose one of: "
                             f"{', '.join(ABLATIONS)}.")
        row = ABLATIONS[args.ablation]
        overrides.update({k: v for k, v in row.recipe.items() if overrides.get(k) is None})
        overrides["model"] = overrides["model"] or row.base
        overrides["model_kwargs"] = {**row.model_kwargs, **(overrides["model_kwargs"] or {})}
        args.tag = args.tag or row.key
    preset = args.preset or ("ablation" if args.ablation and not args.resume else None)
    try:
        m = run(preset, output=args.output, data_dir=args.data_dir, download=args.download, resume=args.resume,
                device=args.device, experiment=args.experiment, tag=args.tag, progress=not args.no_progress,
                tensorboard=args.tensorboard, change_recipe=args.change_recipe, **overrides)
    except (ValueError, FileNotFoundError, FileExistsError, NonFiniteLossError, RunLockedError) as e:
        raise SystemExit(f"dhvt-train: {e}") from None
    except RunInterrupted as e:
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if m.get("status") == "completed" and (int(os.environ.get("RANK", "0")) == 0):
        print(f"best top-1 {m['best_top1']:.2f} (epoch {m['best_epoch'] + 1}), final {m['final_top1']:.2f}; "
              f"{m['wall_s']}s; run in {m['output']}")



def eval_main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="dhvt-eval", description="Top-1/top-5 of a checkpoint on a data set's test split.")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--model", help="variant name, for official checkpoints that do not record it")
    ap.add_argument("--batch-size", type=_positive_int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--test-samples-per-class", type=_positive_int)
    ap.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    try:
        res = evaluate_checkpoint(args.checkpoint, args.dataset, data_dir=args.data_dir, model=args.model,
                                  batch_size=args.batch_size, device=args.device, precision=args.precision,
                                  test_samples_per_class=args.test_samples_per_class, use_ema=args.ema)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"dhvt-eval: {e}") from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(res, indent=2))
        if args.json:
            write_json(args.json, res)


if __name__ == "__main__":
    main()
