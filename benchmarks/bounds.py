"""What each DHVT component costs, as training/inference throughput ratios to timm's ViT (same process).

Each row is the model with one or more DHVT parts removed through its ablation arguments, so a row's ratio is an
upper bound on what any implementation of the removed parts could reach: e.g. `daff_norm='none'` is DHVT with
free DAFF BatchNorms. The machine's memory bandwidth (a 2-operand add and a copy over a DAFF-sized tensor) is
printed too, since DAFF's extras (BatchNorms, depthwise conv, second GELU) are memory-bound on a CPU.

    python benchmarks/bounds.py --model dhvt_tiny_cifar_patch4 --batch 128 --threads 2 --json bounds.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dhvtlib  # noqa: E402
from throughput import bench, provenance, reference_vit  # noqa: E402

# name -> ablation overrides; each removes DHVT parts from the full model
ROWS = {
    "dhvt": {},
    "daff_no_bn": dict(daff_norm="none"),
    "daff_no_dwconv_path": dict(daff_token_mixer="none"),
    "daff_no_bn_no_dwconv": dict(daff_norm="none", daff_token_mixer="none"),
    "mlp_instead_of_daff": dict(mlp_layer="mlp"),
    "no_head_tokens": dict(head_tokens=False),
    "linear_patch_embed": dict(embed_layer="linear"),
}


def bandwidth_gb_s(numel: int, reps: int = 30) -> dict[str, float]:
    """Best-of-`reps` GB/s of out-of-place copy (read + write) and add (2 reads + write) over `numel` floats."""
    a, b, out = torch.randn(numel), torch.randn(numel), torch.empty(numel)
    res = {}
    for name, fn, passes in (("copy", lambda: out.copy_(a), 2), ("add", lambda: torch.add(a, b, out=out), 3)):
        fn()
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        res[name] = round(passes * numel * 4 / best / 1e9, 1)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dhvt_tiny_cifar_patch4", choices=dhvtlib.list_models())
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", nargs="+", choices=["train", "infer"], default=["train"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {name: dhvtlib.create_model(args.model, **ROWS[name]) for name in args.rows}
    cfg = models[args.rows[0]].config
    models["timm_vit"] = reference_vit(cfg)
    hidden = args.batch * (cfg["img_size"] // cfg["patch_size"]) ** 2 * int(cfg["embed_dim"] * cfg["mlp_ratio"])
    bw = bandwidth_gb_s(hidden)
    print(f"{args.model} | threads {args.threads} | batch {args.batch} | fp32 | torch {torch.__version__} | "
          f"{platform.processor() or platform.machine()} | bandwidth over a {hidden * 4 / 1e6:.0f} MB DAFF hidden "
          f"tensor: copy {bw['copy']} GB/s, add {bw['add']} GB/s")
    result = dict(model=args.model, batch=args.batch, threads=args.threads, torch=torch.__version__,
                  timm=timm.__version__, bandwidth_gb_s=bw, modes={})
    # throughput.bench's protocol: 1 warm-up step, then interleaved rounds of 1 step, median round per model
    timing = argparse.Namespace(batch=args.batch, channels_last=False, precision="fp32", warmup=1, compile=False,
                                rounds=args.rounds, steps=1)
    for mode in args.mode:
        ips = bench(models, mode, timing, torch.device("cpu"), cfg)
        ms = {name: 1e3 * args.batch / v for name, v in ips.items()}
        ref = ms["timm_vit"]
        rows = {}
        for name in args.rows:
            rows[name] = {"ms_per_step": round(ms[name], 1), "ratio_vs_timm_vit": round(ref / ms[name], 3),
                          "overrides": ROWS[name]}
            print(f"{mode:5s} {name:22s} {ms[name]:8.1f} ms/step  ratio {ref / ms[name]:.3f}")
        print(f"{mode:5s} {'timm_vit':22s} {ref:8.1f} ms/step")
        result["modes"][mode] = {"timm_vit_ms_per_step": round(ref, 1), "rows": rows}
    result.update(provenance(torch.device("cpu"), started))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
