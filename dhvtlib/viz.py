"""Attention maps and attributions of a DHVT, for the head-token figure notebook.

Attention comes from `DHVT.attention_maps` (per block [B, h, N+h, N+h]: class token at 0, patch tokens 1..N-1,
the h head tokens last). Attributions use captum: integrated gradients on pixels, occlusion with patch-aligned
windows, and layer integrated gradients on the patch embedding (one value per patch token). Every function runs the
model in eval mode (BatchNorm with running statistics) and restores each module's mode afterwards.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["head_token_attention", "class_token_attention", "overlay", "plot_head_tokens", "plot_class_attention",
           "attributions", "plot_attributions", "ATTRIBUTION_METHODS"]

ATTRIBUTION_METHODS = ("integrated_gradients", "occlusion", "layer_integrated_gradients")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


def _batch(images: torch.Tensor) -> torch.Tensor:
    return images.unsqueeze(0) if images.ndim == 3 else images


def _attention(model: nn.Module, images: torch.Tensor, layer: int) -> tuple[torch.Tensor, int, int]:
    """Block `layer`'s map [B, heads, T, T], the number of tokens N (class + patches) and the grid side."""
    with _eval_mode(model):
        attn = model.attention_maps(_batch(images))[layer]
    n = attn.shape[-1] - (model.config["num_heads"] if model.config["head_tokens"] else 0)
    side = math.isqrt(n - 1)
    if side * side != n - 1:
        raise ValueError(f"{n - 1} patch tokens do not form a square grid.")
    return attn, n, side


