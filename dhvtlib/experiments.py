"""Named experiments: which runs make which paper table, and running them (the notebooks' engine room).

A `RunSpec` is one row of a table: a model (+ architecture overrides), recipe overrides and the paper cell it is
compared with. `execute(specs, seeds, preset=...)` trains each (row, seed) into
`results/<experiment>/<row>/s<seed>/`, skipping completed runs and resuming interrupted ones, and returns the
manifests as a pandas frame. `validate(notebook, **params)` is the one check each notebook makes of its
parameters.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .data.datasets import DOMAINNET_DOMAINS
from .models import VARIANTS
from .models.ablations import ABLATION_TABLES, ABLATIONS, ablation_rows
from .paper import reported_value
from .recipe import PRESETS

__all__ = ["RunSpec", "quickstart_runs", "cifar100_runs", "ablation_runs", "ladder_runs", "domainnet_runs", "imagenet_runs",
           "finetune_runs", "execute", "run_dir", "validate", "LADDER", "TABLE4_MODELS"]

TABLE4_MODELS = ("deit_tiny_cifar_patch4", "deit_small_cifar_patch4", "deit_tiny_cifar_patch2",
                 "deit_small_cifar_patch2", "dhvt_tiny_cifar_patch4", "dhvt_small_cifar_patch4",
                 "dhvt_tiny_cifar_patch2", "dhvt_small_cifar_patch2")
# The Table 5/6 ladder of issue 5: DeiT with and without PE, +SOPE, +DAFF, +SOPE+DAFF, full DHVT (head tokens).
LADDER = ("table5/none", "table5/pe", "table5/sope", "table5/daff", "table5/sope_daff", "table6/sope_daff_ht")


@dataclass(frozen=True)
class RunSpec:
    """One table row. Tags name the paper cell they reproduce ('table4/<model>', 'table13/<model>/<domain>',
    'table5/sope'), so dhvtlib.results finds the paper's number from the tag alone."""
    experiment: str
    tag: str
    label: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    paper: tuple[str, str, str | None] | None = None  # (table, row, setting) in dhvtlib/paper/reported.csv

    @property
    def paper_top1(self) -> float | None:
        return reported_value(self.paper[0], self.paper[1], setting=self.paper[2]) if self.paper else None


def quickstart_runs(models: Sequence[str] = ("dhvt_tiny_cifar_patch4", "deit_tiny_cifar_patch4"),
                    experiment: str = "quick") -> list[RunSpec]:
    """The quick preset's comparison: each model at the preset's width and depth on the embedded data."""
    return [RunSpec(experiment, m, m, m) for m in models]


def cifar100_runs(models: Sequence[str] | None = None) -> list[RunSpec]:
    """Table 4: DHVT-T/S and the DeiT baselines at patch 4 and 2 on CIFAR-100."""
    return [RunSpec("cifar100", f"table4/{m}", m, m, recipe={"dataset": "cifar100"}, paper=("table4", m, None))
            for m in (models or TABLE4_MODELS)]


def ablation_runs(table: str, variant: str = "tiny", rows: Sequence[str] | None = None,
                  experiment: str = "ablation") -> list[RunSpec]:
    """One ablation table's rows (Table 11's rows carry their batch size). Paper numbers exist for DHVT-T only."""
    out = []
    for r in ablation_rows(table, variant):
        if rows and r.row not in rows:
            continue
        out.append(RunSpec(experiment, r.key, r.label, r.base, dict(r.model_kwargs), dict(r.recipe),
                           paper=(r.table, r.row, None) if variant == "tiny" or r.table == "table10" else None))
    return out


def ladder_runs(experiment: str = "ladder", rows: Sequence[str] | None = None) -> list[RunSpec]:
    """The small-data ladder (Tables 5/6 rows) compared with the paper's CIFAR-100 numbers."""
    return [RunSpec(experiment, k, ABLATIONS[k].label, ABLATIONS[k].base, dict(ABLATIONS[k].model_kwargs),
                    paper=(ABLATIONS[k].table, ABLATIONS[k].row, None)) for k in LADDER if not rows or k in rows]


