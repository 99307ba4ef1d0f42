"""One DAFF block in each `daff_layout` (tokens, channels_last, nchw), same weights, same process: the median of
alternating rounds and each layout's ratio to NCHW. This is how `daff_layout='auto'` was chosen: rerun it on a new
device or precision before changing the choice (dhvtlib/models/layers.py, DAFF._layout).

    python benchmarks/daff_layouts.py --precision fp32 bf16 --mode train --threads 1
    python benchmarks/daff_layouts.py --device cuda --precision fp32 bf16 fp16 --bn-groups 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dhvtlib.run.loop import autocast  # noqa: E402
from dhvtlib.files import write_json  # noqa: E402
from dhvtlib.run.build import set_bn_splits  # noqa: E402
from dhvtlib.models.layers import DAFF, DAFF_LAYOUTS  # noqa: E402
from throughput import provenance, sync  # noqa: E402

LAYOUTS = [lay for lay in DAFF_LAYOUTS if lay != "auto"]


def time_layouts(args, device: torch.device, precision: str, mode: str) -> dict[str, float]:
    """Median milliseconds per call (forward, + backward in train mode) of each layout."""
    torch.manual_seed(0)
    ref = DAFF(args.dim, args.dim * 4)
    blocks = {}
    for layout in LAYOUTS:
        m = DAFF(args.dim, args.dim * 4, layout=layout)
        m.load_state_dict(ref.state_dict())
        set_bn_splits(m, args.bn_groups)
        blocks[layout] = m.to(device).train(mode == "train")
    x0 = torch.randn(args.batch, args.grid ** 2 + 1, args.dim, device=device)

    def step(m):
        x = x0.clone().requires_grad_(mode == "train")
        with torch.set_grad_enabled(mode == "train"), autocast(device, precision):
            y = m(x)
        if mode == "train":
            y.float().square().mean().backward()

    for m in blocks.values():
        for _ in range(args.warmup):
            step(m)
    times: dict[str, list[float]] = {lay: [] for lay in blocks}
    for _ in range(args.rounds):
        for lay, m in blocks.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(m)
            sync(device)
            times[lay].append((time.perf_counter() - t0) / args.steps)
    return {lay: statistics.median(t) * 1e3 for lay, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    result = dict(batch=args.batch, dim=args.dim, grid=args.grid, bn_groups=args.bn_groups, threads=args.threads,
                  rows={})
    for precision in args.precision:
        for mode in args.mode:
            ms = time_layouts(args, device, precision, mode)
            row = {f"{lay}_ms": round(v, 2) for lay, v in ms.items()}
            row.update({f"{lay}_vs_nchw": round(ms["nchw"] / v, 3) for lay, v in ms.items() if lay != "nchw"})
            result["rows"][f"{precision}/{mode}"] = row
            print(f"{precision:4s} {mode:5s} batch {args.batch} groups {args.bn_groups}: " + " | ".join(
                f"{lay} {v:7.1f} ms ({ms['nchw'] / v:.2f}x nchw)" for lay, v in ms.items()), flush=True)
    result.update(provenance(device, started))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
