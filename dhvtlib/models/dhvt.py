"""The DHVT model as the official code builds and initialises it, its registered variants and the DeiT baselines.

One class builds every row of the paper: DHVT is the defaults, DeiT is the defaults with `DEIT_ARGS`, and each
ablation flips one argument (see `ablations.py`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from timm.layers import register_notrace_function, trunc_normal_
from timm.models import checkpoint, checkpoint_seq
from timm.models._features import feature_take_indices
from torch import nn

from .args import GLOBAL_POOLS, check_args, check_global_pool
from .layers import DAFF, SOPE, Attention, Block, LinearPatchEmbed, Mlp
from .registry import build_registered, make_default_cfgs, register_variants
from .utils import check_io_args, init_arg_names

__all__ = ["DHVT", "DEIT_ARGS", "VARIANTS", "VariantCfg", "create_dhvt", "list_dhvt_models", "IMAGENET_MEAN",
           "IMAGENET_STD", "GLOBAL_POOLS", "default_cfgs"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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
    global_pool 'token' (official: the class token) | 'avg' (mean of the patch tokens) | '' (no pooling: the head
    sees every token), as timm's ViT.

    timm's interface: `forward_intermediates` / `features_only=True` give per-block feature maps. An intermediate
    of DHVT is a block's output patch tokens (the class token dropped; the head tokens never leave the attention),
    before the final norm unless norm=True, as [B, C, S/P, S/P] maps ('NCHW') or [B, N_p, C] tokens ('NLC');
    `feature_info` has one entry per block (reduction = patch_size). `set_grad_checkpointing` recomputes each block
    in the backward pass (a BatchNorm in DAFF then updates its running statistics twice per training step, as in
    timm's CNNs).
    """

    def __init__(self, img_size: int = 32, patch_size: int = 4, in_chans: int = 3, num_classes: int = 100,
                 embed_dim: int = 192, depth: int = 12, num_heads: int = 4, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, embed_layer: str = "sope", pos_embed: bool = False,
                 head_tokens: bool = True, mlp_layer: str = "daff", sope_norm: str = "bn", sope_affine: bool = True,
                 sope_last_act: bool | None = None, sope_conv_bias: bool = False, daff_norm: str = "bn",
                 daff_token_mixer: str = "dwconv", daff_dw_shortcut: bool = True, daff_se: str = "cls",
                 ht_norm: bool = True, daff_conv_init: str = "default", attn_impl: str = "auto",
                 daff_layout: str = "auto", global_pool: str = "token"):
        super().__init__()
        args = locals()
        self.config = {name: args[name] for name in init_arg_names(DHVT)}  # the arguments, saved with the weights
        check_args(**self.config)
        self.variant: str | None = None  # the registered name (create_model and the checkpoint loaders set it)
        self.pretrained_cfg: dict[str, Any] = {}  # timm's data cfg of a registered variant (create_model sets it)
        self.data_config: dict[str, Any] | None = None  # what evaluation needs, set by training (train.py)
        self.bn_fused = False  # True on fuse_batchnorm's eval-only copy
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]
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
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, S, S] -> tokens [B, N, C] entering block 0 (class token first)."""
        c = self.config
        x = self.patch_embed(checked_input(x, c["in_chans"], c["patch_size"], c["img_size"], c["pos_embed"]))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = self.pos_drop(x + self.pos_embed)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, S, S] -> normalised tokens [B, N, C] (class token first)."""
        x = self._embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None,
                              return_prefix_tokens: bool = False, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False
                              ) -> list[Any] | tuple[torch.Tensor, list[Any]]:
        """timm's feature extraction: the outputs of the blocks in `indices` (None: all, n: the last n, a list:
        those, negative from the end) as patch-token maps [B, C, S/P, S/P] ('NCHW') or [B, N_p, C] ('NLC'),
        final-normed with norm=True; with return_prefix_tokens each is (map, class token [B, 1, C]). Returns
        (forward_features(x), intermediates), or the intermediates alone with intermediates_only."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; use 'NCHW' (maps) or 'NLC' (tokens).")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        B, height, width = x.shape[0], x.shape[-2], x.shape[-1]
        x = self._embed(x)  # checks the input
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, blk in enumerate(blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x)
            else:
                x = blk(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        prefix = [y[:, :self.num_prefix_tokens] for y in intermediates]
        intermediates = [y[:, self.num_prefix_tokens:] for y in intermediates]
        if output_fmt == "NCHW":
            p = self.config["patch_size"]
            intermediates = [y.reshape(B, height // p, width // p, -1).permute(0, 3, 1, 2).contiguous()
                             for y in intermediates]
        if return_prefix_tokens:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last of `indices` (and the final norm / the head): what features_only keeps.
        Returns the absolute indices."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    # ---- utilities ----
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups (layer-wise lr decay): the embedding, then one group per block, the norm last."""
        return dict(stem=r"^cls_token|pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head by a fresh trunc_normal-initialised one (fine-tuning); 0 removes it (the forward then
        gives the pooled features). global_pool, if given, is one of GLOBAL_POOLS."""
        check_io_args(self.config["in_chans"], num_classes)
        if global_pool is not None:
            check_global_pool(global_pool)
            self.global_pool = self.config["global_pool"] = global_pool
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


@register_notrace_function  # a leaf of timm's fx tracing (and torch.fx.wrap below for torch.fx's)
def checked_input(x: torch.Tensor, in_chans: int, patch_size: int, img_size: int, pos_embed: bool) -> torch.Tensor:
    """x itself, or one sentence if its shape does not fit the model. A leaf of fx tracing: a traced model keeps
    the check and runs it on real tensors."""
    if x.ndim != 4 or x.shape[1] != in_chans or x.shape[2] != x.shape[3] or x.shape[2] % patch_size:
        raise ValueError(f"input of shape {tuple(x.shape)} does not fit this model; it takes [B, {in_chans}, S, S] "
                         f"images with S divisible by patch_size {patch_size} (built for S={img_size}).")
    if pos_embed and x.shape[2] != img_size:
        raise ValueError(f"image side {x.shape[2]} differs from img_size {img_size}, which the absolute position "
                         f"embedding fixes; resize the images to {img_size}.")
    return x


torch.fx.wrap("checked_input")


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


def list_dhvt_models() -> list[str]:
    """The DHVT/DeiT variants (every family: `dhvtlib.models.list_models`)."""
    return list(VARIANTS)


def _pool_size(kwargs: dict[str, Any]) -> tuple[int, int]:
    side = kwargs["img_size"] // kwargs["patch_size"]
    return side, side


def _fixed_input_size(kwargs: dict[str, Any]) -> bool:
    return bool(kwargs.get("pos_embed", False))  # the absolute position embedding fixes the image side


def _first_conv(kwargs: dict[str, Any]) -> str:
    return "patch_embed.proj.0.0" if kwargs.get("embed_layer", "sope") == "sope" else "patch_embed.proj"


_CFG_ARGS = dict(pool_size=_pool_size, first_conv=_first_conv, classifier="head",
                 fixed_input_size=_fixed_input_size)
# timm's pretrained-cfg registry entries (data config only: no weights exist); read by register_model
default_cfgs = make_default_cfgs(VARIANTS, **_CFG_ARGS)


def create_dhvt(name: str, **overrides: Any) -> DHVT:
    """Build a registered DHVT/DeiT variant (any family: `dhvtlib.models.create_model`); any DHVT argument can be
    overridden (num_classes, in_chans, img_size, an ablation flag, drop_path_rate, ...), and timm's features_only
    (the last 3 blocks' maps by default), out_indices, feature_cls and pretrained_cfg_overlay are accepted."""
    return build_registered(DHVT, VARIANTS, name, overrides, feature_cfg=dict(feature_cls="getter", out_indices=3),
                            **_CFG_ARGS)


register_variants(VARIANTS, create_dhvt, __name__)
