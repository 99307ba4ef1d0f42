"""Attention maps and attributions of a DHVT, for the head-token figure notebook.

Attention comes from `DHVT.attention_maps` (per block [B, h, N+h, N+h]: class token at 0, patch tokens 1..N-1,
the h head tokens last). Attributions use captum: integrated gradients on pixels, occlusion with patch-aligned
windows, and layer integrated gradients on the patch embedding (one value per patch token). Every function runs the
model in eval mode (BatchNorm with running statistics) and restores each module's mode afterwards.
"""
from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["head_token_attention", "class_token_attention", "overlay", "plot_head_tokens", "plot_class_attention",
           "attributions", "plot_attributions", "block_name", "image_label", "plot_explorer", "head_token_explorer",
           "check_methods", "ATTRIBUTION_METHODS"]

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


def block_name(model: nn.Module, layer: int) -> str:
    """'block 6 of 6' for layer -1 of a 6-block model (layers are indexed as Python lists, blocks counted from 1)."""
    depth = len(model.blocks)
    if not -depth <= layer < depth:
        raise ValueError(f"layer {layer} is out of range for a model with {depth} blocks.")
    return f"block {layer % depth + 1} of {depth}"


def image_label(true: int | None = None, predicted: int | None = None,
                class_names: Sequence[str] | None = None) -> str:
    """'true: Ankle boot, predicted: Sneaker' (class indices when no names are given; parts left out when None)."""
    name = (lambda c: class_names[c] if class_names is not None else str(c))
    parts = [f"{what}: {name(int(c))}" for what, c in (("true", true), ("predicted", predicted)) if c is not None]
    return ", ".join(parts)


def _tick_labels(values: Sequence[float]) -> list[str]:
    """One format for every tick of a bar, with the fewest digits that tell the values apart: fixed-point
    (0.0181, 0.0185, 0.0189) unless the values are tiny or huge, then scientific for all of them."""
    big = max(abs(v) for v in values)
    sci = big != 0 and not 1e-4 <= big < 1e4
    for digits in range(1, 10):
        labels = [f"{v:.{digits}e}" if sci else f"{v:.{digits}f}" for v in values]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def _spread(lo: float, hi: float) -> str:
    """' (nearly flat: range 4% of its mean)' when a map varies by less than 10% of its mean, else ''."""
    mid = (lo + hi) / 2
    rel = (hi - lo) / abs(mid) if mid else float("inf")
    return f"\n(nearly flat: range {100 * rel:.0f}% of its mean)" if rel < 0.1 else ""


def _panels(image: torch.Tensor, heats: Sequence[torch.Tensor], titles: Sequence[str], mean, std, suptitle: str,
            image_title: str = "image", fig=None, cmap: str = "jet"):
    """The image, then one overlay per map, each with a colour bar in the map's own units (the overlay is min-max
    normalised, the bar says what its colours stand for)."""
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    n = len(heats) + 1
    fig = fig or plt.figure(figsize=(2.9 * n, 3.0), layout="constrained")  # room for each colour bar
    axes = fig.subplots(1, n, squeeze=False)
    axes[0, 0].imshow(_to_rgb(image, mean, std))
    axes[0, 0].set_title(image_title, fontsize="small")
    for ax, heat, title in zip(axes[0, 1:], heats, titles):
        heat = heat.detach().float().cpu()
        ax.imshow(overlay(image, heat, mean, std, cmap=cmap))
        lo, hi = float(heat.min()), float(heat.max())
        ax.set_title(title + _spread(lo, hi), fontsize="small")  # the overlay stretches any range to full contrast
        hi = hi if hi > lo else lo + 1e-12
        bar = fig.colorbar(cm.ScalarMappable(colors.Normalize(lo, hi), cmap), ax=ax, fraction=0.046, pad=0.03)
        bar.set_ticks([lo, (lo + hi) / 2, hi], labels=_tick_labels([lo, (lo + hi) / 2, hi]))
        bar.ax.tick_params(labelsize="x-small")
    for ax in axes[0]:
        ax.set_axis_off()
    fig.suptitle(suptitle, fontsize="medium")
    return fig


