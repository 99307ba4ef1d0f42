"""Training-step and inference images/s of a dhvtlib model against timm's ViT, in the same process (ratios).

The reference is timm's `vit_tiny_patch16_224` built at the model's image size, patch, width, heads and depth.
For default DHVT variants the official code's forward (benchmarks/official_dhvt.py, same weights, checked equal
first) is timed too; inference also times `fuse_batchnorm(model)` (BatchNorms folded into the convs, logits checked
equal). Timings interleave the models round by round and report the median round. `--compile` wraps every model
in torch.compile (compile time excluded, reported). `--precision auto` (the default) resolves as training does
(dhvtlib.run.runtime.resolve_precision: fp16 + grad scaler on CUDA, bf16 on CPUs with native bf16, fp32 elsewhere); the CPU's bf16
capability and the choice are printed and recorded.

    python benchmarks/throughput.py --model dhvt_tiny_cifar_patch4 --batch 128 --threads 2 --precision fp32
    python benchmarks/throughput.py --model dhvt_tiny_cifar_patch4 --precision bf16 --mode train infer
    python benchmarks/throughput.py --device cuda --precision bf16 --compile
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import timm
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dhvtlib  # noqa: E402
from dhvtlib.run.loop import autocast  # noqa: E402
from dhvtlib.run.build import set_bn_splits  # noqa: E402
from dhvtlib.run.runtime import PRECISIONS, cpu_bf16_capability, resolve_precision  # noqa: E402
from dhvtlib.run.runtime import environment, git_state  # noqa: E402
from official_dhvt import OfficialDHVT  # noqa: E402


def provenance(device: torch.device, started: float) -> dict:
    """Commit, versions, hardware and wall time for a benchmark's JSON record."""
    commit, dirty = git_state()
    return {"git_commit": commit, "git_dirty": dirty, **environment(device),
            "wall_s": round(time.perf_counter() - started, 1)}


def reference_vit(cfg: dict) -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", img_size=cfg["img_size"], patch_size=cfg["patch_size"],
                             embed_dim=cfg["embed_dim"], num_heads=cfg["num_heads"], depth=cfg["depth"],
                             num_classes=cfg["num_classes"])


def is_default_dhvt(cfg: dict) -> bool:
    default = dict(embed_layer="sope", pos_embed=False, head_tokens=True, mlp_layer="daff", sope_norm="bn",
                   sope_affine=True, sope_last_act=None, sope_conv_bias=False, daff_norm="bn",
                   daff_token_mixer="dwconv", daff_dw_shortcut=True, daff_se="cls", ht_norm=True, in_chans=3)
    return all(cfg[k] == v for k, v in default.items())


def make_step(model: nn.Module, mode: str, x: torch.Tensor, y: torch.Tensor, precision: str):
    """One training step (AdamW; fp16 with a grad scaler, as the official AMP) or one inference batch."""
    if mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loss_fn = nn.CrossEntropyLoss()
        scaler = torch.amp.GradScaler(x.device.type) if precision == "fp16" else None

        def step():
            with autocast(x.device, precision):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
    else:
        model.eval()

        def step():
            with torch.no_grad(), autocast(x.device, precision):
                model(x)
    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(models: dict[str, nn.Module], mode: str, args, device, cfg: dict) -> dict[str, float]:
    x = torch.randn(args.batch, 3, cfg["img_size"], cfg["img_size"], device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, cfg["num_classes"], (args.batch,), device=device)
    steps = {name: make_step(m, mode, x, y, args.precision) for name, m in models.items()}
    for name, step in steps.items():
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step()
        if args.compile:
            print(f"  {mode} {name}: compile + {args.warmup} warm-up steps {time.perf_counter() - t0:.0f} s")
    seconds = median_seconds(steps, args.rounds, args.steps, device)
    return {name: args.batch / s for name, s in seconds.items()}


