"""The model equals the official one (golden outputs, layout, counts) and every ablation is an argument."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dhvtlib
from dhvtlib.models import (DHVT, VARIANTS, convert_sope_sync_batchnorm, create_model, fuse_batchnorm,
                            param_groups_weight_decay)
from dhvtlib.models.ablations import ABLATION_TABLES, ABLATIONS, ablation_rows, build_ablation_model
from dhvtlib.models.profile import profile

FIX = Path(__file__).parent / "fixtures"
GOLDEN = sorted(FIX.glob("sope_*.pt"))
DHVT_NAMES = [n for n in VARIANTS if n.startswith("dhvt")]


def official_layout() -> tuple[dict[str, int], dict[str, list[tuple[str, tuple[int, ...]]]]]:
    """Parse fixtures/official-state-dict-keys.txt: the parameter counts and each listed variant's keys."""
    counts, sections, current = {}, {}, None
    for line in (FIX / "official-state-dict-keys.txt").read_text().splitlines():
        if m := re.match(r"#\s+(dhvt_\w+): (\d+)$", line):
            counts[m[1]] = int(m[2])
        elif m := re.match(r"## (dhvt_\w+)$", line):
            current = sections.setdefault(m[1], [])
        elif line.startswith("##"):
            current = None
        elif current is not None and line.strip() and not line.startswith("#"):
            name, shape = line.split(" ", 1)
            current.append((name, tuple(json.loads(shape.replace("(", "[").replace(",)", ")").replace(")", "]")))))
    return counts, sections


# ------------------------------------------------------------------ faithfulness
@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_golden_outputs(path, mode):
    g = torch.load(path, weights_only=True)
    cfg = json.loads(g["config"])
    assert cfg.pop("apply_dhvt") is True
    model = DHVT(**cfg)
    model.load_state_dict(g["state_dict"], strict=True)
    model.train(mode == "train")
    with torch.no_grad():
        out = model(g["input"])
    ref = g["logits_eval" if mode == "eval" else "logits_train_mode"]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_parameter_counts_equal_official():
    counts, _ = official_layout()
    assert set(counts) == set(DHVT_NAMES)
    for name, n in counts.items():
        assert sum(p.numel() for p in create_model(name).parameters()) == n, name
        assert VARIANTS[name].official_params == n


def test_state_dict_layout_equals_official():
    _, sections = official_layout()
    assert len(sections) >= 3
    for name, keys in sections.items():
        expected = []
        for k, shape in keys:  # the file lists block 0; blocks 1..11 repeat it
            if k.startswith("blocks.0."):
                expected += [(f"blocks.{i}." + k[len("blocks.0."):], shape) for i in range(12)]
            else:
                expected.append((k, shape))
        ours = [(k, tuple(v.shape)) for k, v in create_model(name).state_dict().items()]
        assert sorted(ours) == sorted(expected), name


def test_deit_baseline_is_timm_vit_layout():
    ours = create_model("deit_tiny_cifar_patch4").eval()
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=4, num_classes=100, qkv_bias=True).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_timm_registry_and_overrides():
    m = timm.create_model("dhvt_small_cifar_patch2", num_classes=10)
    assert isinstance(m, DHVT) and m.head.out_features == 10
    assert set(DHVT_NAMES) <= set(timm.list_models("dhvt_*"))
    assert m.pretrained_cfg["input_size"] == (3, 32, 32)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("dhvt_tiny_cifar_patch4", pretrained=True)


def test_weight_init_and_decay_groups():
    torch.manual_seed(0)
    m = create_model("dhvt_tiny_cifar_patch4")
    assert torch.all(m.head.bias == 0) and 0.01 < m.head.weight.std() < 0.03  # head is not zero-initialised
    assert torch.all(m.patch_embed.pre_affine.alpha == 1) and torch.all(m.patch_embed.post_affine.beta == 0)
    assert 0.01 < m.blocks[3].attn.pos_embed.std() < 0.03
    names = {id(p): n for n, p in m.named_parameters()}
    no_decay, decay = param_groups_weight_decay(m, 0.05)
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert "cls_token" in nd and "norm.weight" in nd and "blocks.0.mlp.bn1.weight" in nd
    params = dict(m.named_parameters())
    assert all(params[n].ndim == 1 or n == "cls_token" for n in nd)
    assert all(params[n].ndim >= 2 for n in d)
    assert {"blocks.0.attn.pos_embed", "patch_embed.pre_affine.alpha", "patch_embed.post_affine.beta",
            "blocks.0.attn.qkv.weight", "head.weight"} <= d
    assert len(nd) + len(d) == len(names)


