"""Model utilities: the optimiser's weight-decay groups, SOPE's BatchNorm under DDP, BatchNorm folding for
inference, and the argument checks that DHVT and the CNN share."""
from __future__ import annotations

import copy
import inspect
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .layers import DAFF, SOPE, ConvNorm
from .norms import AllReduceSyncBatchNorm2d

__all__ = ["convert_sope_sync_batchnorm", "fuse_batchnorm", "param_groups_weight_decay"]


def param_groups_weight_decay(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as timm 0.4.12 `add_weight_decay` (the official code's optimiser): no decay for 1-D tensors,
    '.bias' names and exact names in model.no_weight_decay(); decay for the rest (E_head and the SOPE affines
    included)."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or name in skip else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def convert_sope_sync_batchnorm(model: nn.Module, native: bool = True) -> nn.Module:
    """Under DDP, make SOPE's BatchNorm2d layers synchronised, as the official model (DAFF keeps per-device BN):
    torch's SyncBatchNorm (`native`, CUDA only) or AllReduceSyncBatchNorm2d (any backend, e.g. gloo on CPU).
    The state_dict layout is unchanged."""
    if not isinstance(getattr(model, "patch_embed", None), SOPE):  # a CNN keeps its per-device BN
        return model
    if native:
        model.patch_embed = nn.SyncBatchNorm.convert_sync_batchnorm(model.patch_embed)
        return model
    for stage in model.patch_embed.proj:
        if isinstance(stage, ConvNorm) and type(stage[1]) is nn.BatchNorm2d:
            bn = stage[1]
            sync = AllReduceSyncBatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                                            device=bn.running_mean.device, dtype=bn.running_mean.dtype)
            sync.load_state_dict(bn.state_dict())
            stage[1] = sync
    return model


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of `model` with every BatchNorm folded into the conv before it (SOPE stages, DAFF
    conv1/conv2/conv3), using the running statistics: the same logits in eval mode (to float rounding) with three
    fewer passes over DAFF's hidden tensor per block. The copy is eval-only (its state_dict has no BN keys);
    train and save the original."""
    fused = copy.deepcopy(model).eval()
    pairs = [(m, "0", "1") for m in fused.modules() if isinstance(m, ConvNorm)]
    pairs += [(m, f"conv{i}", f"bn{i}") for m in fused.modules() if isinstance(m, DAFF) for i in (1, 2, 3)]
    for parent, conv_name, bn_name in pairs:
        conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, _BatchNorm):
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(parent, bn_name, nn.Identity())
    fused.bn_fused = True
    return fused


def init_arg_names(cls: type) -> list[str]:
    """The arguments `cls(...)` takes, in signature order."""
    return list(inspect.signature(cls.__init__).parameters)[1:]


def require_int(name: str, value: Any, minimum: int = 1, hint: str = "") -> None:
    """One sentence unless `value` is an int of at least `minimum` (1: positive, 0: non-negative)."""
    if not isinstance(value, int) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} {value!r} must be a {kind} integer{hint}.")


def check_io_args(in_chans: Any, num_classes: Any) -> None:
    """The input channels and class count every model takes."""
    require_int("in_chans", in_chans, hint=" (3 for RGB, 1 for grey images)")
    require_int("num_classes", num_classes, minimum=0, hint=" (0 removes the head)")
