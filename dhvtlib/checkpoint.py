"""Checkpoints and weights for users: safe loading, safetensors export, and clear errors for the wrong model.
What a training checkpoint holds, when it is written and the write itself: `dhvtlib.run.state`.

- Every file is written all-or-nothing (`dhvtlib.files.atomic_write`: temp file, fsync, rename).
- Training checkpoints are plain dicts of tensors and primitives, loaded only with `torch.load(weights_only=True)`
  (no unpickling of arbitrary objects). Numpy and Python RNG states are stored as tensors and lists for that reason.
- Final weights are exported as safetensors with the model name and config in the metadata and a `.sha256` file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from .files import atomic_write, sha256
from .models import DHVT, create_model, list_models

__all__ = ["load_checkpoint", "export_safetensors", "load_weights", "safetensors_info", "load_model", "build_recorded_model", "check_finite",
           "nonfinite_tensors"]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with weights_only=True. Official-format files (a bare state_dict or {'model': ...}) load
    too; the caller checks the layout against its model (`load_weights`)."""
    path = Path(path)
    _check_file(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle.UnpicklingError for disallowed globals; anything else: a damaged file
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"  # torch.save's format since torch 1.6
        if "Unsupported global" in str(e) or (not zipped and path.stat().st_size > 0):
            raise ValueError(f"{path} cannot be loaded safely (it is not a tensor-only torch checkpoint); only "
                             "tensor checkpoints are accepted (torch.load weights_only=True).") from None
        raise ValueError(f"{path} is corrupt or truncated ({_damage(e)}; {path.stat().st_size} bytes)"
                         f"{_intact_sibling(path)}.") from None


def _damage(e: BaseException) -> str:
    """What torch reported about a damaged file, without its advice to load it with weights_only=False."""
    first = str(e).split(". ")[0].splitlines()[0] if str(e) else ""
    if not first or "weights_only" in first.lower() or "weights only" in first.lower():
        return type(e).__name__
    return f"{type(e).__name__}: {first[:120]}"


def _intact_sibling(path: Path) -> str:
    """Where a run keeps another copy of its state beside a damaged checkpoint-last.pt."""
    best = path.with_name("checkpoint-best.pt")
    if path.name == "checkpoint-last.pt" and best.is_file():
        return (f"; {best.name} beside it (the best epoch's full state) may be intact: copy it over {path.name} to "
                "resume from that epoch")
    return "; restore it from a copy, or retrain"


# ---------------------------------------------------------------------------------------------- weights
def export_safetensors(model: nn.Module, path: str | os.PathLike) -> str:
    """Write the model's state_dict as safetensors (atomically) with its name and config in the metadata, and
    `<path>.sha256` beside it. Returns the sha256."""
    path = Path(path)
    # One metadata key: safetensors writes several keys in random order, and the file's sha256 must be repeatable.
    # "data": what evaluation needs (image size, channels, mean/std, resize rule), set by training as
    # model.data_config (see DatasetInfo.eval_config).
    meta = {"dhvtlib": json.dumps({"model": str(getattr(model, "variant", None) or type(model).__name__),
                                   "config": getattr(model, "config", {}),
                                   "data": getattr(model, "data_config", None)}, sort_keys=True)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path) as f:
        f.write(save_safetensors(tensors, metadata=meta))
    digest = sha256(path)
    with atomic_write(path.with_name(path.name + ".sha256"), "w") as f:
        f.write(f"{digest}  {path.name}\n")
    return digest


def safetensors_info(path: str | os.PathLike) -> dict[str, Any]:
    """{'model': name, 'config': DHVT kwargs, 'data': the training data's eval config or None, 'shapes': {key:
    shape}} recorded by `export_safetensors` (model and config empty for other files). Reads the header only; a
    file that is not safetensors is one sentence."""
    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        info = json.loads(meta["dhvtlib"]) if "dhvtlib" in meta else {"model": None, "config": {}}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]}); it may be truncated "
                         "or another format renamed: export it again (dhvtlib.checkpoint.export_safetensors).") from None
    if not isinstance(info, dict) or not isinstance(info.get("config", {}), dict):
        raise ValueError(f"{path} has malformed dhvtlib metadata; export it again.")
    return {**info, "shapes": shapes}


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass a file inside it, e.g. {path / 'model.safetensors'} or "
                         f"{path / 'checkpoint-last.pt'}.")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check the path (runs keep model.safetensors, "
                                "checkpoint-last.pt and checkpoint-best.pt in their output folder).")


def load_model(path: str | os.PathLike) -> nn.Module:
    """The model a run exported (model.safetensors) or checkpointed (.pt), rebuilt from its recorded config, with
    its weights, in eval mode."""
    path = Path(path)
    state, info = _read_weights(path)
    if not info.get("config"):
        raise ValueError(f"{path} does not record its model config; build the model yourself and use load_weights.")
    model = build_recorded_model(info, {k: tuple(v.shape) for k, v in state.items()}, path)
    load_weights(model, path)
    return model.eval()


