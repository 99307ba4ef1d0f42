"""The CNN baselines: registered and built like the DHVT variants, the ResNet-50 of Tables 2/13 at the paper's
size, the small-image ResNet-18 form, weight-decay groups and drop path, a smoke run that saves and loads back
(safetensors, checkpoint, dhvt-eval), the profile row, and the efficiency study's budget and tables."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from timm.models.resnet import BasicBlock
from torch import nn

import dhvtlib
from dhvtlib import experiments, results
from dhvtlib.checkpoint import load_model
from dhvtlib.models import CNN, CNN_VARIANTS, create_model, list_models, matched_width, param_groups_weight_decay
from dhvtlib.models.norms import SplitBatchNorm2d
from dhvtlib.models.profile import format_table, profile, variant_table
from dhvtlib.evaluate import evaluate_checkpoint
from dhvtlib.evaluate import main as eval_main
from dhvtlib.run.train import run


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------ building
def test_registered_like_the_other_variants():
    assert set(CNN_VARIANTS) == {"resnet50_domain", "resnet18_cifar"}
    assert set(CNN_VARIANTS) <= set(list_models()) and set(dhvtlib.VARIANTS) <= set(list_models())
    m = timm.create_model("resnet18_cifar", num_classes=10, in_chans=1, width=8)
    assert isinstance(m, CNN) and m.variant == "resnet18_cifar" and m.config["num_classes"] == 10
    m = dhvtlib.create_model("resnet18_cifar", img_size=28, in_chans=1, num_classes=10, drop_path_rate=0.1,
                             drop_rate=0.0, width=8)
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("resnet18_cifar", pretrained=True)


def test_resnet50_domain_is_the_papers_resnet50():
    with torch.device("meta"):
        ours = create_model("resnet50_domain")
        ref = timm.create_model("resnet50", num_classes=345)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert round(_params(ours) / 1e6, 1) == 24.2  # Table 13's ResNet-50 column (345 classes)


def test_resnet50_domain_starts_as_torchvisions_and_splits_every_batchnorm():
    """Tables 2/13 name torchvision's ResNet-50: same layout, BN at 1/0 everywhere (zero_init_residual=False, so the
    last BN of each block is not zero-initialised); the small ResNet-18 keeps timm's zero-init. Every BN is a
    SplitBatchNorm2d (per virtual GPU) with BatchNorm2d's state_dict."""
    import torchvision

    torch.manual_seed(0)
    ours = create_model("resnet50_domain")
    ref = torchvision.models.resnet50(num_classes=345)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    bns = [m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 53 and all(isinstance(m, SplitBatchNorm2d) for m in bns)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in bns)
    assert ours.config["zero_init_last"] is False and ours.config["drop_path_rate"] == 0.0
    small = create_model("resnet18_cifar", width=8)
    assert not small.layer1[0].bn2.weight.any() and small.config["zero_init_last"] is True
    with pytest.raises(ValueError, match="zero_init_last 'no' must be true or false"):
        create_model("resnet18_cifar", zero_init_last="no")


def test_small_resnet18_has_the_cifar_stem_and_scales_by_width():
    m = create_model("resnet18_cifar", in_chans=1, num_classes=10)
    assert (m.conv1.kernel_size, m.conv1.stride) == ((3, 3), (1, 1)) and isinstance(m.maxpool, nn.Identity)
    assert m.layer1[0].downsample is None  # stage 1 keeps the stem's width, as ResNet-18
    assert _params(m) == 11_172_810  # the usual CIFAR ResNet-18 (11,173,962 with 3 channels), 1 channel here
    feats = m.forward_features(torch.randn(1, 1, 28, 28))
    assert feats.shape == (1, 512, 4, 4)  # 28 -> 28 -> 14 -> 7 -> 4: no early downsampling
    small = create_model("resnet18_cifar", in_chans=1, num_classes=10, width=10)
    assert [small.layer1[0].conv1.in_channels, small.layer4[-1].conv2.out_channels] == [10, 80]
    target = _params(create_model("dhvt_tiny_cifar_patch4", in_chans=1, num_classes=10, img_size=28, embed_dim=64,
                                  depth=4, num_heads=4))
    w = matched_width(target, in_chans=1, num_classes=10)
    assert w == 10 and abs(_params(small) / target - 1) < 0.15


