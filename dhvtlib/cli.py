"""Command-line pieces shared by dhvt-train and dhvt-eval: argument types that fail in one sentence, and the recipe
overrides generated from the `Recipe` dataclass (one flag per field, so a new field needs no new flag)."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from .recipe import NONE, PRESETS, Recipe

__all__ = ["train_parser", "add_recipe_overrides", "recipe_overrides", "positive_int", "json_object", "boolean"]


def train_parser(description: str | None = None) -> argparse.ArgumentParser:
    """dhvt-train's arguments: run options, then one override per recipe field."""
    ap = argparse.ArgumentParser(prog="dhvt-train", description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS), help="recipe preset (default: 'ablation' with --ablation, the "
                    "run's own recipe with --resume, else 'quick')")
    ap.add_argument("--output", type=Path, help="run directory (default runs/<preset>/<model>-<dataset>-s<seed>)")
    ap.add_argument("--data-dir", help="data set folder (default: the data set's usual place)")
    ap.add_argument("--download", action="store_true", help="download the data set if torchvision can")
    ap.add_argument("--resume", action="store_true", help="continue the run in --output from checkpoint-last.pt")
    ap.add_argument("--change-recipe", action="store_true", help="with --resume after a divergence: continue from "
                    "the last finite checkpoint with another --lr, --clip-grad or --precision (recorded)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    ap.add_argument("--experiment", help="label for results tables")
    ap.add_argument("--tag", help="row label for results tables (e.g. table5/sope)")
    ap.add_argument("--ablation", metavar="ROW", help="train one ablation row, e.g. table5/sope (sets --model, "
                    "--model-kwargs, the row's recipe values and --tag)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--threads", type=positive_int, help="torch intra-op threads")
    add_recipe_overrides(ap)
    return ap


def add_recipe_overrides(ap: argparse.ArgumentParser) -> None:
    """--<field> for every Recipe field but `name`; left out, each is None (the preset's value)."""
    g = ap.add_argument_group("recipe overrides (default: the preset's value)")
    for f in dataclasses.fields(Recipe):
        if f.name == "name":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "model_kwargs":
            g.add_argument(flag, type=json_object, help='JSON object of model arguments, e.g. \'{"depth": 6}\'')
        elif f.type in ("bool", bool):
            g.add_argument(flag, type=boolean, metavar="BOOL")
        elif f.name == "opt_betas":
            g.add_argument(flag, type=float, nargs=2)
        else:
            g.add_argument(flag, type=_type_of(f.type), metavar=f.name.upper())


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed recipe flags as `run(**overrides)` takes them (None: not given)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe) if f.name != "name"}


def boolean(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{s!r} is not a boolean; use true or false.")


def _type_of(annotation: str):
    """Command-line converter for a Recipe annotation such as 'int', 'float | None' or 'str | None'. 'none' turns an
    optional value off (kept as the string, which `resolve` reads as an explicit None)."""
    base = {"int": int, "float": float, "str": str}[annotation.split("|")[0].strip()]
    if "None" not in annotation:
        return base
    return lambda s: NONE if s.lower() == NONE else base(s)


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"{s!r} is not a positive integer")
    return v


def json_object(s: str) -> dict[str, Any]:
    try:
        v = json.loads(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{s!r} is not valid JSON ({e.msg} at character {e.pos}); write an object "
                                         'such as \'{"depth": 6}\'') from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError(f"{s!r} is a JSON {type(v).__name__}, not an object; write an object such "
                                         'as \'{"depth": 6}\'')
    return v