def head_token_attention(model: nn.Module, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """Attention of each head token (query) over the patch tokens (keys) in block `layer`:
    [B, head_tokens, heads, Hp, Wp]. Rows are softmax rows restricted to the patches, so each sums to <= 1."""
    if not model.config.get("head_tokens"):
        raise ValueError("this model has no head tokens (config['head_tokens'] is False); use "
                         "class_token_attention, or a DHVT built with head_tokens=True.")
    attn, n, side = _attention(model, images, layer)
    rows = attn[:, :, n:, 1:n]  # [B, heads, head tokens, patches]
    return rows.transpose(1, 2).reshape(*rows.shape[:1], rows.shape[2], rows.shape[1], side, side)


def class_token_attention(model: nn.Module, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """Attention of the class token over the patch tokens in block `layer`: [B, heads, Hp, Wp]."""
    attn, n, side = _attention(model, images, layer)
    return attn[:, :, 0, 1:n].reshape(attn.shape[0], attn.shape[1], side, side)


def _to_rgb(image: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """[C, H, W] (normalised if mean/std given) -> [H, W, 3] floats in [0, 1]; 1-channel images become grey."""
    img = image.detach().float().cpu()
    if mean is not None and std is not None:
        img = img * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    img = img.clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return img.permute(1, 2, 0).numpy()


def overlay(image: torch.Tensor, heat: torch.Tensor, mean: Sequence[float] | None = None,
            std: Sequence[float] | None = None, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """`heat` [h, w] upsampled (bilinear) to the image, min-max normalised, coloured by `cmap` and blended over
    `image` [C, H, W] (de-normalised with mean/std when given): an RGB array [H, W, 3] in [0, 1]."""
    from matplotlib import colormaps

    rgb = _to_rgb(_batch(image)[0], mean, std)
    h = F.interpolate(heat.detach().float().cpu()[None, None], size=rgb.shape[:2], mode="bilinear",
                      align_corners=False)[0, 0]
    h = (h - h.min()) / (h.max() - h.min()) if h.max() > h.min() else torch.zeros_like(h)
    return (1 - alpha) * rgb + alpha * colormaps[cmap](h.numpy())[..., :3]


def _panels(image: torch.Tensor, heats: Sequence[torch.Tensor], titles: Sequence[str], mean, std, suptitle: str):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(heats) + 1, figsize=(2.2 * (len(heats) + 1), 2.6), squeeze=False)
    axes[0, 0].imshow(_to_rgb(image, mean, std))
    axes[0, 0].set_title("image", fontsize="small")
    for ax, heat, title in zip(axes[0, 1:], heats, titles):
        ax.imshow(overlay(image, heat, mean, std))
        ax.set_title(title, fontsize="small")
    for ax in axes[0]:
        ax.set_axis_off()
    fig.suptitle(suptitle, fontsize="medium")
    return fig


def plot_head_tokens(model: nn.Module, image: torch.Tensor, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None, layer: int = -1):
    """The image, then one panel per head token: its attention over the patches (mean over heads), overlaid."""
    image = _batch(image)[:1]
    maps = head_token_attention(model, image, layer)[0].mean(dim=1)  # [head tokens, Hp, Wp]
    return _panels(image[0], list(maps), [f"head token {i}" for i in range(len(maps))], mean, std,
                   f"head-token attention over patches, block {layer}")


def plot_class_attention(model: nn.Module, image: torch.Tensor, mean: Sequence[float] | None = None,
                         std: Sequence[float] | None = None, layer: int = -1):
    """The image, the class token's attention averaged over heads, then per head."""
    image = _batch(image)[:1]
    maps = class_token_attention(model, image, layer)[0]  # [heads, Hp, Wp]
    return _panels(image[0], [maps.mean(dim=0), *maps], ["mean over heads", *(f"head {i}" for i in range(len(maps)))],
                   mean, std, f"class-token attention over patches, block {layer}")


def attributions(model: nn.Module, images: torch.Tensor, target: int | torch.Tensor,
                 method: str = "integrated_gradients", n_steps: int = 16) -> torch.Tensor:
    """Attributions for class `target` (an int or one per image):
    - 'integrated_gradients': pixels, baseline zeros in normalised space, `n_steps` steps -> [B, C, H, W];
    - 'occlusion': windows of patch x patch pixels over all channels, stride = patch (aligned with the patch
      tokens), zero baseline, 16 windows per forward pass -> [B, C, H, W] (constant within each patch);
    - 'layer_integrated_gradients': on `model.patch_embed`, summed over the embedding -> [B, Hp, Wp]."""
    from captum.attr import IntegratedGradients, LayerIntegratedGradients, Occlusion

    images = _batch(images)
    baseline = torch.zeros_like(images)
    with _eval_mode(model):
        if method == "integrated_gradients":
            return IntegratedGradients(model).attribute(images, baselines=baseline, target=target, n_steps=n_steps)
        if method == "occlusion":
            p, c = model.config["patch_size"], images.shape[1]
            return Occlusion(model).attribute(images, sliding_window_shapes=(c, p, p), strides=(c, p, p),
                                              baselines=0.0, target=target, perturbations_per_eval=16)
        if method == "layer_integrated_gradients":
            attr = LayerIntegratedGradients(model, model.patch_embed).attribute(
                images, baselines=baseline, target=target, n_steps=n_steps).sum(dim=-1)  # [B, N_p]
            side = math.isqrt(attr.shape[1])
            return attr.reshape(attr.shape[0], side, side)
    raise ValueError(f"unknown attribution method {method!r}; choose one of {', '.join(ATTRIBUTION_METHODS)}.")


def plot_attributions(model: nn.Module, image: torch.Tensor, target: int, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None, methods: Sequence[str] = ATTRIBUTION_METHODS,
                      n_steps: int = 16):
    """The image, then one panel per method: |attribution| (summed over channels) overlaid."""
    image = _batch(image)[:1]
    heats = []
    for method in methods:
        attr = attributions(model, image, target, method, n_steps)[0].detach()
        heats.append(attr.abs().sum(dim=0) if attr.ndim == 3 else attr.abs())
    return _panels(image[0], heats, [m.replace("_", " ") for m in methods], mean, std,
                   f"attributions for class {target}")
