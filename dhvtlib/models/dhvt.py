"""The DHVT model as the official code builds and initialises it, its registered variants and the DeiT baselines.

One class builds every row of the paper: DHVT is the defaults, DeiT is the defaults with `DEIT_ARGS`, and each
ablation flips one argument (see `ablations.py`).
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from timm.layers import trunc_normal_
from timm.models import register_model
from torch import nn

from .layers import (DAFF, NORMS_2D, SOPE, Attention, Block, LinearPatchEmbed, Mlp, check_num_heads,
                     check_sope_patch_size)
from .utils import check_io_args, init_arg_names, require_int

__all__ = ["DHVT", "DEIT_ARGS", "VARIANTS", "VariantCfg", "create_model", "list_models", "IMAGENET_MEAN",
           "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

EMBED_LAYERS = ("sope", "linear")
MLP_LAYERS = ("daff", "mlp")
# DeiT (timm's ViT layout): linear patch embedding, absolute position embedding, no head tokens, ViT's MLP
DEIT_ARGS = dict(embed_layer="linear", pos_embed=True, head_tokens=False, mlp_layer="mlp")


class DHVT(nn.Module):
    """Dynamic Hybrid Vision Transformer (official `VisionTransformer(apply_dhvt=True)`).

    image [B, in_chans, S, S] -> patch embed [B, N_p, C] -> cat class token [B, N, C] (+ pos_embed if enabled)
    -> depth x Block -> LayerNorm -> token 0 -> head [B, num_classes].

    Architecture arguments (defaults = the official DHVT):
      embed_layer  'sope' | 'linear'          SOPE (Table 5) vs ViT's linear patch embedding
      pos_embed    bool                       absolute position embedding [1, N, C] (off in DHVT)
      head_tokens  bool                       HI-MHSA head tokens (Table 6)
      mlp_layer    'daff' | 'mlp'             DAFF vs ViT's MLP (Table 5)
      sope_norm, daff_norm  'bn' | 'ln'       Table 11 (daff_norm 'none': Table 8's BN-free forms)
      sope_affine  bool                       appendix B.2.2
      sope_last_act  None | bool              None = official (GELU after the last stage only for P=2)
      sope_conv_bias bool                     the appendix pseudo-code's biased convs (official: False)
      daff_token_mixer 'dwconv'|'avgpool'|'none', daff_dw_shortcut bool, daff_se 'cls'|'all'|'none'  Tables 8-9
      ht_norm      bool                       group-wise LayerNorm in head tokens (paper Eq. 6 has none)
      daff_conv_init 'default' | 'trunc_normal'  DAFF's 1x1 convs (conv1, conv3): PyTorch's default init, as the
                                          official code, or ViT's Linear init, trunc_normal(0.02) and
                                          zero bias (Table 8's FFN forms, whose 1x1 convs stand for fc1/fc2)
    Kernel choices (the same maths, see layers.py): attn_impl 'auto'|'sdpa'|'explicit', daff_layout
    'auto'|'channels_last'|'nchw'; 'auto' picks the fastest for the device and precision.
    """

    def __init__(self, img_size: int = 32, patch_size: int = 4, in_chans: int = 3, num_classes: int = 100,
                 embed_dim: int = 192, depth: int = 12, num_heads: int = 4, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, embed_layer: str = "sope", pos_embed: bool = False,
                 head_tokens: bool = True, mlp_layer: str = "daff", sope_norm: str = "bn", sope_affine: bool = True,
                 sope_last_act: bool | None = None, sope_conv_bias: bool = False, daff_norm: str = "bn",
                 daff_token_mixer: str = "dwconv", daff_dw_shortcut: bool = True, daff_se: str = "cls",
                 ht_norm: bool = True, daff_conv_init: str = "default", attn_impl: str = "auto",
                 daff_layout: str = "auto"):
        super().__init__()
        args = locals()
        self.config = {name: args[name] for name in init_arg_names(DHVT)}  # the arguments, saved with the weights
        _check_args(**self.config)
        self.variant: str | None = None  # the registered name (create_model and the checkpoint loaders set it)
        self.pretrained_cfg: dict[str, Any] = {}  # timm's data cfg of a registered variant (create_model sets it)
        self.data_config: dict[str, Any] | None = None  # what evaluation needs, set by training (train.py)
        self.bn_fused = False  # True on fuse_batchnorm's eval-only copy
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        if embed_layer == "sope":
            self.patch_embed = SOPE(img_size, patch_size, in_chans, embed_dim, norm=sope_norm, affine=sope_affine,
                                    last_act=sope_last_act, conv_bias=sope_conv_bias)
        else:
            self.patch_embed = LinearPatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim)) if pos_embed else None
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # rises linearly, 0 in block 0
        hidden = int(embed_dim * mlp_ratio)
        blocks = []
        for i in range(depth):
            attn = Attention(embed_dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop_rate, proj_drop=drop_rate,
                             head_tokens=head_tokens, ht_norm=ht_norm, impl=attn_impl)
            if mlp_layer == "daff":
                mlp = DAFF(embed_dim, hidden, norm=daff_norm, token_mixer=daff_token_mixer,
                           dw_shortcut=daff_dw_shortcut, se=daff_se, layout=daff_layout)
            else:
                mlp = Mlp(embed_dim, hidden, drop=drop_rate)
            blocks.append(Block(embed_dim, attn, mlp, drop_path=dpr[i]))
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    # ---- training mode, initialisation and weight-decay names (as the official code) ----
    def train(self, mode: bool = True) -> DHVT:
        if mode and self.bn_fused:
            raise ValueError("this model's BatchNorms are folded into its convs for inference (fuse_batchnorm); "
                             "train the original, unfused model instead.")
        return super().train(mode)

    def init_weights(self) -> None:
        """trunc_normal(0.02) for every Linear (head included), cls_token, pos_embed and each E_head; zero Linear
        biases; norms at 1/0; Conv2d at PyTorch's default (as the official `_init_vit_weights`), except DAFF's 1x1
        convs with daff_conv_init='trunc_normal' (Table 8's FFN forms): initialised as the Linears they replace,
        so that those rows differ from ViT in the named operation only, not in the initialisation."""
        trunc_normal_(self.cls_token, std=0.02)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, Attention) and m.head_tokens:
                trunc_normal_(m.pos_embed, std=0.02)
            elif isinstance(m, DAFF) and self.config["daff_conv_init"] == "trunc_normal":
                for conv in (m.conv1, m.conv3):
                    trunc_normal_(conv.weight, std=0.02)
                    nn.init.zeros_(conv.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Exact names excluded from weight decay (the official set; whole names, so only top-level ones match)."""
        return {"pos_embed", "cls_token", "dist_token"}

    # ---- forward ----
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, S, S] -> normalised tokens [B, N, C] (class token first)."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = self.pos_drop(x + self.pos_embed)
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config)
        return self.forward_head(self.forward_features(x))

    # ---- utilities ----
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a fresh trunc_normal-initialised one (fine-tuning)."""
        self.num_classes = self.config["num_classes"] = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    @contextlib.contextmanager
    def keep_attention(self) -> Iterator[list[torch.Tensor]]:
        """Within the block, every attention module uses the explicit (unfused) path and the yielded list is
        filled, after a forward pass, with one [B, h, N(+h), N(+h)] softmax map per block (head tokens last)."""
        attns = [blk.attn for blk in self.blocks]
        maps: list[torch.Tensor] = []
        for a in attns:
            a.keep_attn, a.attn_map = True, None
        try:
            yield maps
        finally:
            maps.extend(a.attn_map for a in attns if a.attn_map is not None)
            for a in attns:
                a.keep_attn, a.attn_map = False, None

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Attention maps of every block for images x: a list of depth tensors [B, h, N+h, N+h]."""
        with self.keep_attention() as maps:
            self(x)
        return maps


def _check_args(*, img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads, embed_layer,
                mlp_layer, sope_norm, daff_norm, daff_conv_init, **_) -> None:
    if daff_conv_init not in ("default", "trunc_normal"):
        raise ValueError(f"daff_conv_init {daff_conv_init!r} is not supported; use 'default' (official) or "
                         "'trunc_normal'.")
    if embed_layer not in EMBED_LAYERS:
        raise ValueError(f"embed_layer {embed_layer!r} is not supported; use one of {EMBED_LAYERS}.")
    if mlp_layer not in MLP_LAYERS:
        raise ValueError(f"mlp_layer {mlp_layer!r} is not supported; use one of {MLP_LAYERS}.")
    if sope_norm not in ("bn", "ln"):
        raise ValueError(f"sope_norm {sope_norm!r} is not supported; use 'bn' (official) or 'ln'.")
    if daff_norm not in NORMS_2D:
        raise ValueError(f"daff_norm {daff_norm!r} is not supported; use 'bn' (official), 'ln' or 'none'.")
    if embed_layer == "sope":
        check_sope_patch_size(patch_size)
    require_int("patch_size", patch_size)
    if not isinstance(img_size, int) or img_size < patch_size or img_size % patch_size:
        example = max(patch_size, 32 // patch_size * patch_size)
        raise ValueError(f"img_size {img_size!r} is not a multiple of patch_size {patch_size}; use a square image "
                         f"whose side is divisible by the patch size (e.g. {example}).")
    check_io_args(in_chans, num_classes)
    require_int("depth", depth)
    check_num_heads(embed_dim, num_heads)
    if mlp_layer == "daff" and embed_dim % 4:
        raise ValueError(f"embed_dim {embed_dim} must be divisible by 4 for DAFF's squeeze-excitation (ratio 4).")


def _check_input(x: torch.Tensor, cfg: dict[str, Any]) -> None:
    if x.ndim != 4 or x.shape[1] != cfg["in_chans"] or x.shape[2] != x.shape[3] or x.shape[2] % cfg["patch_size"]:
        raise ValueError(f"input of shape {tuple(x.shape)} does not fit this model; it takes [B, {cfg['in_chans']}, "
                         f"S, S] images with S divisible by patch_size {cfg['patch_size']} (built for S="
                         f"{cfg['img_size']}).")
    if cfg["pos_embed"] and x.shape[2] != cfg["img_size"]:
        raise ValueError(f"image side {x.shape[2]} differs from img_size {cfg['img_size']}, which the absolute "
                         f"position embedding fixes; resize the images to {cfg['img_size']}.")


# ---------------------------------------------------------------------------------------------------------------
# Variants: architecture kwargs separate from the data cfg (input size, mean/std, class count) per variant.

@dataclass(frozen=True)
class VariantCfg:
    """A registered variant: its architecture arguments (`arch`) and its data cfg. The paper's size and GFLOPs
    for it are in dhvtlib/paper/reported.csv; `official_params` is the official code's parameter count."""
    arch: dict[str, Any]
    dataset: str
    input_size: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...] = IMAGENET_MEAN  # the official code normalises CIFAR with ImageNet statistics too
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    official_params: int | None = None
    notes: str = ""


def _dhvt(dim, heads, patch, img):
    return dict(img_size=img, patch_size=patch, embed_dim=dim, depth=12, num_heads=heads, mlp_ratio=4.0)


def _deit(dim, heads, patch, img):
    return dict(_dhvt(dim, heads, patch, img), **DEIT_ARGS)


_CIFAR = dict(dataset="cifar100", input_size=(3, 32, 32), num_classes=100, crop_pct=1.0)
_DOMAIN = dict(dataset="domainnet", input_size=(3, 224, 224), num_classes=345)
_IMAGENET = dict(dataset="imagenet", input_size=(3, 224, 224), num_classes=1000)
# The DeiT baselines of Table 4 (the paper's re-implementation at 32 px) in timm's ViT layout; the paper does not
# say how many heads its DeiT-S has.
DEIT_S_HEADS = ("8 heads as DHVT-S on CIFAR (a choice: standard DeiT-S has 6, same parameter count); "
                "num_heads=6 gives the standard DeiT-S")

VARIANTS: dict[str, VariantCfg] = {
    "dhvt_tiny_cifar_patch4": VariantCfg(_dhvt(192, 4, 4, 32), **_CIFAR, official_params=6008650),
    "dhvt_tiny_cifar_patch2": VariantCfg(_dhvt(192, 4, 2, 32), **_CIFAR, official_params=5845162),
    "dhvt_small_cifar_patch4": VariantCfg(_dhvt(384, 8, 4, 32), **_CIFAR, official_params=23425450),
    "dhvt_small_cifar_patch2": VariantCfg(_dhvt(384, 8, 2, 32), **_CIFAR, official_params=22766698),
    "dhvt_tiny_domain_patch16": VariantCfg(_dhvt(192, 4, 16, 224), **_DOMAIN, official_params=6105975),
    "dhvt_small_domain_patch16": VariantCfg(_dhvt(384, 6, 16, 224), **_DOMAIN, official_params=23788431),
    "dhvt_tiny_imagenet_patch16": VariantCfg(_dhvt(192, 3, 16, 224), **_IMAGENET, official_params=6267334),
    "dhvt_small_imagenet_patch16": VariantCfg(_dhvt(384, 6, 16, 224), **_IMAGENET, official_params=24040606,
                                              notes="Table 3 prints 24.0M"),
    "deit_tiny_cifar_patch4": VariantCfg(_deit(192, 4, 4, 32), **_CIFAR),
    "deit_tiny_cifar_patch2": VariantCfg(_deit(192, 4, 2, 32), **_CIFAR),
    "deit_small_cifar_patch4": VariantCfg(_deit(384, 8, 4, 32), **_CIFAR, notes=DEIT_S_HEADS),
    "deit_small_cifar_patch2": VariantCfg(_deit(384, 8, 2, 32), **_CIFAR, notes=DEIT_S_HEADS),
}


def list_models() -> list[str]:
    return list(VARIANTS)


def create_model(name: str, **overrides: Any) -> DHVT:
    """Build a registered variant; any DHVT argument can be overridden (num_classes, in_chans, img_size, an
    ablation flag, drop_path_rate, ...)."""
    return build_registered(DHVT, VARIANTS, name, overrides, first_conv="patch_embed.proj", classifier="head")


def build_registered(cls: type, registry: dict[str, Any], name: str, overrides: dict[str, Any], *,
                     first_conv: str, classifier: str) -> nn.Module:
    """`cls(**registry[name].arch, num_classes=..., **overrides)` with unknown names and arguments refused in one
    sentence, tagged with `variant` and a timm-style `pretrained_cfg` (input size, mean/std, crop, the variant's
    notes)."""
    if name not in registry:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(registry)}.")
    cfg = registry[name]
    kwargs = dict(cfg.arch, num_classes=cfg.num_classes)
    unknown = set(overrides) - set(init_arg_names(cls))
    if unknown:
        raise ValueError(f"unknown argument(s) {sorted(unknown)} for {name}; see help(dhvtlib.models."
                         f"{cls.__name__}) for the accepted ones.")
    kwargs.update(overrides)
    model = cls(**kwargs)
    model.variant = name
    model.pretrained_cfg = dict(architecture=name, input_size=(kwargs.get("in_chans", 3), kwargs["img_size"],
                                                               kwargs["img_size"]),
                                mean=cfg.mean, std=cfg.std, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation,
                                num_classes=kwargs["num_classes"], first_conv=first_conv, classifier=classifier,
                                notes=(cfg.notes,) if cfg.notes else ())  # as timm's PretrainedCfg.notes
    return model


def register_variants(names: Iterable[str], build: Callable[..., nn.Module], module: str) -> None:
    """Register each name with timm, as `@register_model def <name>(pretrained=False, **kwargs)` in `module`
    would: `timm.create_model(name, **kwargs)` is `build(name, **kwargs)` (no pretrained weights exist)."""
    for name in names:
        entrypoint = _entrypoint(name, build, module)
        setattr(sys.modules[module], name, entrypoint)  # register_model lists it in the module's __all__
        register_model(entrypoint)


def _entrypoint(name: str, build: Callable[..., nn.Module], module: str) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(f"no pretrained weights exist for {name} (the authors released none); use "
                             f"pretrained=False and load a checkpoint with dhvtlib.checkpoint.")
        for k in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's own arguments
            kwargs.pop(k, None)
        return build(name, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = module
    return entrypoint


register_variants(VARIANTS, create_model, __name__)