def build_recorded_model(info: dict[str, Any], shapes: dict[str, tuple[int, ...]], path: str | os.PathLike
                         ) -> nn.Module:
    """The model a file's metadata describes, built only after its parameter shapes were checked against the
    file's tensors on the meta device (no memory): crafted or mismatched metadata is one sentence, not a huge
    allocation."""
    cfg, name = info["config"], info.get("model")

    def build() -> nn.Module:  # by registered name + recorded config (any family); unnamed configs are DHVT kwargs
        return create_model(name, **cfg) if name in list_models() else DHVT(**cfg)

    _check_anchor_shapes(cfg, shapes, path)  # instant: width, depth and classes before anything is built
    try:
        with torch.device("meta"):
            skeleton = build()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{Path(path).name} records a model config that cannot be built ({e}); export it again."
                         ) from None
    ours = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    wrong = sorted(k for k in set(ours) | set(shapes) if ours.get(k) != shapes.get(k))
    if wrong:
        k = wrong[0]
        raise ValueError(f"{Path(path).name}'s metadata describes another model than its tensors hold ({len(wrong)} "
                         f"tensors differ, e.g. {k}: metadata {ours.get(k)}, file {shapes.get(k)}); the file is "
                         "damaged or crafted: export it again.")
    model = build()
    model.variant = name
    return model


def _check_anchor_shapes(cfg: dict[str, Any], shapes: dict[str, tuple[int, ...]], path: str | os.PathLike) -> None:
    """The recorded width, depth and class count against the tensors that show them (transformer layouts)."""
    checks = []
    if "embed_dim" in cfg and "cls_token" in shapes:
        checks.append(("embed_dim", cfg["embed_dim"], shapes["cls_token"][-1]))
    if "depth" in cfg and any(k.startswith("blocks.") for k in shapes):
        checks.append(("depth", cfg["depth"], 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))))
    if "num_classes" in cfg and "head.weight" in shapes:
        checks.append(("num_classes", cfg["num_classes"], shapes["head.weight"][0]))
    for name, recorded, held in checks:
        if recorded != held:
            raise ValueError(f"{Path(path).name}'s metadata describes another model than its tensors hold ({name} "
                             f"{recorded} in the metadata, {held} in the tensors); the file is damaged or crafted: "
                             "export it again.")


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, info) from a safetensors file, a dhvtlib checkpoint or an official-format .pth."""
    if path.suffix == ".safetensors":
        info = safetensors_info(path)  # checks the file first
        return load_file(str(path)), info
    ckpt = load_checkpoint(path)
    if "model" in ckpt and isinstance(ckpt["model"], dict):  # dhvtlib and official DeiT-style checkpoints
        return ckpt["model"], {"model": ckpt.get("model_name"), "config": ckpt.get("model_config", {})}
    return ckpt, {"model": None, "config": {}}


def load_weights(model: nn.Module, path: str | os.PathLike, *, new_head_ok: bool = False) -> list[str]:
    """Load weights into `model` with strict checking of names and shapes.

    A file made for another architecture or class count fails with one sentence naming both. With
    `new_head_ok=True` (fine-tuning) a head of another class count is skipped and left at its fresh
    initialisation, as the official loader does; the skipped keys are returned.
    """
    path = Path(path)
    state, info = _read_weights(path)
    ours = model.state_dict()
    skipped = []
    if new_head_ok:
        for k in ("head.weight", "head.bias"):
            if k in state and k in ours and state[k].shape != ours[k].shape:
                skipped.append(k)
                state = {kk: v for kk, v in state.items() if kk != k}
    missing = sorted(set(ours) - set(state) - set(skipped))
    unexpected = sorted(set(state) - set(ours))
    wrong = sorted(k for k in set(state) & set(ours) if state[k].shape != ours[k].shape)
    if missing or unexpected or wrong:
        theirs = _describe(info, state)
        mine = _describe({"model": getattr(model, "variant", None), "config": getattr(model, "config", {})}, ours)
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape, e.g. "
                  f"{(wrong or missing or unexpected)[0]}")
        head_only = set(wrong) <= {"head.weight", "head.bias"} and not missing and not unexpected
        hint = ("build the model with its class count, or fine-tune (new_head_ok=True / finetune=) for a new head"
                if head_only else "build the model it was saved from")
        raise ValueError(f"{path.name} holds {theirs} but the model is {mine} ({detail}); {hint}.")
    check_finite(state, path)
    model.load_state_dict(state, strict=not skipped)
    return skipped


def check_finite(state: dict[str, torch.Tensor], path: str | os.PathLike, what: str = "") -> None:
    """One sentence if a loaded state_dict holds NaN or infinity (`what`: e.g. 'EMA ' for the EMA weights)."""
    bad = nonfinite_tensors(state)
    if bad:
        raise ValueError(f"{Path(path).name} holds {len(bad)} {what}tensors with NaN or infinity (e.g. {bad[0]}); it "
                         "comes from a diverged run: use an earlier checkpoint, or train again with a lower lr.")


def _describe(info: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    cfg = info.get("config") or {}
    name = info.get("model") or "a model"
    classes = cfg.get("num_classes", state["head.weight"].shape[0] if "head.weight" in state else "?")
    width = cfg.get("embed_dim", state["cls_token"].shape[-1] if "cls_token" in state else "?")
    return f"{name} (width {width}, {classes} classes)"


def nonfinite_tensors(*state_dicts: Mapping[str, torch.Tensor] | None) -> list[str]:
    """Names of floating-point tensors holding NaN or infinity, over all given state_dicts."""
    bad = []
    for sd in state_dicts:
        for k, v in (sd or {}).items():
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                bad.append(k)
    return bad
