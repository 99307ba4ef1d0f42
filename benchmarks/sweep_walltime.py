"""Wall time of the ladder's 6 rows x 1 seed: launcher inline (this process, one after another) vs local (submitit
jobs, W workers x T threads each), on a reduced budget (default: the smoke preset, 4 epochs, on generated
Fashion-MNIST-shaped data, so it runs anywhere in minutes).

    python benchmarks/sweep_walltime.py --epochs 4 --workers 2 --threads 1

Inline runs with torch.set_num_threads(workers x threads), the same cores in total (--inline-threads changes it).
The local time includes each worker's start (a fresh Python importing torch), as a notebook user would see it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from dhvtlib import experiments

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--samples-per-class", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--inline-threads", type=int, help="torch threads of the inline runs (default: workers x threads)")
    ap.add_argument("--data-dir", help="default: generated Fashion-MNIST-shaped data (tests/fakedata.py)")
    args = ap.parse_args(argv)
    specs = experiments.ladder_runs("ladder")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if data_dir is None:
            from fakedata import fake_fashion_mnist

            data_dir = str(fake_fashion_mnist(Path(tmp) / "data", train_per_class=args.samples_per_class))
        kw = dict(preset=args.preset, epochs=args.epochs, samples_per_class=args.samples_per_class,
                  data_dir=data_dir, device="cpu", progress=False, verbose=False)
        torch.set_num_threads(args.inline_threads or args.workers * args.threads)
        t0 = time.perf_counter()
        inline = experiments.execute(specs, [0], results_root=Path(tmp) / "inline", **kw)
        t_inline = time.perf_counter() - t0
        t0 = time.perf_counter()
        local = experiments.execute(specs, [0], results_root=Path(tmp) / "local", launcher="local",
                                    launch_options={"workers": args.workers, "threads": args.threads, "poll_s": 0.5},
                                    **kw)
        t_local = time.perf_counter() - t0
    out = {"runs": len(specs), "preset": args.preset, "epochs": args.epochs, "workers": args.workers,
           "threads": args.threads,
           "inline_threads": torch.get_num_threads(), "inline_s": round(t_inline, 1), "local_s": round(t_local, 1),
           "inline_run_s": round(float(inline["wall_s"].sum()), 1),
           "local_run_s": round(float(local["wall_s"].sum()), 1),
           "completed": [list(inline["status"]).count("completed"), list(local["status"]).count("completed")],
           "load_average": os.getloadavg(), "cpus": os.cpu_count()}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
