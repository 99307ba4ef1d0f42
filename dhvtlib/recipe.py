"""The paper's training recipe as named presets (the official scripts' values per data set), plus `quick` and `smoke`.

A `Recipe` is a frozen dataclass: every value a run depends on. `resolve(preset, **overrides)` returns a new one
with overrides applied and checked; the resolved recipe is saved with every run.

Batch size and learning rate: `batch_size` is the TOTAL batch over all processes (the official scripts' per-GPU
batch x GPUs) and `lr` is the script's `--lr`, scaled linearly as the official code does:
lr_eff = lr * batch_size / 512 (`Recipe.effective_lr`). The presets follow the shipped scripts; where
the paper's wording differs (DHVT-S on CIFAR, ImageNet at batch 512) pass `batch_size=` to match it.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Recipe", "PRESETS", "PRECISIONS", "check_precision", "DRLOC_SCHEME", "NONE", "EXECUTION_FIELDS", "resolve", "list_presets",
           "optional_fields", "recipe_from_dict", "recipe_diff", "describe_diff", "idle_warning"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # what 'auto' picks: dhvtlib.run.runtime.resolve_precision


def check_precision(requested: str) -> str:
    """`requested` when it is one of PRECISIONS, else one sentence listing them."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r} is not supported; use one of {PRECISIONS}.")
    return requested


@dataclass(frozen=True)
class Recipe:
    name: str = "custom"
    model: str = "dhvt_tiny_cifar_patch4"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # architecture overrides (depth, ablation flags...)
    dataset: str = "cifar100"
    img_size: int | None = None  # None: the data set's size; else images are resized (CIFAR fine-tuned at 224)
    samples_per_class: int | None = None  # deterministic per-class subset of the training set
    test_samples_per_class: int | None = None  # subset of the test set (smoke runs only)
    # your own image folder (dataset='imagefolder', data/folder.py): channels (None: 1 if every image is greyscale,
    # else 3), the stratified test split of a folder without val/ or test/ (seed 0), normalisation ('auto': the
    # training split's statistics in memory, ImageNet's from files; 'train'; 'imagenet'), unreadable files, and
    # the decode-once cache (memory budget in GiB, None: a quarter of the RAM; cache dir, None: the user cache)
    in_chans: int | None = None
    val_fraction: float = 0.2
    mean_std: str = "auto"
    skip_bad_files: bool = False
    memory_budget_gb: float | None = None
    cache_dir: str | None = None
    epochs: int = 300
    batch_size: int = 512  # total over all processes
    eval_batch_size: int = 256
    # optimiser and schedule (DeiT's): AdamW, lr scaled by batch/512, warmup then cosine, stepped per epoch.
    # opt 'sgd' (momentum, nesterov) is the CNN recipe (`cnn_sgd`); sched_unit 'step' steps the same cosine per
    # optimizer update (warmup and length still given in epochs, converted with the steps per epoch), so that a
    # budget of a few steps per epoch still gets a smooth schedule without DeiT's repeated warmup epoch.
    opt: str = "adamw"
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    sched_unit: str = "epoch"
    lr: float = 1e-3
    lr_scale_batch: int = 512
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_epochs: int = 5
    weight_decay: float = 0.05
    opt_eps: float = 1e-8
    opt_betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = None
    # regularisation and augmentation
    drop_path: float = 0.1
    drop: float = 0.0
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = 0.1
    rand_augment: str | None = "rand-m9-mstd0.5-inc1"
    random_erasing: float = 0.25
    hflip: float = 0.5
    repeated_aug: bool = True
    ra_repeats: int = 3
    # EMA: kept as the official code does (decay 0.99996, every step); evaluating it is new and optional
    model_ema: bool = True
    model_ema_decay: float = 0.99996
    eval_ema: bool = False
    # fine-tuning
    finetune: str | None = None  # checkpoint or safetensors to start from (head re-initialised on mismatch)
    # the official quirk: whenever `finetune` is set (any preset), train with the model in eval mode (BatchNorm at
    # the loaded statistics, drop path off), as main.py's set_training_mode = (args.finetune == ''); False: train mode
    finetune_eval_mode: bool = True
    # the official 2 GPUs' statistics on any devices (per-GPU DAFF BatchNorm): the batch is split into `virtual_gpus`
    # groups of `per_gpu_batch` images; DAFF's BatchNorms and Mixup work per group, SOPE's BatchNorm over the whole
    # batch (SyncBatchNorm). 1 = off (each process's batch is one group). See dhvtlib/run/build.py (virtual GPUs).
    virtual_gpus: int = 2  # the shipped scripts ran on 2 GPUs
    # execution (not part of the paper's recipe; never changes the maths except precision)
    precision: str = "auto"  # auto | fp32 | bf16 (autocast) | fp16 (autocast + grad scaler); see dhvtlib.run.runtime
    channels_last: bool = False
    # torch.compile the model in place (inductor; same state_dict). Off by default: on a CPU its compile time (minutes)
    # exceeds what it saves in a short run. Like channels_last it changes float rounding, so a run resumes with it
    # as it started (a compiled run resumes bitwise equal to an uninterrupted compiled one on CPU).
    compile: bool = False
    num_workers: int = 4  # DataLoader workers for file data sets; in-memory data sets use none
    eval_every: int = 1
    checkpoint_every_steps: int = 0  # also checkpoint mid-epoch every N steps (0: epoch ends only)
    checkpoint_every_minutes: float = 10.0  # also checkpoint mid-epoch when this much wall time passed (0: off)
    checkpoint_every_epochs: int = 1  # checkpoint-last.pt (and the metrics files) at every N-th epoch end
    seed: int = 0

    @property
    def per_gpu_batch(self) -> int:
        """Images per (virtual) GPU: the batch each DAFF BatchNorm and each Mixup draw sees."""
        return self.batch_size // self.virtual_gpus

    @property
    def effective_lr(self) -> float:
        return self.lr * self.batch_size / self.lr_scale_batch

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["opt_betas"] = list(self.opt_betas)
        return d


