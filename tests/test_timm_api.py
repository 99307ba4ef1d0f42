"""timm's model conventions on dhvtlib's models: registered data cfgs, features_only, forward_intermediates,
reset_classifier, grad checkpointing, layer-wise lr groups and torch.fx tracing (timm's own model tests are run
against them separately; these pin the conventions we rely on)."""
from __future__ import annotations

import copy

import pytest
import timm
import timm.optim
import torch
from timm.models._features import FeatureGetterNet, FeatureListNet

from dhvtlib.models import CNN_VARIANTS, DHVT, VARIANTS, create_model, layers, list_models

TINY = dict(depth=4)  # every family at a test size: 4 blocks / 8-channel ResNets
SMALL = {"dhvt_tiny_cifar_patch4": TINY, "deit_tiny_cifar_patch4": TINY,
         "resnet18_cifar": dict(width=8), "resnet50_domain": dict(width=8, img_size=64)}


def _x(name: str, batch: int = 2) -> torch.Tensor:
    size = SMALL[name].get("img_size", 32)
    return torch.randn(batch, 3, size, size)


# ------------------------------------------------------------------ registry and data cfgs
def test_every_name_has_a_registered_data_cfg():
    names = set(timm.list_models(name_matches_cfg=True))
    for name in list_models():
        cfg = {**VARIANTS, **CNN_VARIANTS}[name]
        assert name in names
        assert timm.get_pretrained_cfg_value(name, "input_size") == cfg.input_size
        with torch.device("meta"):
            m = timm.create_model(name)
        assert m.default_cfg is m.pretrained_cfg and m.pretrained_cfg["architecture"] == name
        assert m.pretrained_cfg["num_classes"] == cfg.num_classes and m.variant == name
        keys = m.state_dict().keys()
        assert f"{m.pretrained_cfg['first_conv']}.weight" in keys and f"{m.pretrained_cfg['classifier']}.weight" in keys
    pool = {n: timm.get_pretrained_cfg_value(n, "pool_size") for n in
            ("dhvt_tiny_cifar_patch2", "dhvt_small_imagenet_patch16", "resnet18_cifar", "resnet50_domain")}
    assert pool == {"dhvt_tiny_cifar_patch2": (16, 16), "dhvt_small_imagenet_patch16": (14, 14),
                    "resnet18_cifar": (4, 4), "resnet50_domain": (7, 7)}
    assert timm.get_pretrained_cfg_value("deit_tiny_cifar_patch4", "fixed_input_size")  # the position embedding
    assert not timm.get_pretrained_cfg_value("dhvt_tiny_cifar_patch4", "fixed_input_size")


def test_built_cfg_follows_overrides_and_overlay():
    with torch.device("meta"):
        m = timm.create_model("dhvt_tiny_domain_patch16", img_size=64, in_chans=1, num_classes=7,
                              pretrained_cfg_overlay=dict(crop_pct=0.5))
        r = timm.create_model("resnet18_cifar", img_size=28)
    cfg = m.pretrained_cfg
    assert cfg["input_size"] == (1, 64, 64) and cfg["pool_size"] == (4, 4) and cfg["num_classes"] == 7
    assert cfg["crop_pct"] == 0.5 and cfg["mean"] == VARIANTS["dhvt_tiny_domain_patch16"].mean
    assert r.pretrained_cfg["pool_size"] == (4, 4)  # 28 -> 14 -> 7 -> 4
    with pytest.raises(ValueError, match="pass features_only=True"):
        timm.create_model("resnet18_cifar", out_indices=(1, 2))
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['feature_clss'\]"):
        create_model("resnet18_cifar", feature_clss="getter")


# ------------------------------------------------------------------ features_only
@pytest.mark.parametrize("name", ["dhvt_tiny_cifar_patch4", "deit_tiny_cifar_patch4"])
def test_transformer_features_are_the_last_blocks_patch_maps(name):
    """features_only=True: the last 3 blocks' patch tokens as [B, C, S/P, S/P] maps (class token dropped),
    exactly forward_intermediates' maps; out_indices picks other blocks."""
    full = create_model(name, **TINY).eval()
    feat = timm.create_model(name, features_only=True, **TINY).eval()
    assert isinstance(feat, FeatureGetterNet) and len(feat.model.blocks) == 4
    weights = {f"model.{k}": v for k, v in full.state_dict().items()}
    feat.load_state_dict({k: v for k, v in weights.items() if k in feat.state_dict()})
    x = _x(name)
    with torch.no_grad():
        maps = feat(x)
        ref = full.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
    assert feat.feature_info.channels() == [192] * 3 and feat.feature_info.reduction() == [4] * 3
    assert [tuple(o.shape) for o in maps] == [(2, 192, 8, 8)] * 3
    for a, b in zip(maps, ref):
        assert torch.equal(a, b)
    picked = timm.create_model(name, features_only=True, out_indices=(0, -1), **TINY)
    assert len(picked.model.blocks) == 4 and picked.feature_info.module_name() == ["blocks.0", "blocks.3"]
    pruned = timm.create_model(name, features_only=True, out_indices=(1,), **TINY)
    assert len(pruned.model.blocks) == 2 and isinstance(pruned.model.head, torch.nn.Identity)


