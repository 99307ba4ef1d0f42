"""CNN baselines trained by the same engine and recipe as DHVT: timm's ResNet, in two forms.

- `resnet50_domain`: the ResNet-50 of Tables 2 and 13 (DomainNet, 224 px, 345 classes), timm's `resnet50`
  architecture (torchvision layout: 7x7 stride-2 stem, max-pool, Bottleneck blocks 3-4-6-3), from scratch.
- `resnet18_cifar`: the usual small-image ResNet-18 (BasicBlocks 2-2-2-2, a 3x3 stride-1 stem and no max-pool,
  so a 28-32 px image keeps its resolution into stage 1), with a scalable base `width` (64 = the standard
  11.2M-parameter network; `matched_width` picks the width that matches another model's parameter count).

Both are timm `ResNet`s built from timm's blocks; the only change is the stem swap for the small form. Choices:
- Weight decay: `param_groups_weight_decay` (the recipe's function) already exempts every 1-D tensor and every
  '.bias', i.e. all BatchNorm weights/biases and the classifier bias; conv and linear weights are decayed.
  No other name is exempt (`no_weight_decay()` is empty: a ResNet has no tokens or position embeddings).
- Drop path: the recipe's `drop_path` goes to timm's `drop_path_rate` (stochastic depth on each residual branch,
  rising linearly with the block index, as in DHVT); the ResNet-50 row of Tables 2/13 trains with drop_path=0,
  as torchvision's ResNet-50 (experiments.domainnet_runs). `drop_rate` is dropout before the classifier.
- Initialisation: Kaiming fan-out for convs, BN at 1/0, PyTorch's default for the classifier; `zero_init_last`
  also zero-initialises the last BN of each block (timm's default, kept for resnet18_cifar). resnet50_domain sets
  it False: torchvision's ResNet-50 default (zero_init_residual=False), which Tables 2/13 name.
- BatchNorm: every BN is a SplitBatchNorm2d, so under `virtual_gpus` each (virtual) GPU normalises its own
  images, as a plain BatchNorm on each official GPU did (dhvtlib.run.build); the state_dict is BatchNorm2d's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from timm.layers import register_notrace_function
from timm.models.resnet import BasicBlock, Bottleneck, ResNet, make_blocks
from torch import nn

from .dhvt import VariantCfg
from .norms import SplitBatchNorm2d
from .registry import build_registered, make_default_cfgs, register_variants
from .utils import check_io_args, require_int

__all__ = ["CNN", "CNN_VARIANTS", "CnnCfg", "create_cnn", "default_cfgs", "matched_width"]

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
STEMS = ("imagenet", "cifar")


class CNN(ResNet):
    """A timm ResNet with a recorded config (so runs save and reload it by name + config like DHVT).

    Arguments: img_size (the training input size, recorded for evaluation; the network itself takes any size),
    in_chans, num_classes, block 'basic' | 'bottleneck', layers (blocks per stage), width (stage-1 channels;
    stages double it), stem 'imagenet' (7x7/2 conv + 3x3/2 max-pool) | 'cifar' (3x3/1 conv, no pool),
    drop_rate (dropout before fc), drop_path_rate (stochastic depth, linear in block index), zero_init_last (the
    last BN of each block starts at 0; False: at 1, as torchvision's ResNet), global_pool (timm's: 'avg', '' for
    none, ...). timm's ResNet interface is inherited (forward_intermediates, feature_info: the stem's activation
    then each stage, set_grad_checkpointing, group_matcher).
    """

    def __init__(self, img_size: int = 32, in_chans: int = 3, num_classes: int = 100, block: str = "basic",
                 layers: tuple[int, ...] | list[int] = (2, 2, 2, 2), width: int = 64, stem: str = "cifar",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, zero_init_last: bool = True,
                 global_pool: str = "avg"):
        _check_args(img_size=img_size, in_chans=in_chans, num_classes=num_classes, block=block, layers=layers,
                    width=width, stem=stem)
        if not isinstance(zero_init_last, bool):
            raise ValueError(f"zero_init_last {zero_init_last!r} must be true or false.")
        layers = tuple(int(n) for n in layers)
        channels = tuple(width * 2 ** i for i in range(len(layers)))
        super().__init__(BLOCKS[block], layers, num_classes=num_classes, in_chans=in_chans, stem_width=width,
                         channels=channels, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                         norm_layer=SplitBatchNorm2d, zero_init_last=zero_init_last, global_pool=global_pool)
        if stem == "cifar" or width != 64:
            # timm's plain stem always has 64 channels: rebuild it at `width` (3x3 stride-1 conv and no max-pool
            # for small images, He et al. 2016 sec. 4.2) and the stages on it with timm's make_blocks.
            k, s = (3, 1) if stem == "cifar" else (7, 2)
            self.conv1 = nn.Conv2d(in_chans, width, kernel_size=k, stride=s, padding=k // 2, bias=False)
            self.bn1 = SplitBatchNorm2d(width)
            if stem == "cifar":
                self.maxpool = nn.Identity()
            stages, info = make_blocks(tuple(BLOCKS[block] for _ in layers), channels, layers, width,
                                       drop_path_rate=drop_path_rate, cardinality=1, base_width=64,
                                       norm_layer=SplitBatchNorm2d)
            for stage_name, stage in stages:
                setattr(self, stage_name, stage)
            stem_reduction = 1 if stem == "cifar" else 2
            self.feature_info = [dict(num_chs=width, reduction=stem_reduction, module="act1")] + [
                dict(f, reduction=f["reduction"] // 4 * stem_reduction) for f in info]
            self.init_weights(zero_init_last=zero_init_last)
        self.config = dict(img_size=img_size, in_chans=in_chans, num_classes=num_classes, block=block,
                           layers=list(layers), width=width, stem=stem, drop_rate=drop_rate,
                           drop_path_rate=drop_path_rate, zero_init_last=zero_init_last, global_pool=global_pool)
        self.in_chans, self.img_size = in_chans, img_size  # for the input check
        self.variant: str | None = None  # the registered name (create_cnn and the checkpoint loaders set it)
        self.pretrained_cfg: dict[str, Any] = {}  # timm's data cfg of a registered variant (create_cnn sets it)
        self.data_config: dict[str, Any] | None = None  # what evaluation needs, set by training (train.py)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """No exact names: BN and biases are exempt through the 1-D / '.bias' rule of param_groups_weight_decay."""
        return set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # a scripted copy runs without the check
            x = checked_images(x, self.in_chans, self.img_size)
        return self.forward_head(self.forward_features(x))  # ResNet.forward (TorchScript has no super())

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        super().reset_classifier(num_classes, global_pool)
        self.config["num_classes"], self.config["global_pool"] = num_classes, global_pool


@register_notrace_function  # a leaf of timm's fx tracing (and torch.fx.wrap below for torch.fx's)
def checked_images(x: torch.Tensor, in_chans: int, img_size: int) -> torch.Tensor:
    """x itself, or one sentence if it is not a batch of [in_chans, H, W] images. A leaf of fx tracing: a traced
    model keeps the check and runs it on real tensors."""
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(f"input of shape {tuple(x.shape)} does not fit this model; it takes [B, {in_chans}, H, W] "
                         f"images (built for {img_size} px).")
    return x


torch.fx.wrap("checked_images")


def _check_args(*, img_size, in_chans, num_classes, block, layers, width, stem) -> None:
    if block not in BLOCKS:
        raise ValueError(f"block {block!r} is not supported; use one of {tuple(BLOCKS)}.")
    if stem not in STEMS:
        raise ValueError(f"stem {stem!r} is not supported; use 'imagenet' (7x7/2 + max-pool) or 'cifar' (3x3/1).")
    require_int("width", width, hint=" (stage-1 channels; 64 for ResNet-18/50)")
    if (not isinstance(layers, (list, tuple)) or not layers
            or not all(isinstance(n, int) and n >= 1 for n in layers)):
        raise ValueError(f"layers {layers!r} must be a non-empty list of positive block counts, e.g. [2, 2, 2, 2].")
    require_int("img_size", img_size, hint=" (the training image side)")
    check_io_args(in_chans, num_classes)


@dataclass(frozen=True)
class CnnCfg(VariantCfg):
    """A registered CNN: a VariantCfg whose paper size comes from a row of reported.csv (table, row)."""
    paper_row: tuple[str, str] | None = None


CNN_VARIANTS: dict[str, CnnCfg] = {
    "resnet50_domain": CnnCfg(dict(img_size=224, block="bottleneck", layers=[3, 4, 6, 3], width=64, stem="imagenet",
                                   zero_init_last=False),
                              "domainnet", (3, 224, 224), 345, paper_row=("table13", "resnet50"),
                              notes="Tables 2/13: torchvision/timm ResNet-50, same augmentation as DHVT"),
    "resnet18_cifar": CnnCfg(dict(img_size=32, block="basic", layers=[2, 2, 2, 2], width=64, stem="cifar"),
                             "cifar100", (3, 32, 32), 100, crop_pct=1.0,
                             notes="small-image ResNet-18 (3x3/1 stem, no max-pool); width scales it"),
}


def _pool_size(kwargs: dict[str, Any]) -> tuple[int, int]:
    """The side of the last stage's map: each stride-2 step (7x7 conv and max-pool of the imagenet stem, the first
    block of stages 2+) takes ceil(side / 2)."""
    side = kwargs["img_size"]
    for _ in range(len(kwargs["layers"]) - 1 + (2 if kwargs["stem"] == "imagenet" else 0)):
        side = -(-side // 2)
    return side, side


_CFG_ARGS = dict(pool_size=_pool_size, first_conv="conv1", classifier="fc")
# timm's pretrained-cfg registry entries (data config only: no weights exist); read by register_model
default_cfgs = make_default_cfgs(CNN_VARIANTS, **_CFG_ARGS)


def create_cnn(name: str, **overrides: Any) -> CNN:
    """Build a registered CNN; any CNN argument can be overridden (num_classes, in_chans, img_size, width,
    global_pool, ...), and timm's features_only (the stem and every stage by default), out_indices, feature_cls and
    pretrained_cfg_overlay are accepted."""
    return build_registered(CNN, CNN_VARIANTS, name, overrides, feature_cfg={},
                            **_CFG_ARGS)


def _params(name: str, width: int, **kwargs: Any) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in create_cnn(name, width=width, **kwargs).parameters())


def matched_width(target_params: int, name: str = "resnet18_cifar", max_width: int = 128, **kwargs: Any) -> int:
    """The base width whose CNN has the parameter count closest to `target_params` (same kwargs: in_chans,
    num_classes, ...), e.g. to compare a ResNet-18 with a small DeiT/DHVT at equal size."""
    if target_params < 1:
        raise ValueError(f"target_params {target_params!r} must be a positive parameter count.")
    sizes = {}
    for w in range(1, max_width + 1):  # parameters grow with width: stop at the first one above the target
        sizes[w] = _params(name, w, **kwargs)
        if sizes[w] >= target_params:
            break
    return min(sizes, key=lambda w: (abs(math.log(sizes[w] / target_params)), w))


register_variants(CNN_VARIANTS, create_cnn, __name__)
