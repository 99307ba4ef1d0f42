"""DAFF on the token layout computes the official NCHW DAFF's function: in float64, for every ablation form, in
training (with and without per-GPU BatchNorm groups) and in eval, the same outputs, input and parameter gradients,
running statistics and state_dict."""
from __future__ import annotations

import pytest
import torch

from dhvtlib.run.build import set_bn_splits
from dhvtlib.models import create_model
from dhvtlib.models.layers import DAFF, _as_map, _as_rows

FORMS = [{}, dict(daff_norm="ln"), dict(daff_norm="none"), dict(daff_token_mixer="avgpool"),
         dict(daff_token_mixer="none"), dict(daff_se="all"), dict(daff_se="none"), dict(daff_dw_shortcut=False)]


@pytest.mark.parametrize("form", FORMS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "official")
@pytest.mark.parametrize("splits", [1, 2])
def test_token_layout_is_the_nchw_function_in_float64(form, splits):
    torch.manual_seed(0)
    models = {}
    for layout in ("nchw", "tokens", "channels_last"):
        m = create_model("dhvt_tiny_cifar_patch4", depth=2, embed_dim=48, num_heads=4, daff_layout=layout, **form)
        if models:
            m.load_state_dict(models["nchw"].state_dict())
        models[layout] = m.double()
        set_bn_splits(m, splits)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    for mode in ("train", "eval"):
        outs, grads = {}, {}
        for layout, m in models.items():
            m.train(mode == "train").zero_grad()
            xi = x.clone().requires_grad_()
            outs[layout] = m(xi)
            outs[layout].square().sum().backward()
            grads[layout] = [xi.grad] + [p.grad for p in m.parameters() if p.grad is not None]
        ref_sd = models["nchw"].state_dict()
        for layout in ("tokens", "channels_last"):
            torch.testing.assert_close(outs[layout], outs["nchw"], rtol=1e-12, atol=1e-12)
            assert len(grads[layout]) == len(grads["nchw"])
            for g, r in zip(grads[layout], grads["nchw"]):
                torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
            sd = models[layout].state_dict()
            assert list(sd) == list(ref_sd)
            for k in sd:  # running statistics and num_batches_tracked included
                torch.testing.assert_close(sd[k], ref_sd[k], rtol=1e-12, atol=1e-14, msg=k)


def test_token_views_do_not_copy():
    rows = torch.randn(2, 16, 8)
    grid = _as_map(rows, 4)
    assert grid.shape == (2, 8, 4, 4) and grid.data_ptr() == rows.data_ptr()
    assert grid.is_contiguous(memory_format=torch.channels_last)
    back = _as_rows(grid)
    assert back.data_ptr() == rows.data_ptr() and torch.equal(back, rows)
    daff = DAFF(8, 32, layout="tokens")
    torch.testing.assert_close(daff.conv1.weight.flatten(1), daff.conv1.weight[:, :, 0, 0])
    assert daff.conv1.weight.flatten(1).data_ptr() == daff.conv1.weight.data_ptr()