@pytest.mark.parametrize("name,chans,sides", [("resnet18_cifar", [8, 8, 16, 32, 64], [32, 32, 16, 8, 4]),
                                               ("resnet50_domain", [8, 32, 64, 128, 256], [32, 16, 8, 4, 2])])
def test_cnn_features_are_the_stem_and_stage_maps(name, chans, sides):
    feat = timm.create_model(name, features_only=True, **SMALL[name]).eval()
    assert isinstance(feat, FeatureListNet) and feat.feature_info.channels() == chans
    with torch.no_grad():
        maps = feat(_x(name))
    assert [tuple(o.shape) for o in maps] == [(2, c, s, s) for c, s in zip(chans, sides)]
    some = create_model(name, features_only=True, out_indices=(1, 4), feature_cls="getter", **SMALL[name]).eval()
    with torch.no_grad():
        assert [o.shape[1] for o in some(_x(name))] == [chans[1], chans[4]]


# ------------------------------------------------------------------ forward_intermediates
def test_forward_intermediates_are_the_block_outputs():
    m = create_model("dhvt_tiny_cifar_patch2", **TINY).eval()
    outs = []
    hooks = [blk.register_forward_hook(lambda mod, i, o: outs.append(o)) for blk in m.blocks]
    x = _x("dhvt_tiny_cifar_patch4")
    with torch.no_grad():
        final, maps = m.forward_intermediates(x)
        tokens = m.forward_intermediates(x, indices=2, output_fmt="NLC", return_prefix_tokens=True,
                                         intermediates_only=True)
        normed = m.forward_intermediates(x, indices=[0], norm=True, stop_early=True, intermediates_only=True)
        features = m.forward_features(x)
    for h in hooks:
        h.remove()
    blocks = outs[:4]  # the first call's four block outputs
    assert torch.equal(final, features)
    for y, b in zip(maps, blocks):  # patch tokens, row-major, as [B, C, 16, 16]
        assert y.shape == (2, 192, 16, 16) and torch.equal(y, b[:, 1:].transpose(1, 2).reshape(2, 192, 16, 16))
    for (y, cls), b in zip(tokens, blocks[2:]):
        assert torch.equal(y, b[:, 1:]) and torch.equal(cls, b[:, :1])
    assert torch.equal(normed[0], m.norm(blocks[0])[:, 1:].transpose(1, 2).reshape(2, 192, 16, 16))
    with pytest.raises(ValueError, match="output_fmt 'NHWC' is not supported"):
        m.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(ValueError, match=r"input of shape \(2, 32, 32\) does not fit this model"):
        m.forward_intermediates(torch.randn(2, 32, 32))


# ------------------------------------------------------------------ classifier and pooling
def test_reset_classifier_zero_gives_pooled_features():
    m = create_model("dhvt_tiny_cifar_patch4", **TINY).eval()
    x = _x("dhvt_tiny_cifar_patch4")
    with torch.no_grad():
        tokens = m.forward_features(x)
        m.reset_classifier(0)
        assert m.num_classes == 0 and m.config["num_classes"] == 0
        assert torch.equal(m(x), tokens[:, 0]) and m(x).shape == (2, m.head_hidden_size)
        m.reset_classifier(0, "avg")
        assert torch.equal(m(x), tokens[:, 1:].mean(dim=1)) and m.config["global_pool"] == "avg"
        m.reset_classifier(0, "")
        assert torch.equal(m(x), tokens)
        m.reset_classifier(10, "token")
        assert m(x).shape == (2, 10) and m.get_classifier().out_features == 10
    with pytest.raises(ValueError, match="global_pool 'max' is not supported"):
        m.reset_classifier(10, "max")
    with pytest.raises(ValueError, match="global_pool 'max' is not supported"):
        create_model("dhvt_tiny_cifar_patch4", global_pool="max")
    assert create_model("dhvt_tiny_cifar_patch4", num_classes=0, global_pool="", **TINY)(x).shape == (2, 65, 192)
    r = create_model("resnet18_cifar", width=8).eval()
    with torch.no_grad():
        fmap = r.forward_features(x)
        r.reset_classifier(0)
        assert torch.allclose(r(x), fmap.mean(dim=(2, 3)), atol=1e-6) and r.config["num_classes"] == 0
    g = timm.create_model("resnet18_cifar", width=8, num_classes=0, global_pool="").eval()
    assert g(x).shape == (2, 64, 4, 4) and g.config["global_pool"] == ""


