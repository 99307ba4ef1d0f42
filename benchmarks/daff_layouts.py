"""DAFF in each `daff_layout` (tokens, channels_last, nchw) against the official code's DAFF, same weights, same
process: the median of alternating rounds and each layout's speed relative to the official one. `--scope block`
times one DAFF block; `--scope model` the whole DHVT (`--model`) with every DAFF in that layout against the
official model (benchmarks/official_dhvt.py), which is what the choice is for. The official DAFF reshapes and
permutes its tokens into a channels_last-strided view, so its convolutions already run channels_last; 'nchw'
(a contiguous copy) is the slowest form, not the official one. This is how `daff_layout='auto'` was chosen: rerun
it on a new device or precision before changing the choice (dhvtlib/models/layers.py, DAFF._layout).

    python benchmarks/daff_layouts.py --scope model --precision fp32 bf16 --mode train infer --threads 2
    python benchmarks/daff_layouts.py --precision fp32 bf16 --mode train --threads 1
    python benchmarks/daff_layouts.py --device cuda --precision fp32 bf16 fp16 --bn-groups 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dhvtlib.run.loop import autocast  # noqa: E402
from dhvtlib.files import write_json  # noqa: E402
from dhvtlib.run.build import set_bn_splits  # noqa: E402
import dhvtlib  # noqa: E402
from dhvtlib.models.layers import DAFF, DAFF_LAYOUTS  # noqa: E402
from official_dhvt import DAFF as OfficialDAFF, OfficialDHVT  # noqa: E402
from throughput import make_step, median_seconds, provenance  # noqa: E402

LAYOUTS = [lay for lay in DAFF_LAYOUTS if lay != "auto"]


def block_steps(args, device: torch.device, precision: str, mode: str) -> dict:
    """One DAFF block per layout and the official one: a call (forward, + backward in train mode) each."""
    torch.manual_seed(0)
    ref = DAFF(args.dim, args.dim * 4)
    blocks = {}
    for layout in LAYOUTS:
        m = DAFF(args.dim, args.dim * 4, layout=layout)
        m.load_state_dict(ref.state_dict())
        set_bn_splits(m, args.bn_groups)
        blocks[layout] = m
    blocks["official"] = OfficialDAFF(args.dim, args.dim * 4)
    blocks["official"].load_state_dict(ref.state_dict())
    x0 = torch.randn(args.batch, args.grid ** 2 + 1, args.dim, device=device)

    def step(m):
        x = x0.clone().requires_grad_(mode == "train")
        with torch.set_grad_enabled(mode == "train"), autocast(device, precision):
            y = m(x)
        if mode == "train":
            y.float().square().mean().backward()

    return {name: (lambda m=m.to(device).train(mode == "train"): step(m)) for name, m in blocks.items()}


def model_steps(args, device: torch.device, precision: str, mode: str) -> dict:
    """The whole model with every DAFF in each layout, and the official model: a training step (AdamW) or an
    inference batch each (`throughput.make_step`)."""
    torch.manual_seed(0)
    ref = dhvtlib.create_model(args.model)
    models = {}
    for layout in LAYOUTS:
        m = dhvtlib.create_model(args.model, daff_layout=layout)
        m.load_state_dict(ref.state_dict())
        set_bn_splits(m, args.bn_groups)
        models[layout] = m
    models["official"] = OfficialDHVT.from_dhvt(ref)
    c = ref.config
    x = torch.randn(args.batch, 3, c["img_size"], c["img_size"], device=device)
    y = torch.randint(0, c["num_classes"], (args.batch,), device=device)
    return {name: make_step(m.to(device), mode, x, y, precision) for name, m in models.items()}


def time_layouts(args, device: torch.device, precision: str, mode: str) -> dict[str, float]:
    """Median milliseconds per call of each layout and of the official code, rounds interleaved."""
    steps = (model_steps if args.scope == "model" else block_steps)(args, device, precision, mode)
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    return {name: v * 1e3 for name, v in median_seconds(steps, args.rounds, args.steps, device).items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scope", choices=["block", "model"], default="block")
    ap.add_argument("--model", default="dhvt_tiny_cifar_patch4", help="--scope model: a default DHVT variant")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", nargs="+", choices=["fp32", "bf16", "fp16"], default=["fp32", "bf16"])
    ap.add_argument("--mode", nargs="+", choices=["train", "infer"], default=["train", "infer"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--dim", type=int, default=192, help="DAFF width (hidden = 4x); DHVT-T: 192")
    ap.add_argument("--grid", type=int, default=8, help="patch grid side; CIFAR at patch 4: 8")
    ap.add_argument("--bn-groups", type=int, default=1, help="per-GPU BatchNorm groups (virtual_gpus)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="calls per timed round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = dict(scope=args.scope, batch=args.batch, bn_groups=args.bn_groups, threads=args.threads, rows={},
                  **({"model": args.model} if args.scope == "model" else {"dim": args.dim, "grid": args.grid}))
    for precision in args.precision:
        for mode in args.mode:
            ms = time_layouts(args, device, precision, mode)
            row = {f"{lay}_ms": round(v, 2) for lay, v in ms.items()}
            row.update({f"{lay}_vs_official": round(ms["official"] / v, 3) for lay, v in ms.items()
                        if lay != "official"})
            result["rows"][f"{precision}/{mode}"] = row
            print(f"{args.scope} {precision:4s} {mode:5s} batch {args.batch} groups {args.bn_groups}: " + " | ".join(
                f"{lay} {v:7.1f} ms ({ms['official'] / v:.2f}x official)" for lay, v in ms.items()), flush=True)
    result.update(provenance(device, started))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