# ------------------------------------------------------------------ every variant and every ablation row
@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_forward_backward(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=7)
    s = VARIANTS[name].input_size[-1]
    out = m(torch.randn(2, 3, s, s))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing


@pytest.mark.parametrize("key", list(ABLATIONS))
def test_every_ablation_row_trains(key):
    torch.manual_seed(0)
    m = build_ablation_model(key, num_classes=5)
    m.train()
    out = m(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 5)
    out.logsumexp(-1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    if ABLATIONS[key].model_kwargs.get("daff_se") == "none":
        # Split CLS without SE: in the last block the patch-token FFN cannot reach the class token (structural)
        assert missing and all(n.startswith("blocks.11.mlp.") for n in missing), missing
    else:
        assert not missing, missing
    assert 50 < ABLATIONS[key].paper_top1 < 90


def _signature(model: nn.Module) -> dict[str, tuple]:
    sig = {}
    for name, mod in model.named_modules():
        attrs = tuple(getattr(mod, a, None) for a in ("num_heads", "head_tokens", "dw_shortcut", "se", "token_mixer"))
        shapes = tuple((n, tuple(p.shape)) for n, p in mod.named_parameters(recurse=False))
        sig[name] = (type(mod).__name__, shapes, attrs)
    sig["pos_embed"] = ("param", getattr(model, "pos_embed", None) is not None)
    return sig


B = r"blocks\.\d+"
HT = [rf"{B}\.attn", rf"{B}\.attn\.(ht_proj|ht_norm|ht_act)"]
EMBED = [r"patch_embed", r"patch_embed\..+"]
MLP = [rf"{B}\.mlp", rf"{B}\.mlp\..+"]
PE = [r"pos_embed", r""]  # "" = the root module, which then owns pos_embed
EXPECTED_DIFF = {  # row -> regexes of the module paths that must differ from full DHVT-T, and nothing else
    "table5/pe": PE + EMBED + HT + MLP, "table5/none": EMBED + HT + MLP, "table5/pe_sope": PE + HT + MLP,
    "table5/sope": HT + MLP, "table5/pe_daff": PE + EMBED + HT, "table5/daff": EMBED + HT,
    "table5/pe_sope_daff": PE + HT, "table5/sope_daff": HT,
    "table6/pe": PE + EMBED + HT + MLP, "table6/pe_ht": PE + EMBED + MLP, "table6/sope_daff_ht": [],
    "table8/vit": PE + EMBED + HT + MLP,
    "table8/split_cls": PE + EMBED + HT + [rf"{B}\.mlp", rf"{B}\.mlp\.(bn\d|conv2|act2|compress|se_act|excitation)"],
    "table8/split_cls_se": PE + EMBED + HT + [rf"{B}\.mlp", rf"{B}\.mlp\.(bn\d|conv2|act2)"],
    "table8/split_cls_avgpool": PE + EMBED + HT + [rf"{B}\.mlp",
                                                    rf"{B}\.mlp\.(bn\d|conv2|act2|compress|se_act|excitation)"],
    "table9/dhvt": [], "table9/se_all": [rf"{B}\.mlp"], "table9/no_dw_shortcut": [rf"{B}\.mlp"],
    "affine/dhvt": [], "affine/dhvt_no_affine": [r"patch_embed\.(pre|post)_affine"],
    "affine/vit_pe_sope": PE + HT + MLP, "affine/vit_pe_sope_no_affine": PE + HT + MLP +
    [r"patch_embed\.(pre|post)_affine"],
    "table10/vit_t_h3": PE + EMBED + HT + MLP, "table10/vit_t_h4": PE + EMBED + HT + MLP,
    "table10/dhvt_t_h3": [rf"{B}\.attn", rf"{B}\.attn\.ht_(proj|norm)"], "table10/dhvt_t_h4": [],
}
for _a in ("bn", "ln"):
    for _b in ("bn", "ln"):
        for _bs in (128, 256, 512):
            EXPECTED_DIFF[f"table11/{_a}_{_b}_bs{_bs}"] = (
                ([r"patch_embed\.proj\.\d+\.1"] if _a == "ln" else []) + ([rf"{B}\.mlp\.bn\d"] if _b == "ln" else []))


@pytest.mark.parametrize("key", [k for k in ABLATIONS if ABLATIONS[k].base == "dhvt_tiny_cifar_patch4"])
def test_ablation_differs_from_dhvt_in_exactly_the_expected_modules(key):
    ref, row = _signature(create_model("dhvt_tiny_cifar_patch4")), _signature(build_ablation_model(key))
    differing = {n for n in ref.keys() | row.keys() if ref.get(n) != row.get(n)}
    patterns = EXPECTED_DIFF[key]
    unexpected = {n for n in differing if not any(re.fullmatch(p, n) for p in patterns)}
    assert not unexpected, f"{key}: unexpected differences {sorted(unexpected)[:5]}"
    unmatched = [p for p in patterns if not any(re.fullmatch(p, n) for n in differing)]
    assert not unmatched, f"{key}: expected differences not found {unmatched}"


def test_ablation_tables_and_small_variant():
    assert ABLATION_TABLES == ("table5", "table6", "table8", "table9", "affine", "table10", "table11")
    assert {r.recipe["batch_size"] for r in ablation_rows("table11")} == {128, 256, 512}
    small = ablation_rows("table10", variant="small")
    assert {r.base for r in small} == {"dhvt_small_cifar_patch4"}
    assert [r.model_kwargs["num_heads"] for r in small] == [6, 8, 6, 8, 4, 6, 8]
    with pytest.raises(ValueError, match="unknown ablation table 'table7'"):
        ablation_rows("table7")
    with pytest.raises(ValueError, match="unknown ablation row"):
        build_ablation_model("table5/nope")


# ------------------------------------------------------------------ shapes, options, errors
@pytest.mark.parametrize("patch,img,in_chans", [(8, 32, 3), (4, 48, 1), (2, 16, 3), (16, 64, 1)])
def test_patch_sizes_image_sizes_and_grey_input(patch, img, in_chans):
    m = DHVT(img_size=img, patch_size=patch, in_chans=in_chans, num_classes=3, embed_dim=64, depth=2, num_heads=4)
    assert len([c for c in m.patch_embed.proj if isinstance(c, nn.Sequential)]) == {2: 1, 4: 2, 8: 3, 16: 4}[patch]
    feats = m.forward_features(torch.randn(2, in_chans, img, img))
    assert feats.shape == (2, (img // patch) ** 2 + 1, 64)
    assert m.forward_head(feats).shape == (2, 3) and m.forward_head(feats, pre_logits=True).shape == (2, 64)


def test_sope_gelu_placement_matches_official_and_paper_option():
    def n_gelu(**kw):
        return sum(isinstance(c, nn.GELU) for c in DHVT(embed_dim=64, depth=1, **kw).patch_embed.proj)
    assert n_gelu(patch_size=2) == 1 and n_gelu(patch_size=4) == 1 and n_gelu(patch_size=16, img_size=64) == 3
    assert n_gelu(patch_size=4, sope_last_act=True) == 2
    assert all(c[0].bias is None for c in DHVT(depth=1).patch_embed.proj if isinstance(c, nn.Sequential))


def test_headless_model_and_other_image_size_without_pos_embed():
    m = create_model("dhvt_tiny_cifar_patch4", num_classes=0).eval()
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 192)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 192)  # convolutional position info: any size works


@pytest.mark.parametrize("call,match", [
    (lambda: create_model("dhvt_huge"), "unknown model 'dhvt_huge'"),
    (lambda: create_model("dhvt_tiny_cifar_patch4", img_size=30), "img_size 30 is not a multiple of patch_size 4"),
    (lambda: create_model("dhvt_tiny_cifar_patch4", patch_size=3), "patch_size 3 is not supported by SOPE"),
    (lambda: create_model("dhvt_tiny_cifar_patch4", num_heads=5), "num_heads 5 must be a positive integer dividing"),
    (lambda: create_model("dhvt_tiny_cifar_patch4", embed_layer="conv"), "embed_layer 'conv' is not supported"),
    (lambda: create_model("dhvt_tiny_cifar_patch4", daff_norm="gn"), "daff_norm 'gn' is not supported"),
    (lambda: create_model("dhvt_tiny_cifar_patch4", daff_se="x"), "DAFF se 'x' is not supported"),
    (lambda: create_model("dhvt_tiny_cifar_patch4", attn_impl="flash"), "attention impl 'flash' is not supported"),
    (lambda: create_model("dhvt_tiny_cifar_patch4", daff_layout="nhwc"), "DAFF layout 'nhwc' is not supported"),
    (lambda: create_model("dhvt_tiny_cifar_patch4", daff_conv_init="xavier"), "daff_conv_init 'xavier' is not"),
    (lambda: create_model("dhvt_tiny_cifar_patch4", in_chans=0), "in_chans 0 must be a positive integer"),
    (lambda: create_model("dhvt_tiny_cifar_patch4", colour=True), r"unknown argument\(s\) \['colour'\]"),
    (lambda: create_model("dhvt_tiny_cifar_patch4")(torch.randn(1, 1, 32, 32)), r"input of shape \(1, 1, 32, 32\)"),
    (lambda: create_model("dhvt_tiny_cifar_patch4")(torch.randn(1, 3, 30, 30)), "S divisible by patch_size 4"),
    (lambda: create_model("deit_tiny_cifar_patch4")(torch.randn(1, 3, 64, 64)), "image side 64 differs from"),
])
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_seeded_construction_and_train_step_are_deterministic():
    def run():
        torch.manual_seed(123)
        m = create_model("dhvt_tiny_cifar_patch4", depth=3, drop_path_rate=0.1).train()
        x = torch.randn(4, 3, 32, 32)
        out = m(x)
        out.sum().backward()
        return out.detach(), m.head.weight.grad.clone()
    (o1, g1), (o2, g2) = run(), run()
    assert torch.equal(o1, o2) and torch.equal(g1, g2)


def test_drop_path_rises_linearly():
    m = create_model("dhvt_tiny_cifar_patch4", drop_path_rate=0.1)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in m.blocks]
    assert rates[0] == 0.0 and abs(rates[-1] - 0.1) < 1e-7
    assert all(getattr(b.drop_path2, "drop_prob", 0.0) == r for b, r in zip(m.blocks, rates))