_PAPER = Recipe()
# Drloc (Liu et al., NeurIPS 2021), whose scheme Table 16 follows: yhlleo/VTs-Drloc at commit 007265c (a Swin
# Transformer codebase). {recipe field: (value, source line)}. Drloc scales BASE_LR, WARMUP_LR and MIN_LR by the
# total batch / 512 (main.py L127-129); our warmup_lr and min_lr are not scaled, so they hold the scaled values at
# Drloc's batch of 1024.
DRLOC_SCHEME: dict[str, tuple[Any, str]] = {
    "img_size": (224, "train.sh L6 IMG_SIZE=224; config.py L28"),
    "batch_size": (1024, "train.sh L20 --nproc_per_node=8 x L28 --batch-size 128 (per GPU)"),
    "virtual_gpus": (8, "train.sh L20: 8 GPUs, each its own BatchNorm statistics (no SyncBatchNorm in main.py)"),
    "lr": (5e-4, "config.py L83 BASE_LR 5e-4, x total batch / 512 (main.py L127): 1e-3 at 1024"),
    "lr_scale_batch": (512, "main.py L127-129: / 512.0"),
    "warmup_lr": (1e-6, "config.py L84 WARMUP_LR 5e-7, x 1024 / 512 (main.py L128)"),
    "min_lr": (1e-5, "config.py L85 MIN_LR 5e-6, x 1024 / 512 (main.py L129)"),
    "warmup_epochs": (20, "config.py L81 WARMUP_EPOCHS 20"),
    "epochs": (100, "Drloc's README ('trained with 100 epochs') and the DHVT paper. UNVERIFIED: main.py L222 "
                    "loops range(0, 101) while the cosine spans TRAIN.EPOCHS = 300 (config.py L80; --total_epochs "
                    "default 300, main.py L89, not passed by train.sh), so the public code stops at ~75% of the "
                    "peak lr"),
    "sched_unit": ("step", "main.py L177 build_scheduler(..., len(data_loader_train)) and L341 "
                           "lr_scheduler.step_update(epoch * num_steps + idx): a cosine stepped per iteration"),
    "clip_grad": (5.0, "config.py L87 CLIP_GRAD 5.0; main.py L337 clip_grad_norm_"),
    "weight_decay": (0.05, "config.py L82"),
    "opt_eps": (1e-8, "config.py L109"),
    "opt_betas": ((0.9, 0.999), "config.py L111"),
    "drop_path": (0.1, "config.py L56"),
    "smoothing": (0.1, "config.py L58"),
    "rand_augment": ("rand-m9-mstd0.5-inc1", "config.py L132"),
    "random_erasing": (0.25, "config.py L134"),
    "mixup": (0.8, "config.py L140"),
    "cutmix": (1.0, "config.py L142"),
    "mixup_prob": (1.0, "config.py L146"),
    "mixup_switch_prob": (0.5, "config.py L148"),
    "repeated_aug": (False, "data/build.py L37: DistributedSampler (no repeated augmentation)"),
    "model_ema": (False, "main.py: no model EMA"),
}
PRESETS: dict[str, Recipe] = {
    # run_code_cifar.sh: 256 x 2 GPUs, --lr 1e-3, warmup 5, 300 epochs (Table 4)
    "cifar100": dataclasses.replace(_PAPER, name="cifar100"),
    # paper section 4.3: DHVT-T/4 on CIFAR-100, warmup 10, batch 512 (Tables 5-11)
    "ablation": dataclasses.replace(_PAPER, name="ablation", warmup_epochs=10),
    # run_code_domain.sh: 128 x 2, --lr 1e-3 (lr_eff 5e-4), warmup 20 (Tables 2, 13)
    "domainnet": dataclasses.replace(_PAPER, name="domainnet", model="dhvt_tiny_domain_patch16",
                                     dataset="domainnet_clipart", batch_size=256, eval_batch_size=128, warmup_epochs=20),
    # run_code_imn.sh: 128 x 2, --lr 5e-4 (lr_eff 2.5e-4), warmup 10 (Tables 3, 15)
    "imagenet": dataclasses.replace(_PAPER, name="imagenet", model="dhvt_tiny_imagenet_patch16", dataset="imagenet",
                                    batch_size=256, eval_batch_size=128, lr=5e-4, warmup_epochs=10),
    # finetune.sh: IN-1K -> Clipart etc., 128 x 2, --lr 5e-4, warmup 2, 100 epochs, wd 1e-8, min-lr 1e-6,
    # no repeated augmentation (Tables 7, 14). Needs finetune=<checkpoint>. Like any run with finetune=, it trains
    # with the model in eval mode (finetune_eval_mode).
    "finetune": dataclasses.replace(_PAPER, name="finetune", model="dhvt_small_imagenet_patch16",
                                    dataset="domainnet_clipart", batch_size=256, eval_batch_size=128, lr=5e-4,
                                    warmup_epochs=2, epochs=100, weight_decay=1e-8, min_lr=1e-6, repeated_aug=False),
    # Table 16: Drloc's training scheme, value by value from its public code (DRLOC_SCHEME above, with sources).
    "drloc": dataclasses.replace(_PAPER, name="drloc", model="dhvt_tiny_domain_patch16", dataset="domainnet_clipart",
                                 eval_batch_size=128, **{k: v for k, (v, _) in DRLOC_SCHEME.items()}),
    # The embedded data set on a CPU in a few minutes: a narrow DHVT on 100 Fashion-MNIST images per class, the
    # paper's recipe at the paper's effective lr (8e-3 * 64 / 512 = 1e-3).
    "quick": dataclasses.replace(_PAPER, name="quick", model="dhvt_tiny_cifar_patch4", dataset="fashion_mnist",
                                 model_kwargs=dict(embed_dim=96, depth=6, num_heads=4), samples_per_class=100,
                                 test_samples_per_class=200, epochs=10, batch_size=64, eval_batch_size=250, lr=8e-3,
                                 warmup_epochs=1, repeated_aug=False, virtual_gpus=1),
    # A CNN trained the way CNNs are trained (the usual CIFAR ResNet recipe): SGD with nesterov momentum 0.9, lr 0.1
    # at batch 128 scaled linearly, weight decay 5e-4, cosine to 0, random crop with 4-pixel padding and horizontal
    # flip; no Mixup/CutMix/RandAugment/random erasing/label smoothing/stochastic depth/EMA. Not a paper preset.
    "cnn_sgd": dataclasses.replace(_PAPER, name="cnn_sgd", model="resnet18_cifar", epochs=200, batch_size=128,
                                   opt="sgd", lr=0.1, lr_scale_batch=128, momentum=0.9, nesterov=True,
                                   weight_decay=5e-4, min_lr=0.0, warmup_epochs=0, drop_path=0.0, mixup=0.0,
                                   cutmix=0.0, smoothing=0.0, rand_augment=None, random_erasing=0.0,
                                   repeated_aug=False, model_ema=False, virtual_gpus=1),
    # Tests: seconds on one core (no warmup: with DeiT's per-epoch schedule 1 warmup epoch would keep both
    # epochs at warmup_lr, and the run would not learn).
    "smoke": dataclasses.replace(_PAPER, name="smoke", model="dhvt_tiny_cifar_patch4", dataset="fashion_mnist",
                                 model_kwargs=dict(embed_dim=32, depth=2, num_heads=4, patch_size=4), samples_per_class=8,
                                 test_samples_per_class=4, epochs=2, batch_size=16, eval_batch_size=20,
                                 warmup_epochs=0, repeated_aug=False, checkpoint_every_steps=2, virtual_gpus=1),
}
PAPER_PRESETS = ("cifar100", "ablation", "domainnet", "imagenet", "finetune")


