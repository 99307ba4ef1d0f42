"""Named experiments: which runs make which paper table, and running them (the notebooks' engine room).

A `RunSpec` (dhvtlib.runspec) is one row of a table: a model (+ architecture overrides), the preset and recipe
overrides that table was produced with, and the paper cell it is compared with. The `*_runs` builders make a table's
rows; `EXPERIMENTS` names the experiments a notebook or dhvt-sweep (dhvtlib.sweep) runs: builder and default seeds.
`execute(specs, seeds)` trains each (row, seed) into `results/<experiment>/<row>/s<seed>/`, reusing a completed run
only when its recipe equals the one asked for (dhvtlib.plan), resuming interrupted ones, and returns the manifests as
a pandas frame; with launcher "local" or "slurm" the runs are submitted as jobs (dhvtlib.launch).

Script vs paper: where the official scripts and the paper's text disagree, a row follows what produced that table
as best it can be determined: the shipped script where one exists for that model (DHVT-T), else the paper's text
(DHVT-S on CIFAR-100 and DomainNet, ImageNet DHVT-S at batch 512). README "Recipe per table" lists each case.

Checks: each `*_runs` builder checks its own arguments (models, domains, table, rows, ...), and `validate(**params)`
checks the execution parameters every notebook shares (device, preset, launcher, seeds, epochs, sizes). A notebook
calls both right after its parameters cell, so a bad value is one sentence before anything runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import launch
from .data.datasets import DOMAINNET_DOMAINS
from .models import CNN_VARIANTS, list_models
from .models.ablations import ABLATIONS, ablation_rows
from .paths import store_root
from .plan import plan_runs
from .recipe import PRESETS, Recipe, resolve
from .run.progress import RunInterrupted, install_refusals, interrupted
from .run.rundir import read_manifest
from .run.train import run as train_run
from .runspec import RunSpec, run_dir, spec_data_dir, spec_dataset

__all__ = ["RunSpec", "Experiment", "EXPERIMENTS", "quickstart_runs", "quickstart_checkpoint", "cifar100_runs",
           "ablation_runs", "ladder_runs", "domainnet_runs", "table16_runs", "imagenet_runs", "finetune_runs",
           "own_data_runs", "own_data_models", "execute", "run_dir", "validate", "ablation_table", "spec_dataset",
           "spec_data_dir", "LADDER", "TABLE4_MODELS", "DOMAINNET_MODELS", "IMAGENET_MODELS", "FINETUNE_TARGETS"]

TABLE4_MODELS = ("deit_tiny_cifar_patch4", "deit_small_cifar_patch4", "deit_tiny_cifar_patch2",
                 "deit_small_cifar_patch2", "dhvt_tiny_cifar_patch4", "dhvt_small_cifar_patch4",
                 "dhvt_tiny_cifar_patch2", "dhvt_small_cifar_patch2")
DOMAINNET_MODELS = ("dhvt_tiny_domain_patch16", "dhvt_small_domain_patch16", "resnet50_domain")  # Tables 2, 13
IMAGENET_MODELS = ("dhvt_tiny_imagenet_patch16", "dhvt_small_imagenet_patch16")  # Tables 3, 15
FINETUNE_TARGETS = ("clipart", "painting", "sketch", "cifar100")  # Table 14 (DomainNet) and Table 7 (CIFAR-100)
# The Table 5/6 ladder: DeiT with and without PE, +SOPE, +DAFF, +SOPE+DAFF, full DHVT (head tokens).
LADDER = ("table5/none", "table5/pe", "table5/sope", "table5/daff", "table5/sope_daff", "table6/sope_daff_ht")


def _check(name: str, values: Iterable[Any], allowed: Sequence[Any], where: str) -> None:
    """One sentence for the first value of `values` not in `allowed`, listing the valid ones."""
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"{name} {bad[0]!r} is not {where}; choose from: {', '.join(map(str, allowed))}.")


def quickstart_runs(models: Sequence[str] = ("dhvt_tiny_cifar_patch4", "deit_tiny_cifar_patch4"),
                    experiment: str = "quick") -> list[RunSpec]:
    """The quick preset's comparison: each model at the preset's width and depth on the embedded data."""
    _check("model", models, list_models(), "a registered model")
    return [RunSpec(experiment, m, m, m, preset="quick") for m in models]


def quickstart_checkpoint(results_root: str | Path, model: str = "dhvt_tiny_cifar_patch4", experiment: str = "quick",
                          **execute_kwargs: Any) -> Path:
    """The weights of the quickstart's `model`: the newest completed run of it with its model.safetensors under
    `<results_root>/<experiment>` whatever its budget (00 may have run with other epochs), else the run trained
    (or reused from the store) by `execute(quickstart_runs([model], experiment), **execute_kwargs)`."""
    runs = sorted((Path(results_root) / experiment / model).glob("s*/model.safetensors"),
                  key=lambda p: p.stat().st_mtime)
    done = [p for p in runs if read_manifest(p.parent).get("status") == "completed"]
    if done:
        return done[-1]
    frame = execute(quickstart_runs([model], experiment), results_root=results_root, need_weights=True,
                    **execute_kwargs)
    return Path(frame["output"].iloc[0]) / "model.safetensors"


def cifar100_runs(models: Sequence[str] | None = None) -> list[RunSpec]:
    """Table 4: DHVT-T/S and the DeiT baselines at patch 4 and 2 on CIFAR-100. The S rows train at batch 256, as
    the paper's text says (the shipped script is DHVT-T's, 2 x 256); lr 1e-3 is scaled to 5e-4 there (unverified:
    the paper gives lr 0.001 without saying whether it was scaled)."""
    _check("model", models or (), TABLE4_MODELS, "in Table 4")
    return [RunSpec("cifar100", f"table4/{m}", m, m, recipe={"dataset": "cifar100"}, paper=("table4", m, None),
                    preset=_table_preset("cifar100", m))
            for m in (models or TABLE4_MODELS)]


# The paper's batch sizes (its text) where no shipped script covers the model.
_PAPER_TEXT_BATCH = {("cifar100", "small"): 256, ("domainnet", "small"): 128, ("imagenet", "small"): 512}


def _table_preset(preset: str, model: str, **values: Any) -> str | Recipe:
    """The preset a table's row was trained with: the named preset, at the paper's batch where no script covers
    the model, with `values` (e.g. the ResNet-50 row's drop_path) applied."""
    batch = _PAPER_TEXT_BATCH.get((preset, "small" if "_small_" in model else "tiny"))
    values = {**({"batch_size": batch} if batch else {}), **values}
    return resolve(preset, **values) if values else preset


def ablation_runs(table: str, variant: str = "tiny", rows: Sequence[str] | None = None,
                  experiment: str = "ablation") -> list[RunSpec]:
    """One ablation table's rows (Table 11's rows carry their batch size). Paper numbers exist for DHVT-T only.
    `table` may be 5, '5' or 'table5'; `rows` must name rows of that table."""
    table = ablation_table(table)
    table_rows = ablation_rows(table, variant)  # (checks the table and the variant)
    _check("row", rows or (), [r.row for r in table_rows], f"in {table}")
    out = []
    for r in table_rows:
        if rows and r.row not in rows:
            continue
        out.append(RunSpec(experiment, r.key, r.label, r.base, dict(r.model_kwargs), dict(r.recipe),
                           paper=(r.table, r.row, None) if variant == "tiny" or r.table == "table10" else None,
                           preset="ablation"))
    return out


def ladder_runs(experiment: str = "ladder", rows: Sequence[str] | None = None) -> list[RunSpec]:
    """The small-data ladder (Tables 5/6 rows) compared with the paper's CIFAR-100 numbers."""
    _check("row", rows or (), LADDER, "in the ladder")
    return [RunSpec(experiment, k, ABLATIONS[k].label, ABLATIONS[k].base, dict(ABLATIONS[k].model_kwargs),
                    paper=(ABLATIONS[k].table, ABLATIONS[k].row, None), preset="quick")
            for k in LADDER if not rows or k in rows]


def domainnet_runs(domains: Sequence[str] = DOMAINNET_DOMAINS,
                   models: Sequence[str] = DOMAINNET_MODELS[:2]) -> list[RunSpec]:
    """Tables 2 and 13: DHVT-T/S (and the ResNet-50 row: models=[..., 'resnet50_domain']) from scratch on each
    DomainNet domain (224 px). A CNN's tag and paper cell use its paper row ('table13/resnet50/<domain>')."""
    _check("domain", domains, DOMAINNET_DOMAINS, "a DomainNet domain")
    _check("model", models, DOMAINNET_MODELS, "in Tables 2 and 13")
    rows = {m: (CNN_VARIANTS[m].paper_row[1] if m in CNN_VARIANTS and CNN_VARIANTS[m].paper_row else m)
            for m in models}
    return [RunSpec("domainnet", f"table13/{rows[m]}/{d}", f"{m} {d}", m, recipe={"dataset": f"domainnet_{d}"},
                    paper=("table13", rows[m], d), preset=_table_preset("domainnet", m, **_CNN_VALUES.get(m, {})))
            for m in models for d in domains]


# The ResNet-50 row ("the official PyTorch implementation, same augmentation"): torchvision's ResNet-50 has no
# stochastic depth (its last BN per block starts at 1, see models/cnn.py); the rest of the row's recipe is
# DHVT-T's domainnet preset (an assumption: the paper states no other value).
_CNN_VALUES = {"resnet50_domain": {"drop_path": 0.0}}


def table16_runs(targets: Sequence[str] = ("cifar100", "clipart", "painting", "sketch"),
                 models: Sequence[str] = ("dhvt_tiny_domain_patch16", "dhvt_small_domain_patch16")) -> list[RunSpec]:
    """Table 16: DHVT-T/S from scratch at 224 px, patch 16, for 100 epochs on CIFAR-100 (upsampled to 224) and
    three DomainNet domains, with Drloc's training scheme as the paper says: the `drloc` preset (its values and
    their source lines in Drloc's code: dhvtlib.recipe.DRLOC_SCHEME), the same for DHVT-T and DHVT-S."""
    paper_row = {"dhvt_tiny_domain_patch16": "dhvt_t", "dhvt_small_domain_patch16": "dhvt_s"}
    specs = []
    for m in models:
        for t in targets:
            data = {"dataset": "cifar100", "img_size": 224} if t == "cifar100" else {"dataset": f"domainnet_{t}"}
            specs.append(RunSpec("table16", f"table16/{m}/{t}", f"{m} {t} (224 px, 100 epochs)", m,
                                 recipe=data, paper=("table16", paper_row[m], t) if m in paper_row else None,
                                 preset="drloc"))
    return specs


def imagenet_runs(models: Sequence[str] = IMAGENET_MODELS) -> list[RunSpec]:
    """Tables 3 and 15: DHVT-T/S on ImageNet-1K."""
    _check("model", models, IMAGENET_MODELS, "in Table 3")
    return [RunSpec("imagenet", f"table3/{m}", m, m, recipe={"dataset": "imagenet"},
                    paper=("table3", m, "imagenet"), preset=_table_preset("imagenet", m))
            for m in models]


def finetune_runs(checkpoints: dict[str, str | None], targets: Sequence[str] = FINETUNE_TARGETS) -> list[RunSpec]:
    """Tables 14 and 7: fine-tune ImageNet-1K checkpoints ({model: path}) on DomainNet domains and on CIFAR-100
    upsampled to 224 px (Table 7 fine-tunes at 224). A path of None plans the rows (checks) before training."""
    _check("finetune target", targets, FINETUNE_TARGETS, "a fine-tuning target")
    specs = []
    for m, ckpt in checkpoints.items():
        for t in targets:
            if t == "cifar100":
                specs.append(RunSpec("finetune", f"table7/{m}", f"{m} -> CIFAR-100 (224 px)", m,
                                     recipe={"dataset": "cifar100", "img_size": 224, "finetune": ckpt},
                                     paper=("table7", m, None), preset="finetune"))
            else:
                specs.append(RunSpec("finetune", f"table14/{m}/{t}", f"{m} -> {t}", m,
                                     recipe={"dataset": f"domainnet_{t}", "finetune": ckpt}, paper=("table14", m, t),
                                     preset="finetune"))
    return specs


def own_data_models() -> list[str]:
    """The models 06_your_data compares by default: DHVT-T/4, DeiT-T/4 and the small-image CNN baseline
    (resnet18_cifar)."""
    return ["dhvt_tiny_cifar_patch4", "deit_tiny_cifar_patch4", "resnet18_cifar"]


def own_data_runs(models: Sequence[str] | None = None, experiment: str = "your_data") -> list[RunSpec]:
    """Each model on your own image folder (dataset 'imagefolder'; no paper number to compare with)."""
    _check("model", models or (), list_models(), "a registered model")
    return [RunSpec(experiment, m, m, m, recipe={"dataset": "imagefolder"}, preset="quick")
            for m in (models or own_data_models())]


@dataclass(frozen=True)
class Experiment:
    """A named experiment: the builder of its rows, the seeds its notebook runs by default, and that notebook."""
    runs: Callable[..., list[RunSpec]]
    seeds: tuple[int, ...]
    notebook: str


# The one table of named experiments: dhvt-sweep's --experiment choices and default seeds (dhvtlib.sweep), and the
# notebooks' default seeds (checked against it by tests/test_sweep.py) read it.
EXPERIMENTS = {
    "quick": Experiment(quickstart_runs, (0,), "00_quickstart"),
    "cifar100": Experiment(cifar100_runs, (0, 1, 2, 3, 4), "01_cifar100"),
    "ablation": Experiment(ablation_runs, (0, 1, 2, 3), "02_ablation"),
    "ladder": Experiment(ladder_runs, (0, 1, 2, 3), "02_ablation"),  # 02 with table="ladder"
    "domainnet": Experiment(domainnet_runs, (0, 1, 2, 3), "03_domainnet"),
    "imagenet": Experiment(imagenet_runs, (0,), "04_imagenet"),
}


def execute(specs: Iterable[RunSpec], seeds: Sequence[int] = (0,), *, preset: str | None = None,
            results_root: str | Path = "results", data_dir: str | Path | Mapping[str, Any] | None = None,
            download: bool = False,
            device: str = "auto", epochs: int | None = None, progress: bool = True, verbose: bool = True,
            launcher: str | Any = "inline", launch_options: dict[str, Any] | None = None, wait: bool | None = None,
            order: str | Callable[[RunSpec, int], Any] = "row", store: str | Path | None = "auto",
            need_weights: bool = False, plan_only: bool = False, **overrides: Any):
    """Train every (row, seed) not yet completed; return all their manifests as a DataFrame (one row per run).

    `preset`: None trains each row with its own preset (the one its table was produced with); a name (e.g.
    "smoke") applies to every row. `overrides` apply to every row on top of the row's own values; None values mean
    "not given" and never erase a row's value. A completed run is reused only if its recipe equals the one asked
    for (execution-only values aside); otherwise one sentence names the values that differ. `data_dir`: a folder,
    or {data set or family: folder}; DomainNet rows read `<folder>/<domain>` (see `spec_data_dir`).

    `launcher`: one of `launch.LAUNCHERS`: "inline" (each run in this process, one after another), "local"
    (concurrent submitit jobs on this machine) or "slurm" (one submitit job per run), or a `launch.LaunchConfig`;
    `launch_options` are its options (e.g. {"workers": 2, "threads": 1} or {"partition": "gpu", "gpus_per_run": 2}),
    see dhvtlib.launch. With a launcher, `wait=False` submits and returns the runs finished so far; calling again
    collects the others. The frame is then built from the run directories (`frame.attrs["jobs"]`: run directory ->
    job id).

    `store`: a results tree read as a store of completed runs ("auto": the committed `results/`, see
    dhvtlib.paths; None: none): a run missing from `results_root` but completed there with the same recipe is
    reused, its records (and weights, if present) copied into `results_root`, instead of being trained again;
    with `need_weights` (the caller loads the model) only runs whose model.safetensors is present are reused.

    `plan_only`: train nothing; the frame holds the runs already completed (reused from the store as above) and
    the last records of those started and not completed (interrupted, or running elsewhere), and
    `frame.attrs["missing"]` the (tag, seed) of every run not completed.

    A row with its own `seeds` runs those instead of `seeds`. `order`: "row" trains a row's seeds one after another,
    "seed" every row's first seed before any row's second (a long study gives a complete first picture early), or
    a function of (row, seed) giving each run's sort key (a stable sort: equal keys keep the rows' order), e.g. to
    queue some rows after every seed of the others in one queue, so no worker waits for a second queue.
    """
    cfg = launch.config(launcher, **{**(launch_options or {}), **({"wait": wait} if wait is not None else {})})
    specs = list(specs)
    if not callable(order) and order not in ("row", "seed"):
        raise ValueError(f"order {order!r} is not an order of runs; use 'row', 'seed' or a function of (row, seed).")
    todo, manifests = plan_runs(specs, seeds, preset, results_root, epochs, overrides, verbose,
                                store=_store(store, results_root), need_weights=need_weights)
    if callable(order):
        todo.sort(key=lambda t: order(t[0], t[1]))  # stable: rows keep their order
    elif order == "seed":
        todo.sort(key=lambda t: (t[0].seeds or tuple(seeds)).index(t[1]))
    tasks = _tasks(todo, data_dir, overrides.get("dataset"), download, device)
    if plan_only:  # nothing trains; a run started and not completed is in the frame with its last records
        manifests.update(_recorded(tasks))
        tasks = []
    jobs = {}
    if cfg.launcher == "inline":
        manifests.update(_train_inline(tasks, progress, verbose))
    elif tasks:
        jobs = launch.launch(tasks, cfg, results_root, verbose=verbose)
        manifests.update(_recorded(tasks))
    missing = [(spec.tag, seed) for spec, seed, *_ in todo] if plan_only else []
    return _frame(specs, seeds, results_root, manifests, jobs, missing)


def _store(store: str | Path | None, results_root: str | Path) -> str | Path | None:
    """The results tree to reuse completed runs from: "auto" is the committed `results/` (dhvtlib.paths), and none
    when it is `results_root` itself."""
    if store == "auto":
        store = store_root()
    if store is not None and Path(store).resolve() == Path(results_root).resolve():
        return None
    return store


def _tasks(todo: list[tuple], data_dir: str | Path | Mapping[str, Any] | None, dataset: str | None,
           download: bool, device: str) -> list[launch.RunTask]:
    """The runs to train, as the launchers take them (each row reading its own data folder)."""
    tasks = []
    for spec, seed, out, row_preset, kwargs in todo:
        folder = spec_data_dir(spec, data_dir, dataset)
        tasks.append(launch.RunTask(str(out), row_preset, kwargs, spec.experiment, spec.tag, seed,
                                    None if folder is None else str(folder), download, device))
    return tasks


def _train_inline(tasks: list[launch.RunTask], progress: bool, verbose: bool) -> dict[str, dict[str, Any]]:
    """Launcher "inline": each run in this process, one after another; {run directory: manifest}."""
    run = _stops_in_one_sentence(train_run)  # a hard interrupt also ends in one sentence in a notebook
    manifests = {}
    for task in tasks:
        out = Path(task.output)
        resume = (out / "checkpoint-last.pt").exists()
        if verbose:
            print(f"{'resuming' if resume else 'training'} {task.tag} seed {task.seed} -> {out}", flush=True)
        manifests[task.output] = run(task.preset, output=out, data_dir=task.data_dir, download=task.download,
                                     device=task.device, resume=resume, experiment=task.experiment, tag=task.tag,
                                     progress=progress, verbose=verbose, **task.kwargs)
    return manifests


def _recorded(tasks: list[launch.RunTask]) -> dict[str, dict[str, Any]]:
    """{run directory: manifest} of the submitted runs, as far as they have got (the table is built from the run
    directories)."""
    manifests = {}
    for task in tasks:
        manifest = read_manifest(task.output)
        if manifest:
            manifests[task.output] = manifest
    return manifests


def _frame(specs: list[RunSpec], seeds: Sequence[int], results_root: str | Path, manifests: dict[str, Any],
           jobs: dict[str, str], missing: list[tuple[str, int]]):
    """The manifests as a DataFrame, one row per run in the order of the rows and their seeds; `attrs["jobs"]` and
    `attrs["missing"]` as `execute` says."""
    import pandas as pd  # pandas is optional (the notebooks extra): only the table needs it, not the builders

    outs = [str(run_dir(results_root, spec, seed)) for spec in specs for seed in (spec.seeds or seeds)]
    frame = pd.DataFrame([manifests[o] for o in outs if o in manifests])
    if len(frame):
        frame["run_dir"] = frame["output"]  # the column dhvtlib.results reads runs from
        frame["label"] = frame["tag"].map({s.tag: s.label for s in specs})
    frame.attrs["jobs"] = jobs
    frame.attrs["missing"] = missing
    return frame


def _stops_in_one_sentence(run):
    """`run`, with an interrupt that did not stop at a step boundary (a second Ctrl-C / Kernel > Interrupt) ending
    in the same one sentence as a graceful stop (dhvtlib.run.rundir.RunInterrupted): no traceback in a notebook."""

    def stopping(preset: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return run(preset, **kwargs)
        except RunInterrupted:
            raise
        except KeyboardInterrupt:
            raise interrupted(kwargs["output"], tell=kwargs.get("verbose", True)) from None  # (a second Ctrl-C)

    return stopping


# ------------------------------------------------------------------------------------------------ validation
_CHOICES = {"device": ("auto", "cpu", "cuda"), "preset": tuple(PRESETS), "launcher": launch.LAUNCHERS}
_SIZES = ("img_size", "samples_per_class")  # a positive integer, or None (inferred / every image)


def validate(**params: Any) -> dict[str, Any]:
    """Check the execution parameters every notebook shares; a bad value raises one sentence naming the fix.

    `device`, `preset` and `launcher` must be one of their values (None: the default), `seeds` a non-empty list of
    non-negative integers, `epochs` a positive integer or None, `img_size` and `samples_per_class` positive
    integers or None. Other parameters are the business of the `*_runs` builder that takes them. Returns the
    parameters. In a Jupyter kernel it also makes dhvtlib's refusals in later cells one sentence, not a traceback
    (`progress.install_refusals`)."""
    install_refusals()
    for name, allowed in _CHOICES.items():
        if params.get(name) is not None:
            _check(name, [params[name]], allowed, f"a valid {name}")
    seeds = params.get("seeds")
    if seeds is not None and (not isinstance(seeds, (list, tuple)) or not seeds
                              or not all(isinstance(s, int) and s >= 0 for s in seeds)):
        raise ValueError(f"seeds {seeds!r} must be a non-empty list of non-negative integers, e.g. [0, 1, 2, 3].")
    epochs = params.get("epochs")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs {epochs!r} must be a positive integer, or None for the preset's value.")
    for name in _SIZES:
        v = params.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{name} {v!r} must be a positive integer, or None (inferred from the data / all images).")
    return params


def ablation_table(table: str | int) -> str:
    """An ablation table's name as the rows call it: 5, '5' and 'table5' are 'table5'; 'affine' and 'ladder' stay."""
    t = str(table)
    return f"table{t}" if t.isdigit() else t