# ------------------------------------------------------------------ attention maps, fused path, precision
def test_attention_maps_and_fused_path_agree():
    torch.manual_seed(0)
    m = create_model("dhvt_tiny_cifar_patch4", depth=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = m(x)
        with m.keep_attention() as maps:
            explicit = m(x)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    assert len(maps) == 3 and maps[0].shape == (2, 4, 65 + 4, 65 + 4)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 4, 69))
    assert all(b.attn.attn_map is None and not b.attn.keep_attn for b in m.blocks)  # restored
    deit_maps = create_model("deit_tiny_cifar_patch4", depth=2).attention_maps(x)
    assert deit_maps[0].shape == (2, 4, 65, 65)


def test_separate_activation_module_per_use():
    m = create_model("dhvt_tiny_domain_patch16", depth=1)
    gelus = [mod for mod in m.modules() if isinstance(mod, nn.GELU)]
    assert len(gelus) == len({id(g) for g in gelus}) == 3 + 1 + 3  # SOPE 3, head tokens 1, DAFF 3


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    m = create_model("dhvt_tiny_cifar_patch4", depth=4).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m(x)
    assert low.dtype == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(low.float(), ref, dim=-1).min() > 0.99


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_kernel_choices_compute_the_same_function(mode):
    """attn_impl and daff_layout change kernels, not maths: every combination gives the default's logits and
    gradients. Checked in float64, where "the same function" is exact to ~1e-12 whatever kernels the CPU runs (in
    fp32 the differences of summation order depend on the CPU: AVX2, AVX512 and AMX kernels differ by ~1e-5 on
    small gradients); the golden tests pin the default in fp32."""
    torch.manual_seed(0)
    ref = create_model("dhvt_tiny_cifar_patch4", depth=2).double().train(mode == "train")
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    out = ref(x)
    out.square().sum().backward()
    for impl in ("sdpa", "explicit"):
        for layout in ("tokens", "channels_last", "nchw"):
            m = create_model("dhvt_tiny_cifar_patch4", depth=2, attn_impl=impl, daff_layout=layout).double()
            m.load_state_dict(ref.state_dict())
            m.train(mode == "train")
            o = m(x)
            o.square().sum().backward()
            torch.testing.assert_close(o, out, rtol=1e-9, atol=1e-10)
            for (name, p), q in zip(m.named_parameters(), ref.parameters()):
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-10, msg=name)


