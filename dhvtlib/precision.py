"""Which numeric precision a run uses: `resolve_precision(requested, device) -> (chosen, reason)`.

`precision="auto"` (every default: Recipe, dhvt-train, dhvt-eval, benchmarks) picks
  - CUDA: fp16 autocast + grad scaler, the official AMP (the official engine trains and evaluates under
    `torch.cuda.amp.autocast` with timm's NativeScaler); pass precision='bf16' for bf16 autocast;
  - a CPU with native bf16 (AMX, AVX512-BF16, or Arm's BF16 extension): bf16 autocast;
  - anything else (a CPU without native bf16, where bf16 is emulated and many times slower; other devices): fp32.
An explicit 'fp32', 'bf16' or 'fp16' is used as given. A resumed run keeps the precision it started with.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

__all__ = ["PRECISIONS", "check_precision", "resolve_precision", "cpu_bf16_capability"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16", "sve_bf16", "svebf16")  # x86 (AMX, AVX512), Arm


def cpu_bf16_capability() -> tuple[bool, str]:
    """(native bf16 on this CPU, the flags that say so, or a description of what the CPU has instead)."""
    flags: set[str] = set()
    caps_fn = getattr(getattr(torch, "cpu", None), "get_capabilities", None)  # torch >= 2.9
    if caps_fn is not None:
        flags = {k for k, v in caps_fn().items() if v is True}
    else:
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
    native = [f for f in _NATIVE_BF16_FLAGS if f in flags]
    if native:
        return True, "native bf16 (" + ", ".join(native) + ")"
    best = next((f for f in ("avx512_f", "avx512f", "avx2", "avx", "neon", "asimd") if f in flags), None)
    return False, f"no native bf16 ({best or 'no'} SIMD only: bf16 would be emulated)"


def check_precision(requested: str) -> str:
    """`requested` when it is one of PRECISIONS, else one sentence listing them."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r} is not supported; use one of {PRECISIONS}.")
    return requested


def resolve_precision(requested: str, device: torch.device | str, resumed: str | None = None) -> tuple[str, str]:
    """The precision to run in ('fp32', 'bf16' or 'fp16') and one sentence saying why.

    `resumed` is the precision a run being resumed used: 'auto' keeps it, so that a run continues as it started."""
    check_precision(requested)
    device = torch.device(device)
    if requested != "auto":
        return requested, f"requested precision={requested!r}"
    if resumed in PRECISIONS[1:]:
        return resumed, f"auto: the resumed run keeps the precision it started with ({resumed})"
    if device.type == "cuda":
        return "fp16", "auto on CUDA: the official AMP (fp16 autocast + grad scaler); pass precision='bf16' for bf16"
    if device.type == "cpu":
        native, what = cpu_bf16_capability()
        return ("bf16" if native else "fp32"), f"auto on CPU: {what}"
    return "fp32", f"auto on {device.type}: fp32 (no mixed-precision default for this device)"