def domainnet_runs(domains: Sequence[str] = DOMAINNET_DOMAINS,
                   models: Sequence[str] = ("dhvt_tiny_domain_patch16", "dhvt_small_domain_patch16")) -> list[RunSpec]:
    """Tables 2 and 13: DHVT-T/S from scratch on each DomainNet domain (224 px)."""
    return [RunSpec("domainnet", f"table13/{m}/{d}", f"{m} {d}", m, recipe={"dataset": f"domainnet_{d}"},
                    paper=("table13", m, d))
            for m in models for d in domains]


def imagenet_runs(models: Sequence[str] = ("dhvt_tiny_imagenet_patch16", "dhvt_small_imagenet_patch16")
                  ) -> list[RunSpec]:
    """Tables 3 and 15: DHVT-T/S on ImageNet-1K."""
    return [RunSpec("imagenet", f"table3/{m}", m, m, recipe={"dataset": "imagenet"}, paper=("table3", m, "imagenet"))
            for m in models]


def finetune_runs(checkpoints: dict[str, str], targets: Sequence[str] = ("clipart", "painting", "sketch", "cifar100")
                  ) -> list[RunSpec]:
    """Tables 14 and 7: fine-tune ImageNet-1K checkpoints ({model: path}) on DomainNet domains and on CIFAR-100
    upsampled to 224 px (Table 7 fine-tunes at 224)."""
    specs = []
    for m, ckpt in checkpoints.items():
        for t in targets:
            if t == "cifar100":
                specs.append(RunSpec("finetune", f"table7/{m}", f"{m} -> CIFAR-100 (224 px)", m,
                                     recipe={"dataset": "cifar100", "img_size": 224, "finetune": ckpt},
                                     paper=("table7", m, None)))
            else:
                specs.append(RunSpec("finetune", f"table14/{m}/{t}", f"{m} -> {t}", m,
                                     recipe={"dataset": f"domainnet_{t}", "finetune": ckpt}, paper=("table14", m, t)))
    return specs


def run_dir(results_root: str | Path, spec: RunSpec, seed: int) -> Path:
    return Path(results_root) / spec.experiment / spec.tag.replace("/", "__") / f"s{seed}"


def execute(specs: Iterable[RunSpec], seeds: Sequence[int] = (0,), *, preset: str = "quick",
            results_root: str | Path = "results", data_dir: str | None = None, download: bool = False,
            device: str = "auto", epochs: int | None = None, progress: bool = True, verbose: bool = True,
            **overrides: Any):
    """Train every (row, seed) not yet completed; return all their manifests as a DataFrame (one row per run)."""
    import pandas as pd

    from .train import run

    run = _stops_in_one_sentence(run)
    specs = list(specs)
    manifests = []
    for spec in specs:
        for seed in seeds:
            out = run_dir(results_root, spec, seed)
            done = out / "manifest.json"
            if done.exists() and json.loads(done.read_text()).get("status") == "completed":
                manifests.append(json.loads(done.read_text()))
                continue
            resume = (out / "checkpoint-last.pt").exists()
            if verbose:
                print(f"{'resuming' if resume else 'training'} {spec.tag} seed {seed} -> {out}", flush=True)
            kwargs = {**spec.recipe, **overrides, "model_kwargs": {**spec.model_kwargs,
                                                                   **overrides.get("model_kwargs", {})}}
            manifests.append(run(preset, output=out, data_dir=data_dir, download=download, device=device, resume=resume,
                                 experiment=spec.experiment, tag=spec.tag, progress=progress, verbose=verbose,
                                 model=spec.model, seed=seed, epochs=epochs, **kwargs))
    frame = pd.DataFrame(manifests)
    if len(frame):
        frame["run_dir"] = frame["output"]  # the column dhvtlib.results reads runs from
        frame["label"] = frame["tag"].map({s.tag: s.label for s in specs})
    return frame


