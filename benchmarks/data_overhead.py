"""Data time vs step time of a real run (default: the quick preset on Fashion-MNIST), from the engine's records.

The engine times, per step, the wait for the next batch (gather + BatchAugment + normalise, on the training
device) and the step itself (mixup, forward, backward, optimizer, EMA). Data overhead = data / (data + step).

    python benchmarks/data_overhead.py --preset quick --epochs 2
    python benchmarks/data_overhead.py --dataset imagefolder --data-dir mine --img-size 28   # your own folder
"""
from __future__ import annotations

import argparse
import json
import tempfile

import torch

from dhvtlib.run.train import run


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--data-dir")
    ap.add_argument("--dataset", help="default: the preset's")
    ap.add_argument("--img-size", type=int, help="default: the data set's (image folders: inferred)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        m = run(args.preset, output=out, data_dir=args.data_dir, epochs=args.epochs, progress=False, verbose=False,
                dataset=args.dataset, img_size=args.img_size)
        rows = [json.loads(line) for line in open(f"{out}/metrics.jsonl")]
    data, step = sum(r["data_s"] for r in rows), sum(r["compute_s"] for r in rows)
    result = {"preset": args.preset, "epochs": args.epochs, "threads": args.threads, "train_images": m["train_images"],
              "data_s": round(data, 2), "step_s": round(step, 2), "data_overhead": round(data / (data + step), 4)}
    print(f"{args.preset}: data {data:.2f}s, step {step:.2f}s over {args.epochs} epochs of {m['train_images']} "
          f"images -> data overhead {100 * result['data_overhead']:.1f}% of training time")
    return result


if __name__ == "__main__":
    main()