def list_presets() -> list[str]:
    return list(PRESETS)


# The value that turns an optional recipe value off explicitly (None in an override means "not given"): the string
# "none", as typed on the command line (`--rand-augment none`, `--samples-per-class none`).
NONE = "none"
# Recipe fields that never change the maths (how fast, how often to save): a completed run is reused and an
# interrupted one resumed across changes to these.
EXECUTION_FIELDS = frozenset({"num_workers", "eval_batch_size", "checkpoint_every_steps", "checkpoint_every_minutes",
                              "checkpoint_every_epochs", "memory_budget_gb", "cache_dir"})
OPTIMIZERS = ("adamw", "sgd")
SCHED_UNITS = ("epoch", "step")


def optional_fields() -> frozenset[str]:
    """The recipe values that may be None (turned off with "none")."""
    return frozenset(f.name for f in dataclasses.fields(Recipe) if "None" in str(f.type))


def resolve(preset: str | Recipe = "quick", **overrides: Any) -> Recipe:
    """The named preset with `overrides` applied, checked for consistency. None means "not given" (the preset's
    value stays); the string "none" turns an optional value off (e.g. `rand_augment="none"`)."""
    if isinstance(preset, Recipe):
        base = preset
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
    names = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown recipe value(s) {unknown}; valid names are: {', '.join(sorted(names))}.")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    optional = optional_fields()
    for k, v in list(overrides.items()):
        if isinstance(v, str) and v.lower() == NONE:
            if k not in optional:
                raise ValueError(f"{k} cannot be turned off with {v!r}; give a value of type "
                                 f"{_FIELD_TYPES[k]}.")
            overrides[k] = None
    _check_types(overrides)
    if "model_kwargs" in overrides:  # merged into the preset's architecture overrides, not replacing them
        overrides["model_kwargs"] = {**base.model_kwargs, **overrides["model_kwargs"]}
    if "opt_betas" in overrides:
        overrides["opt_betas"] = tuple(overrides["opt_betas"])
    r = dataclasses.replace(base, **overrides)
    _check(r)
    return r


_FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(Recipe)}


def _check_types(values: dict[str, Any]) -> None:
    """Each override has its field's type (ints are accepted for floats): run(epochs='3') is one sentence."""
    for k, v in values.items():
        t = _FIELD_TYPES[k]
        if v is None:
            continue
        base = t.split("|")[0].strip()
        if base.startswith("dict"):
            ok = isinstance(v, dict)
        elif base.startswith("tuple"):
            ok = isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_number(x) for x in v)
        elif base == "bool":
            ok = isinstance(v, bool)
        elif base == "int":
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif base == "float":
            ok = _is_number(v)
        else:
            ok = isinstance(v, str)
        if not ok:
            kind = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}.get(
                base, "a JSON object" if base.startswith("dict") else "two numbers")
            raise ValueError(f"{k} must be {kind}"
                             f"{' or None' if 'None' in t else ''}, got {v!r} ({type(v).__name__}).")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check(r: Recipe) -> None:
    check_precision(r.precision)
    if not isinstance(r.seed, int) or not 0 <= r.seed < 2**32:
        raise ValueError(f"seed must be an integer from 0 to 2**32 - 1, got {r.seed!r}.")
    if r.opt not in OPTIMIZERS:
        raise ValueError(f"opt {r.opt!r} is not an optimiser here; choose one of: {', '.join(OPTIMIZERS)}.")
    if r.sched_unit not in SCHED_UNITS:
        raise ValueError(f"sched_unit {r.sched_unit!r} is not a schedule unit; choose one of: {', '.join(SCHED_UNITS)}.")
    if not 0 <= r.momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {r.momentum}.")
    for name in ("epochs", "batch_size", "eval_batch_size", "lr_scale_batch", "eval_every", "ra_repeats",
                 "checkpoint_every_epochs"):
        if getattr(r, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(r, name)}.")
    if r.warmup_epochs < 0 or r.checkpoint_every_steps < 0:
        raise ValueError("warmup_epochs and checkpoint_every_steps must be non-negative.")
    if (r.mixup > 0 or r.cutmix > 0) and r.batch_size % 2:
        raise ValueError(f"batch_size {r.batch_size} must be even with mixup/cutmix (timm's Mixup pairs images); "
                         "use an even batch or mixup=0, cutmix=0.")
    if not isinstance(r.virtual_gpus, int) or r.virtual_gpus < 1 or r.batch_size % r.virtual_gpus:
        raise ValueError(f"virtual_gpus {r.virtual_gpus!r} must be a positive integer dividing batch_size "
                         f"{r.batch_size}; use 1 to turn per-GPU statistics off.")
    if (r.mixup > 0 or r.cutmix > 0) and r.per_gpu_batch % 2:
        raise ValueError(f"the per-GPU batch {r.per_gpu_batch} (batch_size {r.batch_size} / virtual_gpus "
                         f"{r.virtual_gpus}) must be even with mixup/cutmix; change virtual_gpus or batch_size.")
    for name in ("lr", "min_lr", "warmup_lr", "weight_decay", "opt_eps", "checkpoint_every_minutes"):
        v = getattr(r, name)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite non-negative number, got {v}.")
    if r.clip_grad is not None and (not math.isfinite(r.clip_grad) or r.clip_grad <= 0):
        raise ValueError(f"clip_grad must be a positive number (or none), got {r.clip_grad}.")
    if r.effective_lr > 1.0:
        raise ValueError(f"lr {r.lr} gives an effective learning rate of {r.effective_lr:.3g} "
                         f"(lr x batch_size {r.batch_size} / {r.lr_scale_batch}), which diverges at once; the paper "
                         "uses 1e-3 or 5e-4.")
    if r.img_size is not None and r.img_size < 1:
        raise ValueError(f"img_size must be a positive number of pixels, or none for the data set's own size, got "
                         f"{r.img_size}.")
    if r.num_workers < 0:
        raise ValueError(f"num_workers must be 0 or more, got {r.num_workers}.")
    if r.name == "finetune" and not r.finetune:
        raise ValueError("the finetune preset needs the checkpoint to start from: pass finetune=<path> "
                         "(--finetune runs/.../model.safetensors); to train from scratch use another preset.")
    for name in ("random_erasing", "hflip", "mixup_prob", "mixup_switch_prob", "drop_path", "drop", "smoothing"):
        if not 0 <= getattr(r, name) <= 1:
            raise ValueError(f"{name} must lie in [0, 1], got {getattr(r, name)}.")
    for name in ("samples_per_class", "test_samples_per_class"):
        v = getattr(r, name)
        if v is not None and v < 1:
            raise ValueError(f"{name} must be a positive number of images per class (or None for all), got {v}.")