def plot_head_tokens(model: nn.Module, image: torch.Tensor, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None, layer: int = -1, label: str = "image"):
    """The image (titled `label`, e.g. `image_label(...)`), then one panel per head token: its attention over the
    patches (mean over heads), overlaid, with a colour bar."""
    image = _batch(image)[:1]
    maps = head_token_attention(model, image, layer)[0].mean(dim=1)  # [head tokens, Hp, Wp]
    return _panels(image[0], list(maps), [f"head token {i}" for i in range(len(maps))], mean, std,
                   f"head-token attention over patches, {block_name(model, layer)}", label)


def plot_class_attention(model: nn.Module, image: torch.Tensor, mean: Sequence[float] | None = None,
                         std: Sequence[float] | None = None, layer: int = -1, label: str = "image"):
    """The image, the class token's attention averaged over heads, then per head (each with a colour bar)."""
    image = _batch(image)[:1]
    maps = class_token_attention(model, image, layer)[0]  # [heads, Hp, Wp]
    return _panels(image[0], [maps.mean(dim=0), *maps], ["mean over heads", *(f"head {i}" for i in range(len(maps)))],
                   mean, std, f"class-token attention over patches, {block_name(model, layer)}", label)


def check_methods(methods: Sequence[str]) -> list[str]:
    """`methods` as a list when each is one of ATTRIBUTION_METHODS, else one sentence listing them."""
    bad = [m for m in methods if m not in ATTRIBUTION_METHODS]
    if bad:
        raise ValueError(f"unknown attribution method {bad[0]!r}; choose one of {', '.join(ATTRIBUTION_METHODS)}.")
    return list(methods)


def attributions(model: nn.Module, images: torch.Tensor, target: int | torch.Tensor,
                 method: str = "integrated_gradients", n_steps: int = 16) -> torch.Tensor:
    """Attributions for class `target` (an int or one per image):
    - 'integrated_gradients': pixels, baseline zeros in normalised space, `n_steps` steps -> [B, C, H, W];
    - 'occlusion': windows of patch x patch pixels over all channels, stride = patch (aligned with the patch
      tokens), zero baseline, 16 windows per forward pass -> [B, C, H, W] (constant within each patch);
    - 'layer_integrated_gradients': on `model.patch_embed`, summed over the embedding -> [B, Hp, Wp]."""
    from captum.attr import IntegratedGradients, LayerIntegratedGradients, Occlusion

    check_methods([method])
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


def _attribution_map(model: nn.Module, image: torch.Tensor, target: int, method: str, n_steps: int) -> torch.Tensor:
    """|attribution| of one image [1, C, H, W] for `target`, summed over channels: [H, W] (or [Hp, Wp])."""
    attr = attributions(model, image, target, method, n_steps)[0].detach()
    return attr.abs().sum(dim=0) if attr.ndim == 3 else attr.abs()


def plot_attributions(model: nn.Module, image: torch.Tensor, target: int, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None, methods: Sequence[str] = ATTRIBUTION_METHODS,
                      n_steps: int = 16, class_names: Sequence[str] | None = None, label: str = "image"):
    """The image (titled `label`), then one panel per method: |attribution| for class `target` (summed over
    channels) overlaid, with a colour bar; the title names the class (`class_names[target]` when given)."""
    image = _batch(image)[:1]
    heats = [_attribution_map(model, image, target, method, n_steps) for method in methods]
    return _panels(image[0], heats, [m.replace("_", " ") for m in methods], mean, std,
                   f"attributions for class {image_label(None, target, class_names).removeprefix('predicted: ')}",
                   label)


