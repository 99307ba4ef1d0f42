"""Registration in timm: each family's module-level `default_cfgs` (timm's pretrained-cfg registry entries) and one
builder, timm's `build_model_with_cfg`, so that `timm.create_model(name, ...)` takes timm's own arguments
(`features_only`, `out_indices`, `feature_cls`, `pretrained_cfg_overlay`) and sets `pretrained_cfg`/`default_cfg`
as for timm's models. No pretrained weights exist: the cfgs carry the data config only."""
from __future__ import annotations

import sys
from typing import Any, Callable, Iterable

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from .utils import init_arg_names

__all__ = ["TIMM_ARGS", "build_registered", "make_default_cfgs", "register_variants"]

# the builder's own arguments, accepted by every registered name besides the class's
TIMM_ARGS = ("features_only", "out_indices", "feature_cls", "feature_cfg", "pretrained_cfg", "pretrained_cfg_overlay")


def _data_cfg(cfg: Any, kwargs: dict[str, Any], pool_size: Callable[[dict[str, Any]], tuple[int, int]], *,
              first_conv: str | Callable[[dict[str, Any]], str], classifier: str, fixed_input_size: bool
              ) -> dict[str, Any]:
    size = kwargs["img_size"]
    first_conv = first_conv if isinstance(first_conv, str) else first_conv(kwargs)
    return dict(input_size=(kwargs.get("in_chans", 3), size, size), pool_size=pool_size(kwargs),
                fixed_input_size=fixed_input_size, mean=cfg.mean, std=cfg.std, crop_pct=cfg.crop_pct,
                interpolation=cfg.interpolation, num_classes=kwargs["num_classes"], first_conv=first_conv,
                classifier=classifier, notes=(cfg.notes,) if cfg.notes else None)


def make_default_cfgs(registry: dict[str, Any], pool_size: Callable[[dict[str, Any]], tuple[int, int]], *,
                      first_conv: str | Callable[[dict[str, Any]], str], classifier: str,
                      fixed_input_size: Callable[[dict[str, Any]], bool] = lambda kw: False) -> dict[str, Any]:
    """timm's `default_cfgs` for a family: one untagged cfg per registered name (its data config)."""
    cfgs = {}
    for name, cfg in registry.items():
        kwargs = dict(cfg.arch, num_classes=cfg.num_classes)
        cfgs[name] = _data_cfg(cfg, kwargs, pool_size, first_conv=first_conv, classifier=classifier,
                               fixed_input_size=fixed_input_size(kwargs))
    return generate_default_cfgs(cfgs)


def build_registered(cls: type, registry: dict[str, Any], name: str, overrides: dict[str, Any], *,
                     pool_size: Callable[[dict[str, Any]], tuple[int, int]],
                     first_conv: str | Callable[[dict[str, Any]], str], classifier: str,
                     feature_cfg: dict[str, Any], fixed_input_size: Callable[[dict[str, Any]], bool] = lambda kw: False
                     ) -> nn.Module:
    """`cls(**registry[name].arch, num_classes=..., **overrides)` built by timm's `build_model_with_cfg`, with
    unknown names and arguments refused in one sentence, tagged with `variant`; its `pretrained_cfg` is the
    registered cfg updated to the built model (input size, pool size, class count), then any
    `pretrained_cfg_overlay`."""
    if name not in registry:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(registry)}.")
    cfg = registry[name]
    unknown = set(overrides) - set(init_arg_names(cls)) - set(TIMM_ARGS)
    if unknown:
        raise ValueError(f"unknown argument(s) {sorted(unknown)} for {name}; see help(dhvtlib.models."
                         f"{cls.__name__}) for the accepted ones (and timm's {', '.join(TIMM_ARGS[:3])}).")
    timm_args = {k: overrides.pop(k) for k in TIMM_ARGS if k in overrides}
    if not timm_args.get("features_only") and {"out_indices", "feature_cls"} & set(timm_args):
        raise ValueError(f"out_indices and feature_cls select feature maps; pass features_only=True with them "
                         f"(timm.create_model({name!r}, features_only=True, ...)).")
    if not timm_args.get("features_only"):
        timm_args.pop("features_only", None)
    kwargs = dict(cfg.arch, num_classes=cfg.num_classes)
    kwargs.update(overrides)
    overlay = _data_cfg(cfg, kwargs, pool_size, first_conv=first_conv, classifier=classifier,
                        fixed_input_size=fixed_input_size(kwargs))
    overlay = {k: v for k, v in overlay.items() if v is not None}
    overlay.update(timm_args.pop("pretrained_cfg_overlay", None) or {})
    feature_cfg = dict(feature_cfg, **(timm_args.pop("feature_cfg", None) or {}))
    model = build_model_with_cfg(cls, name, pretrained=False, pretrained_cfg_overlay=overlay,
                                 feature_cfg=feature_cfg, **timm_args, **kwargs)
    model.variant = name
    return model


def register_variants(names: Iterable[str], build: Callable[..., nn.Module], module: str) -> None:
    """Register each name with timm, as `@register_model def <name>(pretrained=False, **kwargs)` in `module`
    would (the module's `default_cfgs` must exist first): `timm.create_model(name, **kwargs)` is
    `build(name, **kwargs)` (no pretrained weights exist)."""
    for name in names:
        entrypoint = _entrypoint(name, build, module)
        setattr(sys.modules[module], name, entrypoint)  # register_model lists it in the module's __all__
        register_model(entrypoint)


def _entrypoint(name: str, build: Callable[..., nn.Module], module: str) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(f"no pretrained weights exist for {name} (the authors released none); use "
                             f"pretrained=False and load a checkpoint with dhvtlib.checkpoint.")
        kwargs.pop("cache_dir", None)  # no weights to cache
        for k in ("pretrained_cfg", "pretrained_cfg_overlay"):  # timm passes them, None when not given
            if kwargs.get(k) is None:
                kwargs.pop(k, None)
        return build(name, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = module
    return entrypoint
