"""Parameters and forward FLOPs per image, and the variant table beside the paper's numbers.

FLOPs follow the convention of the paper's counters (DeepSpeed/fvcore): one multiply-add = one FLOP, counting
convolutions (grouped and depthwise convs at their true cost, k*k*C_in/groups per output), linear layers and the
two attention matmuls (QK^T and AV, over N + h tokens with head tokens); norms, activations, pooling and
element-wise ops are not counted. The table lists the DHVT/DeiT variants and the CNN baselines (patch and heads
'-'; dim = the CNN's stage-1 width). `python -m dhvtlib.models.profile` prints it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from ..paper import reported, reported_value
from . import create_model, list_models
from .cnn import CNN_VARIANTS
from .dhvt import VARIANTS
from .layers import Attention

__all__ = ["Profile", "profile", "count_params", "variant_table", "format_table"]


@dataclass(frozen=True)
class Profile:
    params: int
    macs: int  # multiply-accumulates per image (= the paper's "FLOPs")
    by_type: dict[str, int]

    @property
    def gflops(self) -> float:
        return self.macs / 1e9


def count_params(model: nn.Module) -> int:
    """Trainable and frozen parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def _conv_macs(m: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = m.kernel_size
    return out[0].numel() * (m.in_channels // m.groups) * kh * kw


def _linear_macs(m: nn.Linear, out: torch.Tensor) -> int:
    return out[0].numel() * m.in_features


def _attention_macs(m: Attention, inp: torch.Tensor) -> int:
    tokens = inp.shape[1] + (m.num_heads if m.head_tokens else 0)
    return 2 * m.num_heads * tokens * tokens * m.head_dim  # QK^T and AV


@torch.no_grad()
def profile(model: nn.Module, img_size: int | None = None, in_chans: int | None = None) -> Profile:
    """Count parameters and per-image MACs with one forward pass of a single image (eval mode, restored after)."""
    cfg = getattr(model, "config", {})
    img_size = img_size or cfg.get("img_size", 224)
    in_chans = in_chans or cfg.get("in_chans", 3)
    by_type: dict[str, int] = {"conv": 0, "linear": 0, "attention": 0}
    hooks = []

    def add(kind, fn):
        def hook(mod, inp, out):
            by_type[kind] += fn(mod, out if kind != "attention" else inp[0])
        return hook

    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(add("conv", _conv_macs)))
        elif isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(add("linear", _linear_macs)))
        elif isinstance(mod, Attention):
            hooks.append(mod.register_forward_hook(add("attention", _attention_macs)))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros(1, in_chans, img_size, img_size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return Profile(count_params(model), sum(by_type.values()), by_type)


def _paper_size(name: str) -> tuple[float | None, float | None]:
    """(params in M, GFLOPs) as the paper prints them: Table 17 for DHVT, Table 4's columns for DeiT, the CNN's
    own table row (Table 13 for the ResNet-50)."""
    if name.startswith("dhvt"):
        return reported_value("table17", name, "params_m"), reported_value("table17", name, "gflops")
    table, row = (CNN_VARIANTS[name].paper_row or (None, None)) if name in CNN_VARIANTS else ("table4", name)
    hit = [r for r in reported(table) if r["row"] == row] if table else []
    return (float(hit[0]["params_m"]), float(hit[0]["gflops"])) if hit else (None, None)


def variant_table(names: list[str] | None = None) -> list[dict]:
    """One row per registered model: our params and GFLOPs beside the official count and the paper's numbers."""
    rows = []
    for name in names or list_models():
        cfg = VARIANTS.get(name) or CNN_VARIANTS[name]
        prof = profile(create_model(name))
        paper_params, paper_gflops = _paper_size(name)
        cnn = name in CNN_VARIANTS
        rows.append(dict(model=name, dataset=cfg.dataset, img=cfg.input_size[-1],
                         patch="-" if cnn else cfg.arch["patch_size"],
                         dim=cfg.arch["width"] if cnn else cfg.arch["embed_dim"],
                         heads="-" if cnn else cfg.arch["num_heads"], classes=cfg.num_classes,
                         params=prof.params, official_params=None if cnn else cfg.official_params,
                         paper_params_m=paper_params, gflops=round(prof.gflops, 3), paper_gflops=paper_gflops))
    return rows


def _or_dash(v) -> str:
    return "-" if v is None else f"{v}"


def format_table(rows: list[dict]) -> str:
    """Markdown table of `variant_table` rows."""
    head = ("model", "img", "patch", "dim", "heads", "classes", "params", "official", "paper (M)", "GFLOPs",
            "paper GFLOPs")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        official = "-" if r["official_params"] is None else (
            f"{r['official_params']:,}" + (" (=)" if r["official_params"] == r["params"] else " (DIFFERS)"))
        lines.append("| " + " | ".join([
            r["model"], str(r["img"]), str(r["patch"]), str(r["dim"]), str(r["heads"]), str(r["classes"]),
            f"{r['params']:,}", official, _or_dash(r["paper_params_m"]), f"{r['gflops']:.2f}",
            _or_dash(r["paper_gflops"])])
            + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Parameters and GFLOPs (multiply-adds) of every variant vs the paper.")
    ap.add_argument("models", nargs="*", help="variant names (default: all)")
    args = ap.parse_args(argv)
    for n in args.models:
        if n not in list_models():
            ap.error(f"unknown model {n!r}; choose from {', '.join(list_models())}")
    print(format_table(variant_table(args.models or None)))
    print("\nGFLOPs = multiply-adds per image (conv incl. depthwise at k*k*C/groups, linear, attention matmuls), "
          "the convention of the paper's DeepSpeed counter; params exclude BatchNorm buffers.")


if __name__ == "__main__":
    main()