def plot_explorer(model: nn.Module, image: torch.Tensor, *, layer: int = -1, head_token: int | None = None,
                  method: str = "integrated_gradients", target: int | None = None,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None, label: str = "image",
                  class_names: Sequence[str] | None = None, n_steps: int = 16, fig=None):
    """One view of the head-token explorer: the image, one head token's attention in block `layer` (mean over
    heads; all head tokens averaged when `head_token` is None) and the `method` attribution for `target` (default:
    the predicted class), each map with a colour bar. Draws into `fig` (cleared) when given."""
    image = _batch(image)[:1]
    maps = head_token_attention(model, image, layer)[0].mean(dim=1)  # [head tokens, Hp, Wp]
    if target is None:
        with torch.no_grad(), _eval_mode(model):
            target = int(model(image).argmax(1))
    token = "all head tokens" if head_token is None else f"head token {head_token}"
    heat = maps.mean(dim=0) if head_token is None else maps[head_token]
    if fig is not None:
        fig.clear()
    target_name = image_label(None, target, class_names).removeprefix("predicted: ")
    return _panels(image[0], [heat, _attribution_map(model, image, target, method, n_steps)],
                   [f"{token}, {block_name(model, layer)}", f"{method.replace('_', ' ')} for {target_name}"],
                   mean, std, "head-token explorer", label, fig=fig)


def head_token_explorer(model: nn.Module, images: torch.Tensor, labels: Sequence[int], *,
                        class_names: Sequence[str] | None = None, mean: Sequence[float] | None = None,
                        std: Sequence[float] | None = None, methods: Sequence[str] = ATTRIBUTION_METHODS,
                        n_steps: int = 16):
    """An ipywidgets explorer (JupyterLab): pick an image by index or by class, a block, a head token and an
    attribution method; the maps (`plot_explorer`) are redrawn in place into one image widget. Returns the widget
    (a VBox; `.controls` holds the controls by name, `.refresh()` redraws). Under papermill it is created and
    drawn once like any output; the static figures of the notebook do not depend on it."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    images = _batch(images)
    labels = [int(c) for c in labels]
    with torch.no_grad(), _eval_mode(model):
        predicted = model(images).argmax(1).tolist()
    names = list(class_names) if class_names is not None else [str(c) for c in range(max(labels) + 1)]
    present = sorted(set(labels))
    depth, tokens = len(model.blocks), model.config["num_heads"]
    style = {"description_width": "initial"}
    controls = {
        "index": w.IntSlider(0, 0, len(images) - 1, description="image", style=style),
        "cls": w.Dropdown(options=[("any", -1), *((names[c], c) for c in present)], value=-1,
                          description="class", style=style),
        "block": w.IntSlider(depth, 1, depth, description="block", style=style),
        "token": w.Dropdown(options=[("all (mean)", -1), *((str(t), t) for t in range(tokens))], value=-1,
                            description="head token", style=style),
        "method": w.Dropdown(options=list(methods), value=methods[0], description="attribution", style=style),
    }
    view = w.Image(format="png")
    status = w.HTML()
    fig = plt.figure(figsize=(9.0, 3.0), layout="constrained")
    plt.close(fig)  # drawn into the image widget only, never shown as a figure of its own

    def refresh(*_):
        i = controls["index"].value
        token = controls["token"].value
        plot_explorer(model, images[i], layer=controls["block"].value - 1, head_token=None if token < 0 else token,
                      method=controls["method"].value, target=predicted[i], mean=mean, std=std,
                      label=image_label(labels[i], predicted[i], names), class_names=names, n_steps=n_steps, fig=fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        view.value = buf.getvalue()
        status.value = f"image {i}: {image_label(labels[i], predicted[i], names)}"

    def pick_class(change):
        if change["new"] >= 0 and labels[controls["index"].value] != change["new"]:
            controls["index"].value = labels.index(change["new"])  # the first image of that class; redraws

    controls["cls"].observe(pick_class, names="value")
    for name in ("index", "block", "token", "method"):
        controls[name].observe(refresh, names="value")
    refresh()
    box = w.VBox([w.HBox([controls["index"], controls["cls"]]),
                  w.HBox([controls["block"], controls["token"], controls["method"]]), status, view])
    box.controls, box.refresh = controls, refresh
    return box
