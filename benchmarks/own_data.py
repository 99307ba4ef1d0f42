"""Your own image folder vs the built-in in-memory path (README "Your own data set"): decode-once time, cached reload, training speed.

Writes Fashion-MNIST's test split (10,000 images) as PNG files of random sizes (each side 20-40 px, bicubic) in
class folders, then measures:
- the first `own_data` call (scan, headers, decode, mean/std, cache write) and a cached reload, in fresh
  processes (target <= 30 s and <= 2 s);
- the quick preset's model, trained one epoch at a time on that folder (split 80/20, the quick preset's 100
  images per class, 28 px, decoded once, in memory) and on the in-memory Fashion-MNIST path, in interleaved rounds
  in this process: img/s of each and their ratio (target >= 0.9). `--file-path` adds the same folder read from files
  (memory budget 0: DataLoader workers, PIL transforms).

    python benchmarks/own_data.py --rounds 3 --threads 1 --json results/benchmarks/own_data.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dhvtlib.data import load_split
from dhvtlib.run.train import run
from throughput import provenance

RELOAD = ("import sys, time, json; t = time.perf_counter(); from dhvtlib.data.folder import own_data; "
          "t1 = time.perf_counter(); o = own_data(sys.argv[1], cache_dir=sys.argv[2], verbose=False); "
          "print(json.dumps({'import_s': t1 - t, 'own_data_s': time.perf_counter() - t1, 'images': len(o.train) + "
          "len(o.test), 'img_size': o.img_size, 'cache': o.details['cache']}))")


def write_folder(root: Path, data_dir: str | None, seed: int = 0) -> int:
    """Fashion-MNIST's test split as root/<class>/<i>.png, each image resized to random (w, h) in 20..40."""
    from PIL import Image

    test = load_split("fashion_mnist", data_dir, train=False)
    rng = np.random.default_rng(seed)
    for c in test.classes:
        (root / c.replace("/", "-")).mkdir(parents=True, exist_ok=True)
    names = [c.replace("/", "-") for c in test.classes]
    for i in range(len(test)):
        w, h = (int(v) for v in rng.integers(20, 41, 2))
        im = Image.fromarray(test.images[i, 0].numpy()).resize((w, h), Image.BICUBIC)
        im.save(root / names[int(test.targets[i])] / f"{i:05d}.png")
    return len(test)


def own_data_in_fresh_process(root: Path, cache: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", RELOAD, str(root), str(cache)], capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def epoch_img_s(out: Path, **kw) -> float:
    run("quick", output=out, epochs=1, progress=False, verbose=False, eval_every=1, **kw)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return row["img_s"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", help="Fashion-MNIST folder (default: the usual places)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--file-path", action="store_true", help="also time the folder read from files")
    ap.add_argument("--limit", type=int, help="write only this many images (tests)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, cache = tmp / "folder", tmp / "cache"
        t = time.perf_counter()
        n = write_folder(root, args.data_dir)
        if args.limit:
            for p in sorted(root.rglob("*.png"))[args.limit:]:
                p.unlink()
            n = args.limit
        write_s = time.perf_counter() - t
        first = own_data_in_fresh_process(root, cache)
        reload = own_data_in_fresh_process(root, cache)
        print(f"{n} PNGs written in {write_s:.1f}s; first own_data (scan + decode + cache) {first['own_data_s']:.2f}s "
              f"(img_size {first['img_size']}), cached reload {reload['own_data_s']:.2f}s "
              f"(+ {reload['import_s']:.2f}s import)", flush=True)
        configs = {"fashion_mnist_in_memory": dict(dataset="fashion_mnist", data_dir=args.data_dir),
                   "folder_in_memory": dict(dataset="imagefolder", data_dir=str(root), img_size=28,
                                            cache_dir=str(cache))}
        if args.file_path:
            configs["folder_files"] = dict(dataset="imagefolder", data_dir=str(root), img_size=28,
                                           cache_dir=str(cache), memory_budget_gb=0)
        if args.limit:  # tests: a handful of images
            for c in configs.values():
                c.update(samples_per_class=2, test_samples_per_class=1, batch_size=4, eval_batch_size=4,
                         model_kwargs=dict(embed_dim=32, depth=1, num_heads=2))
        speeds: dict[str, list[float]] = {k: [] for k in configs}
        for r in range(args.rounds):
            for name, kw in configs.items():
                speeds[name].append(epoch_img_s(tmp / f"{name}-{r}", **kw))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in speeds.items()), flush=True)
    med = {k: statistics.median(v) for k, v in speeds.items()}
    ratios = [a / b for a, b in zip(speeds["folder_in_memory"], speeds["fashion_mnist_in_memory"])]
    result = {"images": n, "write_s": round(write_s, 2), "first_own_data_s": round(first["own_data_s"], 2),
              "cached_reload_s": round(reload["own_data_s"], 3), "import_s": round(reload["import_s"], 2),
              "reload_read_the_cache": "loaded_s" in reload["cache"],
              "img_size_inferred": first["img_size"], "threads": args.threads, "rounds": args.rounds,
              "img_s": {k: [round(x, 1) for x in v] for k, v in speeds.items()},
              "median_img_s": {k: round(v, 1) for k, v in med.items()},
              "ratio_folder_vs_fashion_mnist_per_round": [round(x, 3) for x in ratios],
              "ratio_folder_vs_fashion_mnist": round(statistics.median(ratios), 3),
              "targets": {"first_own_data_s": 30, "cached_reload_s": 2, "ratio": 0.9},
              **provenance(torch.device("cpu"), started)}
    print(f"folder / Fashion-MNIST img/s per round {result['ratio_folder_vs_fashion_mnist_per_round']} "
          f"(median {result['ratio_folder_vs_fashion_mnist']}, target >= 0.9)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