def test_auto_kernels_follow_device_and_precision(monkeypatch):
    """'auto': SDPA and the channels_last DAFF view in fp32; the official explicit attention (training and
    inference) and DAFF on the token layout under CPU bf16 autocast (the faster forms measured); NCHW DAFF when its
    BatchNorms are split into GPU groups in training."""
    from dhvtlib.run.build import set_bn_splits
    from dhvtlib.models import layers

    calls = {"sdpa": 0, "layouts": []}
    sdpa = layers.F.scaled_dot_product_attention
    monkeypatch.setattr(layers.F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.__setitem__("sdpa", calls["sdpa"] + 1) or sdpa(*a, **k))
    layout = layers.DAFF._layout
    monkeypatch.setattr(layers.DAFF, "_layout", lambda self, x: calls["layouts"].append(layout(self, x))
                        or calls["layouts"][-1])

    def count(model, grad, bf16):
        calls.update(sdpa=0, layouts=[])
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(torch.randn(4, 3, 32, 32))
        return calls["sdpa"], "+".join(sorted(set(calls["layouts"])))

    torch.manual_seed(0)
    m = create_model("dhvt_tiny_cifar_patch4", depth=2)
    assert count(m.train(), True, False) == (2, "channels_last")  # fp32 training: SDPA, channels_last
    assert count(m.train(), True, True) == (0, "tokens")  # CPU bf16 training: explicit, tokens
    assert count(m.eval(), False, True) == (0, "tokens")  # CPU bf16 inference: explicit, tokens
    assert count(m.eval(), False, False) == (2, "channels_last")
    set_bn_splits(m, 2)
    assert count(m.train(), True, False) == (2, "nchw")  # per-GPU BN groups: NCHW (split without a copy)
    assert count(m.eval(), False, True) == (0, "tokens")  # eval: running statistics, nothing to split
    forced = create_model("dhvt_tiny_cifar_patch4", depth=2, attn_impl="sdpa", daff_layout="channels_last")
    assert count(forced.train(), True, True) == (2, "channels_last")


