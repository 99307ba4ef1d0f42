"""Top-1/top-5 of a saved model on a data set's test split, with the data pipeline it was trained with.

    dhvt-eval --checkpoint runs/quick/model.safetensors --dataset fashion_mnist
    python -m dhvtlib.evaluate --checkpoint ck.pth --model dhvt_tiny_cifar_patch4 --dataset cifar100  # official
    torchrun --nproc_per_node 2 -m dhvtlib.evaluate ...                                                # sharded
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .run.build import build_test_loader, load_own_data, load_test_split
from .checkpoint import build_recorded_model, check_finite, load_checkpoint, load_weights, safetensors_info
from .cli import positive_int
from .data import dataset_info
from .data.loaders import eval_indices
from .run.loop import evaluate
from .files import write_json
from .models import create_model
from .run.runtime import PRECISIONS, resolve_precision
from .recipe import Recipe
from .run.runtime import cpu_workers, init_distributed

__all__ = ["evaluate_checkpoint", "main"]


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataset: str, *, data_dir: str | None = None,
                        model: str | None = None, batch_size: int = 256, device: str = "auto",
                        precision: str = "auto", test_samples_per_class: int | None = None,
                        use_ema: bool = False) -> dict[str, Any]:
    """Top-1/top-5 of a checkpoint (dhvtlib .pt, safetensors, or an official state_dict with `model=`; a run folder
    means its model.safetensors), evaluated with the image size, channels, mean/std, resize rule and (image
    folders) test split it was trained with, as recorded in the file; files without the record use the data set's
    registry values at the model's size. Shapes are checked against the recorded config before anything is built."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    d, dev = init_distributed(device)
    precision = resolve_precision(precision, dev)[0]
    path = Path(checkpoint)
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    rec, shapes, data_cfg, ema = _read_record(path, use_ema)
    name, cfg = rec.get("model"), rec.get("config")
    if data_cfg.get("dataset") and data_cfg["dataset"] != dataset:
        warnings.warn(f"{path.name} was trained on {data_cfg['dataset']}; evaluating it on {dataset}.", stacklevel=2)
    if dataset == "imagefolder":
        saved = {"img_size": (cfg or {}).get("img_size"), "in_chans": (cfg or {}).get("in_chans"), **data_cfg}
        recipe = Recipe(dataset="imagefolder", model=name or model or Recipe.model,
                        test_samples_per_class=test_samples_per_class)
        info, _, test = load_own_data(recipe, data_dir, dev, verbose=False, saved=saved)
    else:
        info = dataset_info(dataset, data_dir)
        if data_cfg.get("mean") and data_cfg.get("dataset") == dataset:
            info = dataclasses.replace(info, mean=tuple(data_cfg["mean"]), std=tuple(data_cfg["std"]))
        test = load_test_split(dataset, data_dir, test_samples_per_class)
    if cfg:
        net = build_recorded_model(rec, shapes, path)
    elif model:
        net = create_model(model, img_size=info.img_size, in_chans=info.in_chans, num_classes=info.num_classes)
    else:
        raise ValueError(f"{path} does not say which model it holds; pass model= (--model) with its variant name.")
    net.variant = name or model
    classes = net.config.get("num_classes")
    if classes != info.num_classes:
        raise ValueError(f"{path.name} has a {classes}-class head but {dataset} has {info.num_classes} classes; "
                         "evaluate it on the data set it was trained on (or fine-tune it: finetune=).")
    if ema is not None:
        check_finite(ema, path, "EMA ")
        net.load_state_dict(ema)
    else:
        load_weights(net, path)
    loader = build_test_loader(info, test, batch_size, dev, eval_size=net.config["img_size"],
                               num_workers=cpu_workers(4))
    res = evaluate(net.to(dev), loader.batches(eval_indices(len(loader), d.rank, d.world_size), train=False),
                   device=dev, precision=precision)
    return {"checkpoint": str(path), "model": net.variant, "dataset": dataset, "img_size": net.config["img_size"],
            **res}


def _read_record(path: Path, use_ema: bool):
    """(record {model, config}, tensor shapes, data config, EMA state or None) of a safetensors or .pt file."""
    if path.suffix == ".safetensors":
        if use_ema:
            raise ValueError(f"{path} holds the final weights only; pass the run's checkpoint-last.pt for use_ema.")
        rec = safetensors_info(path)
        return rec, rec["shapes"], rec.get("data") or {}, None
    ck = load_checkpoint(path)
    if use_ema and ck.get("ema") is None:
        raise ValueError(f"{path} holds no EMA weights; drop use_ema.")
    state = ck["ema"] if use_ema else ck["model"] if isinstance(ck.get("model"), dict) else ck
    shapes = {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}
    return ({"model": ck.get("model_name"), "config": ck.get("model_config")}, shapes, ck.get("data_config") or {},
            ck["ema"] if use_ema else None)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="dhvt-eval",
                                 description="Top-1/top-5 of a checkpoint on a data set's test split.")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--model", help="variant name, for official checkpoints that do not record it")
    ap.add_argument("--batch-size", type=positive_int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=list(PRECISIONS))
    ap.add_argument("--test-samples-per-class", type=positive_int)
    ap.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    try:
        res = evaluate_checkpoint(args.checkpoint, args.dataset, data_dir=args.data_dir, model=args.model,
                                  batch_size=args.batch_size, device=args.device, precision=args.precision,
                                  test_samples_per_class=args.test_samples_per_class, use_ema=args.ema)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"dhvt-eval: {e}") from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(res, indent=2))
        if args.json:
            write_json(args.json, res)


if __name__ == "__main__":
    main()
