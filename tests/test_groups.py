"""Virtual GPUs: DAFF BatchNorm and Mixup per official GPU, SOPE BatchNorm over the whole batch.
One process with G groups equals the official G-process run (torchrun, gloo) for a training step."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dhvtlib.run.build import GroupMixup, groups_per_process, set_bn_splits, use_virtual_gpus
from dhvtlib.models import create_model, param_groups_weight_decay
from dhvtlib.models.ablations import ABLATIONS
from dhvtlib.models.norms import SplitBatchNorm2d
from dhvtlib.recipe import PAPER_PRESETS, PRESETS, resolve

ROOT = Path(__file__).resolve().parents[1]


def one_step_setup(kind: str = "dhvt"):
    """A small DHVT (kind 'dhvt') or small-image ResNet-18 (kind 'resnet') in float64 (no drop path), one global
    batch of 8 images and an AdamW factory; the same in every process (also used by groups_worker.py)."""
    torch.manual_seed(0)
    if kind == "resnet":
        model = create_model("resnet18_cifar", img_size=16, width=8, num_classes=10).double().train()
    else:
        model = create_model("dhvt_tiny_cifar_patch4", img_size=16, embed_dim=32, depth=2, num_heads=4,
                             num_classes=10, drop_path_rate=0.0).double().train()
    x = torch.randn(8, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    return model, x, y, lambda m: torch.optim.AdamW(param_groups_weight_decay(m, 0.05), lr=1e-3)


# ------------------------------------------------------------------------------------------------ SplitBatchNorm2d
@pytest.mark.parametrize("channels_last", [False, True])
def test_split_batchnorm_equals_one_batchnorm_per_group(channels_last):
    torch.manual_seed(0)
    x = torch.randn(12, 5, 4, 4, dtype=torch.float64) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    split = SplitBatchNorm2d(5, num_splits=3).double()
    nn.init.normal_(split.weight)
    nn.init.normal_(split.bias)
    refs = [nn.BatchNorm2d(5).double() for _ in range(3)]
    for r in refs:
        r.load_state_dict(split.state_dict())
    xs = x.clone().requires_grad_()
    out = split(xs)
    xr = [x[g::3].clone().requires_grad_() for g in range(3)]
    ref_out = [r(xi) for r, xi in zip(refs, xr)]
    for g in range(3):  # group g = items g, g + 3, ...
        torch.testing.assert_close(out[g::3], ref_out[g], rtol=0, atol=1e-12)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    sum((o * w[g::3]).sum() for g, o in enumerate(ref_out)).backward()
    for g in range(3):
        torch.testing.assert_close(xs.grad[g::3], xr[g].grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(split.weight.grad, sum(r.weight.grad for r in refs), rtol=0, atol=1e-12)
    torch.testing.assert_close(split.bias.grad, sum(r.bias.grad for r in refs), rtol=0, atol=1e-12)
    # running statistics: group 0's (official rank 0's buffers), num_batches_tracked counted once
    torch.testing.assert_close(split.running_mean, refs[0].running_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(split.running_var, refs[0].running_var, rtol=0, atol=1e-12)
    assert split.num_batches_tracked.item() == 1
    split.eval()
    refs[0].eval()
    # eval: running statistics, whole batch (the same maths; with several threads the kernels may sum in another
    # order, so equal to float64 rounding rather than bit for bit)
    torch.testing.assert_close(split(x), refs[0](x), rtol=0, atol=1e-12)
    assert list(split.state_dict()) == list(nn.BatchNorm2d(5).state_dict())


def test_split_batchnorm_with_one_group_is_batchnorm_and_errors_are_clear():
    x = torch.randn(6, 4, 3, 3)
    a, b = SplitBatchNorm2d(4), nn.BatchNorm2d(4)
    assert torch.equal(a(x), b(x)) and torch.equal(a.running_var, b.running_var)
    a.num_splits = 4
    with pytest.raises(ValueError, match="a batch of 6 images cannot be split into 4 per-GPU groups"):
        a(x)
    with pytest.raises(ValueError, match="groups 0 must be a positive integer"):
        set_bn_splits(create_model("dhvt_tiny_cifar_patch4", depth=1), 0)


def test_only_daff_batchnorms_are_split():
    model = create_model("dhvt_tiny_cifar_patch4", depth=3)
    assert set_bn_splits(model, 2) == 9  # bn1, bn2, bn3 in each of 3 blocks
    assert all(m.num_splits == 2 for m in model.modules() if isinstance(m, SplitBatchNorm2d))
    sope_bns = [m for m in model.patch_embed.modules() if isinstance(m, nn.BatchNorm2d)]
    assert sope_bns and not any(isinstance(m, SplitBatchNorm2d) for m in sope_bns)  # SOPE: whole batch (synced)
    assert set_bn_splits(create_model("deit_tiny_cifar_patch4", depth=1), 2) == 0


# ------------------------------------------------------------------------------------------------ Mixup
def test_group_mixup_draws_one_lambda_per_group_and_mixes_within_it():
    from timm.data import Mixup

    def mixup():
        return Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, mode="batch", label_smoothing=0.0, num_classes=8)

    x = torch.arange(8, dtype=torch.float64).view(8, 1, 1, 1).expand(8, 1, 2, 2).contiguous()
    y = torch.arange(8)
    np.random.seed(0)
    xm, ym = GroupMixup(mixup(), 2)(x.clone(), y)
    np.random.seed(0)  # the same draws, made group by group as the official GPUs make them on their own batches
    ref = [mixup()(x[g::2].clone(), y[g::2]) for g in range(2)]
    for g in range(2):
        assert torch.equal(xm[g::2], ref[g][0]) and torch.equal(ym[g::2], ref[g][1])
        # each group mixes with its own flipped batch only: item i of group g pairs with group g's item -1-i
        assert set(ym[g::2].nonzero()[:, 1].tolist()) == set(y[g::2].tolist())
    lam = [ym[g, y[g]].item() for g in range(2)]  # target weight of each group's first item
    assert lam[0] != lam[1]
    with pytest.raises(ValueError, match="a batch of 7 images cannot be split into 2 per-GPU groups"):
        GroupMixup(mixup(), 2)(x[:7], y[:7])


# ------------------------------------------------------------------------------------------------ recipe and DDP
def test_paper_presets_use_the_official_per_gpu_batch():
    for name in PAPER_PRESETS:  # the shipped scripts: per-GPU batch x 2 GPUs
        r = PRESETS[name]
        assert r.virtual_gpus == 2 and r.per_gpu_batch == r.batch_size // 2
    assert PRESETS["cifar100"].per_gpu_batch == 256 and PRESETS["imagenet"].per_gpu_batch == 128
    assert PRESETS["quick"].virtual_gpus == PRESETS["smoke"].virtual_gpus == 1
    for bs in (128, 256, 512):  # Table 11's total batch over the 2 official GPUs
        row = ABLATIONS[f"table11/bn_bn_bs{bs}"]
        assert resolve("ablation", **row.recipe).per_gpu_batch == bs // 2
    with pytest.raises(ValueError, match="virtual_gpus 3 must be a positive integer dividing batch_size 512"):
        resolve("cifar100", virtual_gpus=3)
    with pytest.raises(ValueError, match="the per-GPU batch 3 .* must be even with mixup"):
        resolve("quick", batch_size=6, virtual_gpus=2)


def test_groups_per_process_with_ddp():
    assert groups_per_process(2, 1) == 2 and groups_per_process(2, 2) == 1 and groups_per_process(8, 2) == 4
    assert groups_per_process(1, 4) == 1  # off
    with pytest.raises(ValueError, match="virtual_gpus 2 cannot be shared by 4 processes"):
        groups_per_process(2, 4)
    model = create_model("dhvt_tiny_cifar_patch4", depth=1)
    fn, groups = use_virtual_gpus(model, lambda x, y: (x, y), 4, world_size=2)
    assert groups == 2 and isinstance(fn, GroupMixup) and model.blocks[0].mlp.bn1.num_splits == 2
    assert use_virtual_gpus(model, None, 1, 1) == (None, 1) and model.blocks[0].mlp.bn1.num_splits == 1


def _one_process_step(groups: int, kind: str = "dhvt"):
    model, x, y, make_opt = one_step_setup(kind)
    set_bn_splits(model, groups)
    opt = make_opt(model)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return {"loss": loss.detach(), "grads": {k: p.grad for k, p in model.named_parameters()},
            "state": model.state_dict()}


@pytest.mark.slow
@pytest.mark.parametrize("groups_per_proc", [1, 2], ids=["2gpus_as_2procs", "4gpus_as_2procs_x_2groups"])
def test_one_process_with_groups_equals_official_processes(groups_per_proc, tmp_path):
    """One process with 2 (4) groups == 2 processes (x 2 groups each): DAFF BN per GPU, SOPE BN synchronised,
    DDP-averaged gradients; loss, every gradient and the updated parameters and BN buffers agree to 1e-6."""
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(ROOT / "tests" / "groups_worker.py"), str(out), str(groups_per_proc)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ref = torch.load(out, weights_only=True)
    mine = _one_process_step(2 * groups_per_proc)
    torch.testing.assert_close(mine["loss"], ref["loss"], rtol=0, atol=1e-6)
    for k in ref["grads"]:
        torch.testing.assert_close(mine["grads"][k], ref["grads"][k], rtol=0, atol=1e-6, msg=k)
    for k in ref["state"]:  # parameters after the step, and BN running statistics (DAFF: GPU 0's; SOPE: global)
        torch.testing.assert_close(mine["state"][k], ref["state"][k], rtol=0, atol=1e-6, msg=k)
    # whole-batch DAFF statistics are measurably different (what Table 11 measures): the test has teeth
    whole = _one_process_step(1)
    assert (whole["state"]["blocks.0.mlp.bn1.running_mean"] - ref["state"]["blocks.0.mlp.bn1.running_mean"]
            ).abs().max() > 1e-4


@pytest.mark.slow
def test_resnet_with_groups_equals_official_processes(tmp_path):
    """The CNN baseline's BatchNorms (all of them) are per GPU, as plain BatchNorm on each official GPU: one process
    with virtual_gpus=2 equals 2 gloo processes (DDP) for a training step, to 1e-6."""
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(ROOT / "tests" / "groups_worker.py"), str(out), "1", "resnet"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ref = torch.load(out, weights_only=True)
    model = one_step_setup("resnet")[0]
    fn, groups = use_virtual_gpus(model, None, 2)
    assert groups == 2 and set_bn_splits(model, 2) == 20  # every BN of the ResNet-18 (stem, blocks, downsamples)
    mine = _one_process_step(2, "resnet")
    torch.testing.assert_close(mine["loss"], ref["loss"], rtol=0, atol=1e-6)
    for k in ref["grads"]:
        torch.testing.assert_close(mine["grads"][k], ref["grads"][k], rtol=0, atol=1e-6, msg=k)
    for k in ref["state"]:  # parameters after the step and BN running statistics (GPU 0's)
        torch.testing.assert_close(mine["state"][k], ref["state"][k], rtol=0, atol=1e-6, msg=k)
    whole = _one_process_step(1, "resnet")  # whole-batch statistics differ: the test has teeth
    assert (whole["state"]["layer1.0.bn1.running_mean"] - ref["state"]["layer1.0.bn1.running_mean"]
            ).abs().max() > 1e-4