def test_table8_ffn_forms_init_their_1x1_convs_as_vit_linears():
    torch.manual_seed(0)
    dhvt = create_model("dhvt_tiny_cifar_patch4")  # the official DAFF: PyTorch's conv default (kaiming uniform)
    bound = 1 / dhvt.blocks[0].mlp.conv1.in_channels ** 0.5
    assert 0.035 < dhvt.blocks[0].mlp.conv1.weight.std() < 0.05 and dhvt.blocks[0].mlp.conv1.bias.abs().max() > 0
    assert dhvt.blocks[0].mlp.conv1.weight.abs().max() <= bound
    for key in ("table8/split_cls", "table8/split_cls_se", "table8/split_cls_avgpool"):
        m = build_ablation_model(key)
        for blk in m.blocks:
            for conv in (blk.mlp.conv1, blk.mlp.conv3):  # fc1/fc2 as 1x1 convs: trunc_normal(0.02), zero bias
                assert 0.018 < conv.weight.std() < 0.022  # timm trunc_normal_(std=.02), as every Linear
                assert torch.all(conv.bias == 0)
    assert "num_heads=6" in VARIANTS["deit_small_cifar_patch4"].notes  # the DeiT-S head count is stated
    notes = VARIANTS["deit_small_cifar_patch4"].notes
    assert create_model("deit_small_cifar_patch4").pretrained_cfg["notes"] == (notes,)  # shown with the model


def test_channels_last_input_gives_same_output():
    torch.manual_seed(0)
    m = create_model("dhvt_tiny_cifar_patch4", depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x.contiguous(memory_format=torch.channels_last)), m(x), rtol=1e-5, atol=1e-5)