def idle_warning(r: Recipe) -> str | None:
    """One line when DeiT's per-epoch warmup eats a large part of a short run (epochs 0 and 1 both run at
    warmup_lr, then warmup continues), else None. The paper presets keep the quirk; this only says it."""
    if r.sched_unit != "epoch" or r.warmup_epochs < 1 or r.warmup_lr >= r.effective_lr:
        return None
    idle = min(r.warmup_epochs + 1, r.epochs)
    if idle / r.epochs < 0.25:
        return None
    return (f"note: with epochs {r.epochs} and warmup_epochs {r.warmup_epochs}, DeiT's per-epoch schedule runs "
            f"{'epochs 1 and 2' if idle >= 2 else 'epoch 1'} at warmup_lr {r.warmup_lr:g} and warms up over "
            f"{idle} of {r.epochs} epochs, so this short run learns little; raise epochs, or pass warmup_epochs=0 "
            "or sched_unit='step'.")


# What a config saved before a field existed meant, where that differs from the field's default today.
LEGACY_VALUES = {"virtual_gpus": 1}  # before per-GPU statistics, one device's BatchNorm saw the whole batch


def recipe_from_dict(saved: dict[str, Any]) -> Recipe:
    """The Recipe a run saved (config.json, a checkpoint's 'config'); fields added since take the value that meant
    the behaviour before they existed (`LEGACY_VALUES`, else the default) and fields since removed are dropped."""
    names = {f.name for f in dataclasses.fields(Recipe)}
    values = {**{k: v for k, v in LEGACY_VALUES.items() if k not in saved},
              **{k: v for k, v in saved.items() if k in names}}
    if not values.get("finetune"):  # without finetune= the eval-mode flag changed nothing (its old default was False)
        values.pop("finetune_eval_mode", None)
    if "opt_betas" in values:
        values["opt_betas"] = tuple(values["opt_betas"])
    return Recipe(**values)


def recipe_diff(saved: dict[str, Any], recipe: Recipe, ignore: frozenset[str] | set[str] = EXECUTION_FIELDS
                ) -> dict[str, tuple[Any, Any]]:
    """{field: (saved value, asked value)} for every recipe value that differs, `ignore`d fields aside. `saved` is a
    stored config dict; a field it lacks is compared at its default."""
    def norm(d: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(d, sort_keys=True, default=str))

    old, new = norm(recipe_from_dict(saved).to_dict()), norm(recipe.to_dict())
    # precision 'auto' asks for no particular precision: any the run used matches (the manifest records which)
    return {k: (old[k], new[k]) for k in new if k not in ignore and old.get(k) != new[k]
            and not (k == "precision" and new[k] == "auto")}


def describe_diff(diff: dict[str, tuple[Any, Any]]) -> str:
    """'epochs 5 -> 300, lr 0.001 -> 0.0005' for a `recipe_diff`."""
    return ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
