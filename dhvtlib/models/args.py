"""DHVT's (and DeiT's) architecture arguments, checked before anything is built: one sentence per bad value."""
from __future__ import annotations

from typing import Any

from .layers import check_num_heads, check_sope_patch_size
from .norms import NORMS_2D
from .utils import check_io_args, require_int

__all__ = ["EMBED_LAYERS", "MLP_LAYERS", "GLOBAL_POOLS", "check_args", "check_global_pool"]

EMBED_LAYERS = ("sope", "linear")
MLP_LAYERS = ("daff", "mlp")
GLOBAL_POOLS = ("token", "avg", "")  # class token (official), mean of the patch tokens, none (all tokens)


def check_global_pool(global_pool: Any) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool {global_pool!r} is not supported; use 'token' (the class token, official), "
                         "'avg' (mean of the patch tokens) or '' (no pooling).")


def check_args(*, img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads, embed_layer,
                mlp_layer, sope_norm, daff_norm, daff_conv_init, global_pool, **_) -> None:
    check_global_pool(global_pool)
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