def test_sync_batchnorm_conversion_keeps_layout():
    m = create_model("dhvt_tiny_cifar_patch4")
    keys = list(m.state_dict())
    convert_sope_sync_batchnorm(m)
    assert isinstance(m.patch_embed.proj[0][1], nn.SyncBatchNorm)
    assert isinstance(m.blocks[0].mlp.bn1, nn.BatchNorm2d) and not isinstance(m.blocks[0].mlp.bn1, nn.SyncBatchNorm)
    assert list(m.state_dict()) == keys
    # any backend (gloo on CPU): the all_reduce-based one, BatchNorm2d outside a multi-process group
    from dhvtlib.models.norms import AllReduceSyncBatchNorm2d

    ref = create_model("dhvt_tiny_cifar_patch4", depth=1)
    m = convert_sope_sync_batchnorm(create_model("dhvt_tiny_cifar_patch4", depth=1), native=False)
    m.load_state_dict(ref.state_dict())
    assert isinstance(m.patch_embed.proj[0][1], AllReduceSyncBatchNorm2d) and list(m.state_dict()) == \
        list(ref.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(m.train()(x), ref.train()(x))


@pytest.mark.parametrize("name,overrides", [
    ("dhvt_tiny_cifar_patch4", {}), ("dhvt_tiny_cifar_patch2", {}), ("dhvt_tiny_domain_patch16", {"img_size": 64}),
    ("dhvt_tiny_cifar_patch4", {"daff_token_mixer": "avgpool"}), ("dhvt_tiny_cifar_patch4", {"daff_norm": "ln"}),
    ("deit_tiny_cifar_patch4", {})])
def test_fuse_batchnorm_keeps_eval_logits(name, overrides):
    torch.manual_seed(0)
    m = create_model(name, depth=2, **overrides).train()
    size = m.config["img_size"]
    with torch.no_grad():
        for _ in range(3):  # move the running statistics away from their initial values
            m(torch.randn(8, 3, size, size) * 2 + 0.5)
    m.eval()
    x = torch.randn(4, 3, size, size)
    n_bn = sum(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())
    fused = fuse_batchnorm(m)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), m(x), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in fused.modules())
    assert sum(isinstance(mod, nn.BatchNorm2d) for mod in m.modules()) == n_bn  # the original is untouched
    with pytest.raises(ValueError, match="folded into its convs"):
        fused.train()
    m.train()  # and still trains


def test_reset_classifier():
    m = create_model("dhvt_tiny_cifar_patch4")
    m.reset_classifier(345)
    assert m.head.out_features == 345 and m.config["num_classes"] == 345


# ------------------------------------------------------------------ profile
def test_profile_depthwise_conv_counted_at_true_cost():
    m = DHVT(img_size=32, patch_size=4, embed_dim=64, depth=1, num_heads=4, num_classes=10)
    p = profile(m)
    C, Hd, s, N = 64, 256, 8, 65
    sope = 16 * 16 * 3 * 32 * 9 + 8 * 8 * 32 * 64 * 9
    daff = s * s * (C * Hd + Hd * 9 + Hd * C)  # conv1, depthwise conv2 (9 per channel), conv3
    assert p.by_type["conv"] == sope + daff
    L = N + 4
    linear = L * C * 3 * C + L * C * C + 4 * 16 * C + (C * 16 + 16 * C) + C * 10
    assert p.by_type["linear"] == linear
    assert p.by_type["attention"] == 2 * L * L * C
    assert p.params == sum(q.numel() for q in m.parameters())


def test_profile_matches_torch_flop_counter_on_explicit_attention():
    m = create_model("dhvt_tiny_cifar_patch4").eval()
    with torch.no_grad(), m.keep_attention(), FlopCounterMode(display=False) as fc:
        m(torch.zeros(1, 3, 32, 32))
    assert fc.get_total_flops() == 2 * profile(m).macs  # torch counts a multiply-add as 2 FLOPs
    assert round(profile(m).gflops, 2) == 0.39


def test_package_exposes_version_and_models():
    assert dhvtlib.__version__ and set(dhvtlib.list_models()) == set(VARIANTS) | set(dhvtlib.models.CNN_VARIANTS)
