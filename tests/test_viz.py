"""dhvtlib.viz: head-token and class-token attention, overlays, captum attributions and their figures."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import dhvtlib  # noqa: E402
from dhvtlib import viz  # noqa: E402
from dhvtlib.viz import save_figure  # noqa: E402

HEADS = 4
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _model(in_chans=3, img=32, **kw):
    model = dhvtlib.DHVT(img_size=img, patch_size=4, in_chans=in_chans, embed_dim=32, depth=2, num_heads=HEADS,
                         num_classes=10, **kw)
    with torch.no_grad():  # move BatchNorm statistics off their defaults so that eval mode matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(params=[(3, 32), (1, 28)], ids=["rgb32", "grey28"])
def model_and_images(request):
    in_chans, img = request.param
    return _model(in_chans, img), torch.randn(2, in_chans, img, img)


def _no_hooks(model):
    for m in model.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks):
            assert not hooks, m
    assert not any(blk.attn.keep_attn or blk.attn.attn_map is not None for blk in model.blocks)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_head_token_attention(model_and_images):
    model, images = model_and_images
    side = images.shape[-1] // 4
    before = _state(model)
    ht = viz.head_token_attention(model, images)
    assert ht.shape == (2, HEADS, HEADS, side, side)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model.eval()
    full = model.attention_maps(images)[-1]  # [B, h, N+h, N+h]
    n = side * side + 1
    assert full.shape == (2, HEADS, n + HEADS, n + HEADS)
    torch.testing.assert_close(full.sum(-1), torch.ones(2, HEADS, n + HEADS))
    assert (ht.sum((-1, -2)) <= 1 + 1e-5).all() and (ht >= 0).all()
    # token t of head h over patch (i, j) is row n + t, column 1 + i * side + j of head h's map
    torch.testing.assert_close(ht[1, 2, 3, 4, 5], full[1, 3, n + 2, 1 + 4 * side + 5])
    first = viz.head_token_attention(model, images, layer=0)
    torch.testing.assert_close(first, model.attention_maps(images)[0][:, :, n:, 1:n].transpose(1, 2)
                               .reshape(2, HEADS, HEADS, side, side))
    _no_hooks(model)


def test_class_token_attention(model_and_images):
    model, images = model_and_images
    side = images.shape[-1] // 4
    cls = viz.class_token_attention(model, images)
    assert cls.shape == (2, HEADS, side, side)
    model.eval()
    full = model.attention_maps(images)[-1]
    torch.testing.assert_close(cls.flatten(2), full[:, :, 0, 1:side * side + 1])


def test_without_head_tokens():
    model, images = _model(head_tokens=False), torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="no head tokens"):
        viz.head_token_attention(model, images)
    cls = viz.class_token_attention(model, images)
    assert cls.shape == (2, HEADS, 8, 8)
    torch.testing.assert_close(cls.sum((-1, -2)), torch.ones(2, HEADS) - model.eval().attention_maps(images)[-1][
        :, :, 0, 0])


@pytest.mark.parametrize("chans", [3, 1])
def test_overlay(chans):
    image = torch.randn(chans, 28, 28)
    out = viz.overlay(image, torch.rand(7, 7), MEAN[:chans], STD[:chans])
    assert out.shape == (28, 28, 3) and out.min() >= 0 and out.max() <= 1
    flat = viz.overlay(image, torch.ones(7, 7), alpha=0.0)  # constant heat, no blending: the clipped image
    np.testing.assert_allclose(flat, image.clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0).numpy(), atol=1e-6)


@pytest.mark.parametrize("method", viz.ATTRIBUTION_METHODS)
def test_attributions(model_and_images, method):
    model, images = model_and_images
    side = images.shape[-1] // 4
    before = _state(model)
    attr = viz.attributions(model, images, target=torch.tensor([1, 7]), method=method, n_steps=8)
    expected = (2, side, side) if method == "layer_integrated_gradients" else images.shape
    assert attr.shape == expected and torch.isfinite(attr).all() and attr.abs().sum() > 0
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    if method == "occlusion":  # windows are the patches: constant within each 4 x 4 patch, over all channels
        patches = attr.unflatten(2, (side, 4)).unflatten(4, (side, 4))  # [B, C, side, 4, side, 4]
        assert torch.equal(patches, patches[:, :1, :, :1, :, :1].expand_as(patches))
    _no_hooks(model)


def test_integrated_gradients_completeness():
    model, images = _model(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.head.weight.mul_(50)  # a larger output change makes the check meaningful
    attr = viz.attributions(model, images, target=3, n_steps=32)
    model.eval()
    with torch.no_grad():
        change = model(images)[:, 3] - model(torch.zeros_like(images))[:, 3]
    torch.testing.assert_close(attr.sum((1, 2, 3)), change, rtol=0.1, atol=0.02)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown attribution method"):
        viz.attributions(_model(), torch.randn(1, 3, 32, 32), 0, method="saliency")


def test_figures(tmp_path):
    model, image = _model(), torch.randn(3, 32, 32)
    figs = {"head_tokens": viz.plot_head_tokens(model, image, MEAN, STD),
            "class": viz.plot_class_attention(model, image, MEAN, STD, layer=0),
            "attributions": viz.plot_attributions(model, image, 2, MEAN, STD, n_steps=4)}
    # the image, then one panel per map, each with its colour bar
    assert [len(f.axes) for f in figs.values()] == [1 + 2 * HEADS, 1 + 2 * (1 + HEADS),
                                                    1 + 2 * len(viz.ATTRIBUTION_METHODS)]
    assert figs["head_tokens"]._suptitle.get_text().endswith("block 2 of 2")
    assert figs["class"]._suptitle.get_text().endswith("block 1 of 2")
    grey = viz.plot_head_tokens(_model(1, 28), torch.randn(1, 1, 28, 28), MEAN[:1], STD[:1])
    for name, fig in {**figs, "grey": grey}.items():
        paths = save_figure(fig, tmp_path / name)
        assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)
        plt.close(fig)
    assert not list(tmp_path.glob(".*"))
    _no_hooks(model)


NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def test_names_and_blocks():
    model = _model()
    assert viz.block_name(model, -1) == "block 2 of 2" and viz.block_name(model, 0) == "block 1 of 2"
    with pytest.raises(ValueError, match="out of range"):
        viz.block_name(model, 2)
    assert viz.image_label(9, 7, NAMES) == "true: Ankle boot, predicted: Sneaker"
    assert viz.image_label(9, 7) == "true: 9, predicted: 7"
    fig = viz.plot_attributions(model, torch.randn(3, 32, 32), 7, MEAN, STD, methods=["occlusion"],
                                class_names=NAMES, label=viz.image_label(9, 7, NAMES))
    assert fig._suptitle.get_text() == "attributions for class Sneaker"
    assert fig.axes[0].get_title() == "true: Ankle boot, predicted: Sneaker"
    plt.close(fig)


def test_head_token_explorer_updates_in_place():
    pytest.importorskip("ipywidgets")
    model = _model(1, 28)
    explorer = viz.head_token_explorer(model, torch.randn(6, 1, 28, 28), [9, 7, 1, 7, 0, 3], class_names=NAMES,
                                       mean=MEAN[:1], std=STD[:1], methods=["occlusion", "integrated_gradients"],
                                       n_steps=2)
    status, image = explorer.children[2], explorer.children[3]
    first = image.value
    assert first[:4] == b"\x89PNG" and status.value.startswith("image 0: true: Ankle boot, predicted: ")
    explorer.controls["cls"].value = 7  # the first Sneaker
    assert explorer.controls["index"].value == 1 and "true: Sneaker" in status.value and image.value != first
    for name, value in (("block", 1), ("token", 2), ("method", "integrated_gradients")):
        before = image.value
        explorer.controls[name].value = value
        assert image.value != before, name
    assert explorer.controls["block"].max == len(model.blocks)
    _no_hooks(model)
