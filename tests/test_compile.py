"""`compile` as a recipe option: a compiled smoke run is recorded as compiled and, stopped mid-epoch by a real
signal and resumed, ends bitwise equal to an uninterrupted compiled run on CPU (inductor's kernels are the same
code for the same graphs; every RNG state and the sampler position are restored as in an eager run)."""
from __future__ import annotations

import json

import pytest
import torch

from dhvtlib.checkpoint import load_checkpoint
from dhvtlib.files import sha256
from dhvtlib.run.progress import RunInterrupted
from dhvtlib.recipe import resolve
from dhvtlib.run import build
from dhvtlib.run.train import run
from clitools import read_metrics, signal_at

TINY = dict(embed_dim=16, depth=1, num_heads=2, patch_size=4)  # keeps inductor's compile short


def test_compile_is_off_by_default_and_checked(monkeypatch):
    assert resolve("smoke").compile is False and resolve("cifar100").compile is False
    with pytest.raises(ValueError, match="compile must be true or false"):
        resolve("smoke", compile="yes")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="compile=True needs a C\\+\\+ compiler on this CPU"):
        build.compile_model(torch.nn.Linear(2, 2), torch.device("cpu"))


@pytest.mark.slow
def test_compiled_smoke_run_is_recorded_and_resumes_bitwise(fmnist, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # the three runs share the kernels
    kw = dict(data_dir=fmnist, progress=False, verbose=False, compile=True, model_kwargs=TINY)
    torch._dynamo.reset()
    ref = run("smoke", output=tmp_path / "ref", **kw)
    assert ref["status"] == "completed" and ref["config"]["compile"] is True
    assert json.loads((tmp_path / "ref" / "config.json").read_text())["compile"] is True
    out = tmp_path / "stopped"
    torch._dynamo.reset()
    with monkeypatch.context() as m:
        signal_at(1, 3, "INT", patch=m.setattr)  # after step 3 of epoch 1 (the last checkpoint: step 2)
        with pytest.raises(RunInterrupted):
            run("smoke", output=out, **kw)
    assert load_checkpoint(out / "checkpoint-last.pt")["epoch_state"]["step"] == 3
    torch._dynamo.reset()
    resumed = run(None, output=out, resume=True, data_dir=fmnist, progress=False, verbose=False)
    assert resumed["status"] == "completed" and resumed["config"]["compile"] is True  # taken from the saved run
    assert read_metrics(out) == read_metrics(tmp_path / "ref")
    a, b = load_checkpoint(tmp_path / "ref" / "checkpoint-last.pt"), load_checkpoint(out / "checkpoint-last.pt")
    assert list(a["model"]) == list(b["model"]) and not any("_orig_mod" in k for k in a["model"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert sha256(tmp_path / "ref" / "model.safetensors") == sha256(out / "model.safetensors")