# ------------------------------------------------------------------ grad checkpointing
@pytest.mark.parametrize("name", list(SMALL))
def test_grad_checkpointing_gives_equal_outputs_and_gradients(name):
    torch.manual_seed(0)
    ref = create_model(name, drop_path_rate=0.1, **SMALL[name]).train()
    ckpt = copy.deepcopy(ref)
    ckpt.set_grad_checkpointing()
    x = _x(name, batch=4)
    if isinstance(ckpt, DHVT):  # forward_intermediates checkpoints block by block
        with torch.no_grad():
            assert torch.equal(ckpt.eval().forward_intermediates(x)[0], ref.eval().forward_features(x))
        ckpt.train(), ref.train()
    outs = []
    for m in (ref, ckpt):
        torch.manual_seed(1)  # the same drop-path draws: checkpointing replays the RNG in the recomputation
        y = m(x)
        y.square().mean().backward()
        outs.append(y)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    for (n, p), q in zip(ckpt.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_group_matcher_gives_layer_decay_groups():
    m = create_model("dhvt_tiny_cifar_patch4", **TINY)
    opt = timm.optim.create_optimizer_v2(m, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in m.parameters())  # every parameter once
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    s = [scale[id(p)] for p in (m.cls_token, m.patch_embed.proj[0][0].weight, m.blocks[0].attn.qkv.weight,
                                m.blocks[3].mlp.conv1.weight, m.norm.weight, m.head.weight)]
    assert s[0] == s[1] < s[2] < s[3] <= s[4] < s[5] == 1.0  # the embedding, each block deeper, norm, head


# ------------------------------------------------------------------ torch.fx
@pytest.mark.parametrize("name", list(SMALL))
def test_fx_symbolic_trace_equals_eager(name):
    m = create_model(name, **SMALL[name]).eval()
    g = torch.fx.symbolic_trace(m)
    x = _x(name)
    with torch.no_grad():
        assert torch.equal(g(x), m(x))
    called = {getattr(n.target, "__name__", "") for n in g.graph.nodes if n.op == "call_function"}
    assert {"checked_input"} <= called if isinstance(m, DHVT) else {"checked_images"} <= called
    if name.startswith("dhvt"):  # the runtime choices stay runtime choices
        assert {"_grid_side", "_attend", "_daff_map"} <= called
    with pytest.raises(ValueError, match=r"input of shape \(2, 1, 32, 32\) does not fit this model"):
        g(torch.randn(2, 1, 32, 32))  # the traced model keeps the one-sentence check


def test_traced_dhvt_keeps_the_kernel_choice_and_trains(monkeypatch):
    """The traced graph picks attention kernels at run time as the eager model does (explicit attention when
    training in CPU bf16, SDPA otherwise), and its gradients equal the eager ones."""
    calls = []
    sdpa = layers.F.scaled_dot_product_attention
    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    m = create_model("dhvt_tiny_cifar_patch4", **TINY).train()
    g = torch.fx.symbolic_trace(m)
    x = _x("dhvt_tiny_cifar_patch4")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g(x)
    assert len(calls) == 0
    ref = copy.deepcopy(m)
    torch.manual_seed(0)
    g(x).square().mean().backward()
    assert len(calls) == 4
    torch.manual_seed(0)
    ref(x).square().mean().backward()
    ref_params = dict(ref.named_parameters())
    for n, p in g.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[n].grad, rtol=1e-5, atol=1e-7, msg=n)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
def test_torchscript_is_not_supported_and_says_so():
    """TorchScript is deprecated (torch 2.14) and not supported: DHVT's kernel choices and the per-GPU BatchNorm
    (SplitBatchNorm2d, in every CNN since the ResNet rows split their statistics) do not script."""
    m = create_model("resnet18_cifar", width=8).eval()
    with pytest.raises(Exception):
        torch.jit.script(m)


