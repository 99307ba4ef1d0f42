"""Models: DHVT's layers, the model and its variants, the CNN baselines (all registered in timm), ablation rows,
profiling. `create_model(name, ...)` builds any registered name, DHVT/DeiT variant or CNN."""
from typing import Any

from torch import nn

from .cnn import CNN, CNN_VARIANTS, create_cnn, matched_width
from .dhvt import DHVT, IMAGENET_MEAN, IMAGENET_STD, VARIANTS, VariantCfg, create_dhvt
from .layers import DAFF, SOPE, Affine, Attention, Block, LinearPatchEmbed, Mlp
from .norms import AllReduceSyncBatchNorm2d, SplitBatchNorm2d
from .utils import convert_sope_sync_batchnorm, fuse_batchnorm, param_groups_weight_decay

__all__ = ["DHVT", "CNN", "VARIANTS", "CNN_VARIANTS", "VariantCfg", "convert_sope_sync_batchnorm", "create_model",
           "family", "fuse_batchnorm", "list_models", "matched_width", "param_groups_weight_decay",
           "IMAGENET_MEAN", "IMAGENET_STD", "SOPE", "Affine", "Attention", "DAFF", "Block", "LinearPatchEmbed", "Mlp",
           "SplitBatchNorm2d", "AllReduceSyncBatchNorm2d"]


def list_models() -> list[str]:
    """Every registered name: the DHVT/DeiT variants (VARIANTS), then the CNN baselines (CNN_VARIANTS)."""
    return [*VARIANTS, *CNN_VARIANTS]


def family(name: str) -> type[nn.Module]:
    """The class a registered name builds (DHVT or CNN)."""
    if name in VARIANTS:
        return DHVT
    if name in CNN_VARIANTS:
        return CNN
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}.")


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build any registered model by name; its own arguments may be overridden (img_size, in_chans, num_classes,
    drop_path_rate, drop_rate, and the architecture's: see help(dhvtlib.DHVT) or help(dhvtlib.models.CNN))."""
    return create_dhvt(name, **overrides) if family(name) is DHVT else create_cnn(name, **overrides)