def test_weight_decay_groups_and_drop_path():
    m = create_model("resnet18_cifar", width=8, drop_path_rate=0.2)
    no_decay, decay = param_groups_weight_decay(m, 0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    assert all(p.ndim == 1 for p in no_decay["params"])  # every BN weight/bias and the fc bias
    assert {names[id(p)] for p in no_decay["params"]} >= {"bn1.weight", "bn1.bias", "fc.bias"}
    assert all(p.ndim > 1 for p in decay["params"]) and decay["weight_decay"] == 0.05
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in m.modules() if isinstance(b, BasicBlock)]
    assert rates == pytest.approx([0.2 * i / 7 for i in range(8)])  # timm: linear in block index, 0 first


@pytest.mark.parametrize("call,match", [
    (lambda: create_model("resnet34_cifar"), "unknown model 'resnet34_cifar'"),
    (lambda: create_model("resnet18_cifar", embed_dim=64), r"unknown argument\(s\) \['embed_dim'\]"),
    (lambda: create_model("resnet18_cifar", width=0), "width 0 must be a positive integer"),
    (lambda: create_model("resnet18_cifar", stem="deep"), "stem 'deep' is not supported"),
    (lambda: create_model("resnet18_cifar", block="dense"), "block 'dense' is not supported"),
    (lambda: create_model("resnet18_cifar", width=8)(torch.randn(1, 1, 32, 32)), r"input of shape \(1, 1, 32, 32\)"),
])
def test_bad_arguments_raise_one_clear_sentence(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------ the run, saving and loading back
def test_smoke_run_saves_and_loads_back(fmnist, tmp_path, capsys):
    out = tmp_path / "run"
    m = run("smoke", output=out, data_dir=str(fmnist), model="resnet18_cifar", model_kwargs={"width": 4},
            progress=False, verbose=False)
    assert m["status"] == "completed" and m["model"] == "resnet18_cifar"
    cfg = m["model_config"]
    assert cfg["width"] == 4 and cfg["in_chans"] == 1 and cfg["img_size"] == 28 and cfg["drop_path_rate"] == 0.1
    assert "embed_dim" not in cfg  # the smoke preset's transformer width is not a CNN argument
    model = load_model(out / "model.safetensors")
    assert isinstance(model, CNN) and model.config == cfg and m["params"] == _params(model)
    for path in (out / "model.safetensors", out / "checkpoint-best.pt"):
        res = evaluate_checkpoint(path, "fashion_mnist", data_dir=str(fmnist), device="cpu")
        assert res["model"] == "resnet18_cifar" and res["test_images"] == 40 and 0 <= res["top1"] <= 100
    capsys.readouterr()
    eval_main(["--checkpoint", str(out / "model.safetensors"), "--dataset", "fashion_mnist", "--data-dir", str(fmnist),
               "--device", "cpu"])  # dhvt-eval
    assert json.loads(capsys.readouterr().out)["model"] == "resnet18_cifar"


def test_cnn_with_a_transformer_argument_fails_clearly(fmnist, tmp_path):
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['num_heads'\] for resnet18_cifar"):
        run("smoke", output=tmp_path / "r", data_dir=str(fmnist), model="resnet18_cifar",
            model_kwargs={"num_heads": 2}, progress=False, verbose=False)


# ------------------------------------------------------------------ profile
def test_profile_rows():
    rows = {r["model"]: r for r in variant_table(["resnet50_domain", "resnet18_cifar"])}
    r50 = rows["resnet50_domain"]
    assert r50["params"] == 24_214_937 and r50["paper_params_m"] == 24.2 and r50["paper_gflops"] == 3.8
    assert 4.0 < r50["gflops"] < 4.2  # torchvision's ResNet-50 count; the paper's counter printed 3.8
    assert rows["resnet18_cifar"]["patch"] == "-" and 0.5 < rows["resnet18_cifar"]["gflops"] < 0.6
    assert "| resnet50_domain | 224 | - | 64 | - | 345 | 24,214,937 |" in format_table(list(rows.values()))
    assert profile(create_model("resnet18_cifar", width=8, in_chans=1, img_size=28)).by_type["attention"] == 0


def test_domainnet_runs_train_the_papers_resnet50_row():
    assert len(experiments.domainnet_runs(["clipart"], ["dhvt_tiny_domain_patch16", "resnet50_domain"])) == 2
    spec = experiments.domainnet_runs(["clipart"], ["resnet50_domain"])[0]
    assert (spec.model, spec.tag, spec.paper_top1) == ("resnet50_domain", "table13/resnet50/clipart", 71.90)
    assert spec.preset.drop_path == 0.0  # torchvision's ResNet-50: no stochastic depth
    assert experiments.domainnet_runs(["clipart"], ["dhvt_tiny_domain_patch16"])[0].preset == "domainnet"
    assert results.paper_lookup(spec.tag)[0] == 71.90
