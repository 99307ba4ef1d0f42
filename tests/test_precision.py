"""precision='auto': what it picks on CUDA, on CPUs with and without native bf16, on resume; where it
is the default; what the run records."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dhvtlib.run import runtime as prec
from dhvtlib import cli
from dhvtlib import evaluate as evaluate_mod
from dhvtlib.run.runtime import cpu_bf16_capability, resolve_precision
from dhvtlib.recipe import PRESETS, Recipe
from dhvtlib.run.train import run
from clitools import signal_at


def _caps(monkeypatch, **flags):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", **flags})


def test_auto_on_cuda_is_the_official_amp_and_explicit_values_are_kept():
    assert resolve_precision("auto", torch.device("cuda", 0))[0] == "fp16"
    assert "grad scaler" in resolve_precision("auto", "cuda")[1]
    for p in ("fp32", "bf16", "fp16"):
        assert resolve_precision(p, "cuda") == (p, f"requested precision={p!r}")
        assert resolve_precision(p, "cpu")[0] == p
    assert resolve_precision("auto", "meta")[0] == "fp32"
    with pytest.raises(ValueError, match=r"precision 'fp8' is not supported; use one of \('auto'"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("flags, native", [(dict(amx_bf16=True, avx512_bf16=True, avx2=True), True),
                                           (dict(avx512_bf16=True, avx512_f=True), True),
                                           (dict(avx512_f=True, avx2=True), False),
                                           (dict(avx2=True), False)])
def test_auto_on_cpu_follows_native_bf16(monkeypatch, flags, native):
    _caps(monkeypatch, **flags)
    has, what = cpu_bf16_capability()
    assert has is native
    chosen, reason = resolve_precision("auto", "cpu")
    assert chosen == ("bf16" if native else "fp32") and what in reason
    if not native:
        assert "emulated" in reason


def test_auto_on_this_machine_agrees_with_its_cpu_flags():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    native = any(f in flags.split() for f in ("amx_bf16", "avx512_bf16", "bf16", "svebf16"))  # x86, Arm
    assert resolve_precision("auto", "cpu")[0] == ("bf16" if native else "fp32")


def test_auto_is_the_default_everywhere():
    assert Recipe().precision == "auto" and all(r.precision == "auto" for r in PRESETS.values())
    assert cli.train_parser().parse_args([]).precision is None  # CLI: the preset's value, i.e. auto
    import inspect

    assert inspect.signature(evaluate_mod.evaluate_checkpoint).parameters["precision"].default == "auto"


@pytest.mark.parametrize("fmnist", [dict(train_per_class=8)], indirect=True, ids=["8-per-class"])
def test_run_records_the_choice_and_resume_keeps_it(fmnist, tmp_path, monkeypatch):
    """The config keeps what was asked ('auto'); the manifest and the checkpoint record what was chosen and why; a
    resumed 'auto' run keeps its precision even where 'auto' would now choose another."""
    _caps(monkeypatch, avx2=True)
    out = tmp_path / "run"
    signal_at(0, 2, "INT", patch=monkeypatch.setattr)  # Ctrl-C after step 2 of epoch 0
    with pytest.raises(KeyboardInterrupt):
        run("smoke", output=out, data_dir=fmnist, progress=False, verbose=False, epochs=1)
    monkeypatch.undo()  # (also puts train_one_epoch back)
    ck = torch.load(out / "checkpoint-last.pt", weights_only=False)
    assert ck["config"]["precision"] == "auto" and ck["precision"] == "fp32"
    _caps(monkeypatch, amx_bf16=True)  # the same run resumed on an AMX machine
    assert resolve_precision("auto", "cpu")[0] == "bf16"
    with pytest.raises(ValueError, match=r"differs in \['precision'\]"):
        run("smoke", output=out, data_dir=fmnist, progress=False, verbose=False, epochs=1, resume=True,
            precision="bf16")
    m = run("smoke", output=out, data_dir=fmnist, progress=False, verbose=False, epochs=1, resume=True)
    assert m["status"] == "completed" and m["precision"] == "fp32" and "resumed" in m["precision_reason"]
    assert m["config"]["precision"] == "auto" and m["bn_groups_per_process"] == 1
    fresh = run("smoke", output=tmp_path / "fresh", data_dir=fmnist, progress=False, verbose=False, epochs=1)
    assert fresh["precision"] == "bf16" and "amx_bf16" in fresh["precision_reason"]


def test_capability_without_torch_query_reads_cpuinfo(monkeypatch):
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    has, what = cpu_bf16_capability()
    assert isinstance(has, bool) and what
    monkeypatch.setattr(prec, "Path", lambda _: type("P", (), {"read_text": lambda self: "flags\t: fpu avx2 amx_bf16\n"})())
    assert cpu_bf16_capability() == (True, "native bf16 (amx_bf16)")