def median_seconds(steps: dict, rounds: int, calls: int, device: torch.device) -> dict[str, float]:
    """The median over `rounds` of each step's seconds per call (`calls` calls a round), the steps interleaved;
    each round starts one step later, so no step always runs first or after the same one."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(calls):
                steps[name]()
            sync(device)
            times[name].append((time.perf_counter() - t0) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dhvt_tiny_cifar_patch4", choices=dhvtlib.list_models())
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=PRECISIONS, default="auto")
    ap.add_argument("--mode", nargs="+", choices=["train", "infer"], default=["train", "infer"])
    ap.add_argument("--steps", type=int, default=3, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bn-groups", type=int, default=1, help="split dhvtlib's DAFF BatchNorms into this many "
                    "per-GPU groups (the paper presets' virtual_gpus=2 on one device); the official reference is not")
    ap.add_argument("--no-official", action="store_true", help="skip the official-code reference")
    ap.add_argument("--compile", action="store_true", help="torch.compile every model (ours and the references)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    requested = args.precision
    args.precision, reason = resolve_precision(requested, device)
    native, bf16_what = cpu_bf16_capability()
    print(f"CPU bf16: {bf16_what} | precision {requested} -> {args.precision} ({reason})")

    ours = dhvtlib.create_model(args.model).to(device)
    set_bn_splits(ours, args.bn_groups)
    cfg = ours.config
    models: dict[str, nn.Module] = {"dhvtlib": ours, "timm_vit": reference_vit(cfg).to(device)}
    if is_default_dhvt(cfg) and not args.no_official:
        official = OfficialDHVT.from_dhvt(ours.cpu()).to(device)
        ours.to(device)
        xs = torch.randn(4, 3, cfg["img_size"], cfg["img_size"], device=device)
        with torch.no_grad():
            diff = (ours.eval()(xs) - official.eval()(xs)).abs().max().item()
        if diff > 1e-4:
            raise SystemExit(f"outputs differ from the official forward by {diff:.2e}; fix the model first.")
        print(f"outputs equal the official forward (max abs diff {diff:.1e})")
        models["official"] = official
    infer_only: dict[str, nn.Module] = {}
    if "infer" in args.mode and any(isinstance(m, nn.BatchNorm2d) for m in ours.modules()):
        fused = dhvtlib.models.fuse_batchnorm(ours.eval())
        xs = torch.randn(4, 3, cfg["img_size"], cfg["img_size"], device=device)
        with torch.no_grad():
            diff = (fused(xs) - ours(xs)).abs().max().item()
        if diff > 1e-4:
            raise SystemExit(f"fuse_batchnorm changed the logits by {diff:.2e}; fix it first.")
        print(f"fuse_batchnorm logits equal the model's (max abs diff {diff:.1e})")
        infer_only["dhvtlib_fused_bn"] = fused
    for group in (models, infer_only):
        for name, m in group.items():
            if args.channels_last:
                m.to(memory_format=torch.channels_last)
            if args.compile:
                group[name] = torch.compile(m)

    print(f"{args.model} | device {device} | threads {args.threads} | batch {args.batch} | {args.precision} | "
          f"torch {torch.__version__} | timm {timm.__version__} | {platform.processor() or platform.machine()}")
    result = dict(model=args.model, batch=args.batch, threads=args.threads, precision=args.precision,
                  precision_requested=requested, precision_reason=reason,
                  cpu_bf16=dict(native=native, detail=bf16_what), bn_groups=args.bn_groups, compile=args.compile, device=str(device), torch=torch.__version__, timm=timm.__version__, modes={})
    for mode in args.mode:
        ips = bench({**models, **infer_only} if mode == "infer" else models, mode, args, device, cfg)
        row = {f"{k}_img_s": round(v, 1) for k, v in ips.items()}
        row["ratio_vs_timm_vit"] = round(ips["dhvtlib"] / ips["timm_vit"], 3)
        line = (f"{mode:5s}: dhvtlib {ips['dhvtlib']:8.1f} img/s | timm ViT {ips['timm_vit']:8.1f} img/s | "
                f"ratio {row['ratio_vs_timm_vit']:.3f}")
        if "dhvtlib_fused_bn" in ips:
            row["fused_bn_ratio_vs_timm_vit"] = round(ips["dhvtlib_fused_bn"] / ips["timm_vit"], 3)
            line += (f" | fuse_batchnorm {ips['dhvtlib_fused_bn']:8.1f} img/s "
                     f"(ratio {row['fused_bn_ratio_vs_timm_vit']:.3f})")
        if "official" in ips:
            row["official_ratio_vs_timm_vit"] = round(ips["official"] / ips["timm_vit"], 3)
            row["speedup_vs_official"] = round(ips["dhvtlib"] / ips["official"], 3)
            line += (f" | official {ips['official']:8.1f} img/s (ratio {row['official_ratio_vs_timm_vit']:.3f}) | "
                     f"ours/official {row['speedup_vs_official']:.2f}x")
        print(line)
        result["modes"][mode] = row
    result.update(provenance(device, started))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
