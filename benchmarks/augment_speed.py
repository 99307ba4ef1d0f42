"""BatchAugment vs timm's PIL pipeline (DeiT's 32 px train transform), images per second in one process.

    .venv/bin/python benchmarks/augment_speed.py [--batch 128] [--threads 2] [--repeats 20] [--device cpu]

Both sides start from a uint8 [B, 3, 32, 32] batch and end with a normalised float batch: the PIL side does what
a CIFAR Dataset + default collate do (Image.fromarray per image, the transform, torch.stack).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dhvtlib.data.augment import BatchAugment, build_pil_transform

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from PIL import Image

    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous().to(args.device)
    g = torch.Generator().manual_seed(0)

    aug = BatchAugment(32, CIFAR_MEAN, CIFAR_STD)
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)

    def batched():
        aug(x, g)
        sync()

    pil_tf = build_pil_transform(32, CIFAR_MEAN, CIFAR_STD, train=True)

    def per_image():
        torch.stack([pil_tf(Image.fromarray(a)) for a in hwc])

    t_batch = _time(batched, args.repeats)
    t_pil = _time(per_image, max(3, args.repeats // 4))
    ips_batch, ips_pil = args.batch / t_batch, args.batch / t_pil
    print(f"batch {args.batch}, 32x32x3, {args.threads} threads, device {args.device}")
    print(f"BatchAugment ({args.device}): {ips_batch:10.0f} img/s  ({t_batch * 1e3:.1f} ms/batch)")
    print(f"timm PIL per image:    {ips_pil:10.0f} img/s  ({t_pil * 1e3:.1f} ms/batch)")
    print(f"ratio: {ips_batch / ips_pil:.1f}x")


if __name__ == "__main__":
    main()