def _stops_in_one_sentence(run):
    """`run`, with an interrupt that did not stop at a step boundary (a second Ctrl-C / Kernel > Interrupt) ending
    in the same one sentence as a graceful stop (dhvtlib.progress.RunInterrupted): no traceback in a notebook."""
    from .progress import RunInterrupted, interrupted

    def stopping(preset: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return run(preset, **kwargs)
        except RunInterrupted:
            raise
        except KeyboardInterrupt:
            raise interrupted(kwargs["output"], tell=kwargs.get("verbose", True)) from None

    return stopping


# ------------------------------------------------------------------------------------------------ validation
_COMMON = {"device": ("auto", "cpu", "cuda"), "preset": tuple(PRESETS)}
_NOTEBOOKS: dict[str, dict[str, tuple]] = {
    "00_quickstart": {"models": tuple(VARIANTS)},
    "01_cifar100": {"models": TABLE4_MODELS},
    "02_ablation": {"variant": ("tiny", "small"), "table": ABLATION_TABLES + ("ladder",)},
    "03_domainnet": {"domains": DOMAINNET_DOMAINS,
                     "models": ("dhvt_tiny_domain_patch16", "dhvt_small_domain_patch16")},
    "04_imagenet": {"models": ("dhvt_tiny_imagenet_patch16", "dhvt_small_imagenet_patch16"),
                    "finetune_targets": ("clipart", "painting", "sketch", "cifar100")},
    "05_head_tokens": {"method": ("integrated_gradients", "occlusion", "layer_integrated_gradients")},
}


def validate(notebook: str, **params: Any) -> dict[str, Any]:
    """Check a notebook's parameters; an unknown value raises one sentence listing the valid ones.

    Choice parameters are checked against their allowed values (a list parameter element by element); `seeds` must
    be non-negative integers, `epochs` a positive integer or None; `table` may be given as 5 or 'table5';
    `rows` must name rows of that table. Returns the parameters with `table` normalised.
    """
    if notebook not in _NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; choose one of: {', '.join(_NOTEBOOKS)}.")
    allowed = {**_COMMON, **_NOTEBOOKS[notebook]}
    params = dict(params)
    if "table" in params:
        t = str(params["table"])
        params["table"] = t if t in ABLATION_TABLES or not t.isdigit() else f"table{t}"
    for name, value in params.items():
        if name in allowed and value is not None:
            values = value if isinstance(value, (list, tuple)) else [value]
            bad = [v for v in values if v not in allowed[name]]
            if bad:
                raise ValueError(f"{name} {bad[0]!r} is not valid for {notebook}; choose from: "
                                 f"{', '.join(map(str, allowed[name]))}.")
    seeds = params.get("seeds")
    if seeds is not None and (not isinstance(seeds, (list, tuple)) or not seeds
                              or not all(isinstance(s, int) and s >= 0 for s in seeds)):
        raise ValueError(f"seeds {seeds!r} must be a non-empty list of non-negative integers, e.g. [0, 1, 2, 3].")
    epochs = params.get("epochs")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs {epochs!r} must be a positive integer, or None for the preset's value.")
    rows = params.get("rows")
    if rows and params.get("table") == "ladder":
        bad = [r for r in rows if r not in LADDER]
        if bad:
            raise ValueError(f"row {bad[0]!r} is not in the ladder; choose from: {', '.join(LADDER)}.")
    elif rows and "table" in params:
        valid = [r.row for r in ablation_rows(params["table"], params.get("variant", "tiny"))]
        bad = [r for r in rows if r not in valid]
        if bad:
            raise ValueError(f"row {bad[0]!r} is not in {params['table']}; choose from: {', '.join(valid)}.")
    return params
