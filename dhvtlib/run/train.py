"""Orchestration: recipe -> data -> model -> optimiser and schedule -> epochs -> checkpoints and records.

    python -m dhvtlib.run --preset quick --output runs/quick
    torchrun --nproc_per_node 2 -m dhvtlib.run --preset cifar100 --model dhvt_tiny_cifar_patch2 --data-dir data/c100
    python -m dhvtlib.run --preset quick --output runs/quick --resume        # continue after a crash or Ctrl-C

`run()` is the same from Python (the notebooks call it) and returns the run manifest. A run directory holds
config.json, metrics.jsonl/.csv, manifest.json, checkpoint-last.pt, checkpoint-best.pt and model.safetensors.
What is built lives in build.py, the loop in loop.py, the checkpoint (what it holds, when it is written, the write)
in state.py, device and precision in runtime.py, the run directory's files, lock and signals in rundir.py;
evaluation of a saved model (dhvt-eval) is dhvtlib/evaluate.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from timm.utils import ModelEmaV3
from torch import nn

from ..checkpoint import export_safetensors, load_checkpoint, load_weights
from ..cli import recipe_overrides, train_parser
from ..data.loaders import eval_indices, train_indices
from ..files import write_json
from ..models import convert_sope_sync_batchnorm
from ..models.ablations import ABLATIONS
from ..models.profile import count_params
from ..paths import check_name
from ..recipe import Recipe, describe_diff, idle_warning, recipe_from_dict, resolve
from .build import (RunData, build_criterion, build_data, build_model, build_optimizer, compile_model,
                    use_virtual_gpus)
from .loop import EpochState, NonFiniteLossError, StopRequested, evaluate, train_one_epoch
from .progress import interrupted, progress_bar
from .rundir import (WRITE_ERRORS, RunInterrupted, RunLock, RunLockedError, StopSignals, check_reuse,
                     local_job, make_run_dir, read_manifest, remove_stale_temp, summarize, summary_line,
                     unstarted_recipe, write_metrics)
from .state import Checkpoints, RunState, raise_if_nonfinite, resume_hint
from .runtime import (Dist, check_replicas_in_sync, environment, git_state, init_distributed, keep_precision, now,
                      resolve_precision, seed_everything)

__all__ = ["run", "main"]


# ------------------------------------------------------------------------------------------------ the run
def run(preset: str | Recipe | None = None, *, output: str | os.PathLike | None = None, data_dir: str | None = None,
        download: bool = False, resume: bool = False, device: str = "auto", experiment: str | None = None,
        tag: str | None = None, progress: bool = True, verbose: bool = True,
        change_recipe: bool = False, **overrides: Any) -> dict[str, Any]:
    """Train one model with a preset recipe (any recipe value can be overridden) and return its manifest.

    `preset`: a name from PRESETS or a Recipe; None is 'quick' for a new run and the run's own saved recipe when
    resuming. `output`: the run directory (default runs/<preset>/<model>-<dataset>-s<seed>); one process writes
    it at a time (a lock). `resume=True` continues from its checkpoint-last.pt (model, optimiser, scheduler,
    scaler, EMA, every RNG state, sampler position) and ends bitwise equal to an uninterrupted run on CPU; the
    recipe must equal the saved one (values not given are taken from it), except `EXECUTION_FIELDS`. A completed
    run is never reopened: resuming it returns its manifest unchanged. After a divergence, `change_recipe=True`
    resumes the last finite checkpoint with another lr, clip_grad or precision; the manifest records the change.
    `experiment` and `tag` label the run for results tables.
    """
    for name, what in ((experiment, "experiment"), (tag, "tag")):
        if name is not None:
            check_name(name, what)  # results tables turn them into folders
    d, dev = init_distributed(device)
    ckpt, saved = None, None
    if resume:
        if output is None:
            raise ValueError("resume needs the run directory: pass output= (--output runs/...).")
        last = Path(output) / "checkpoint-last.pt"
        if last.is_file():
            ckpt = load_checkpoint(last)
            saved = ckpt["config"]
        else:
            saved = unstarted_recipe(Path(output))
            if saved is None:
                raise FileNotFoundError(f"cannot resume: {last} does not exist; start the run without resume or "
                                        "point output at the run directory to continue.")
            if verbose and d.main:
                print(f"{output} stopped before its first checkpoint: starting it again from the beginning.",
                      flush=True)
    recipe = resolve(recipe_from_dict(saved) if preset is None and saved else preset or "quick", **overrides)
    recipe = keep_precision(recipe, saved)  # a run continues as it started
    out = Path(output) if output else Path("runs") / recipe.name / f"{recipe.model}-{recipe.dataset}-s{recipe.seed}"
    labels = dict(experiment=experiment, tag=tag, progress=progress, verbose=verbose)
    if not d.main:
        return _train(recipe, out, d, dev, ckpt, data_dir, download, changes={}, **labels)
    created = make_run_dir(out)
    try:
        with RunLock(out):
            previous = read_manifest(out)
            changes = check_reuse(out, previous, saved, recipe, resume, change_recipe)
            if resume and previous.get("status") == "completed":
                if verbose:
                    print(f"{out} is already completed; nothing to resume.", flush=True)
                return previous
            remove_stale_temp(out)
            return _train(recipe, out, d, dev, ckpt, data_dir, download, changes=changes, **labels)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):  # nothing was written: leave no empty folder
            with contextlib.suppress(OSError):
                out.rmdir()


def _train(recipe: Recipe, out: Path, d: Dist, dev: torch.device, ckpt: dict[str, Any] | None, data_dir,
           download: bool, *, changes: dict[str, tuple[Any, Any]], experiment: str | None, tag: str | None,
           progress: bool, verbose: bool) -> dict[str, Any]:
    """Build everything, restore `ckpt`, run the remaining epochs and write the records (rank 0)."""
    precision, precision_reason = resolve_precision(recipe.precision, dev, ckpt.get("precision") if ckpt else None)
    seed_everything(recipe.seed + d.rank)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = False
    data = build_data(recipe, data_dir, download, d, dev)
    rs, loop = _build(recipe, data, precision, d, dev, finetune=ckpt is None, verbose=verbose and d.main)
    if ckpt is not None:
        rs.load_state_dict(ckpt, d.rank)
    if changes:
        _change_recipe(rs, changes, _steps_per_epoch(recipe, data, d), verbose=verbose and d.main)
    manifest = _manifest(rs, out, data, d, dev, loop, experiment=experiment, tag=tag, reason=precision_reason)
    note = idle_warning(recipe)
    if note:
        manifest["notes"] = [note]
        if verbose and d.main:
            print(note, flush=True)
    rs.start_session(**{k: manifest[k] for k in SESSION_KEYS}, **local_job())
    manifest["sessions"] = rs.session_records()
    if d.main:
        write_json(out / "config.json", recipe.to_dict())
        write_json(out / "manifest.json", manifest)
    saver, stop = Checkpoints(rs, out, d, dev), StopSignals()
    status, error = "running", None
    try:
        with stop:
            for epoch in range(rs.epoch, recipe.epochs):
                row = _epoch(rs, loop, data, saver, stop, epoch, show=progress and d.main)
                _record(rs, saver, row, out, verbose=verbose and d.main)
            if d.world_size > 1:
                check_replicas_in_sync(rs.model)
                manifest["ddp_params_in_sync"] = True
        status = "completed"
    except StopRequested as e:
        rs.epoch_state = e.state
        saver.save()
        status = "interrupted"
    except NonFiniteLossError as e:
        status, error = "diverged", str(e)
        if "--change-recipe" not in str(e):
            raise NonFiniteLossError(f"{e} ({resume_hint(out)})") from None
        raise
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        status = "failed" if status == "running" else status
        if d.main:
            _finish(rs, out, manifest, status, error)
    if status == "interrupted":
        raise interrupted(out, tell=verbose and d.main, signum=stop.signum or signal.SIGINT)
    return manifest


@dataclasses.dataclass
class _Loop:
    """What the epochs run with beside the checkpointed RunState."""
    net: nn.Module             # the model, wrapped in DistributedDataParallel under torchrun
    criterion: nn.Module
    mixup_fn: Any
    sync_bn: bool              # SOPE's BatchNorm synchronised over the processes
    bn_groups: int             # DAFF BatchNorm groups per process ("virtual GPUs")


def _build(recipe: Recipe, data: RunData, precision: str, d: Dist, dev: torch.device, *, finetune: bool,
           verbose: bool) -> tuple[RunState, _Loop]:
    model = build_model(recipe, data.info)
    model.data_config = data.info.eval_config()  # size, channels, mean/std, resize rule: saved for evaluation
    if recipe.finetune and finetune:
        skipped = load_weights(model, recipe.finetune, new_head_ok=True)
        if verbose and skipped:
            print(f"fine-tuning from {recipe.finetune}: new head ({', '.join(skipped)} re-initialised)")
    sync_bn = d.world_size > 1
    if sync_bn:  # SOPE's BatchNorm over all processes: torch's SyncBatchNorm on CUDA, all_reduce-based elsewhere
        convert_sope_sync_batchnorm(model, native=dev.type == "cuda")
    model.to(dev)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, recipe, steps_per_epoch=_steps_per_epoch(recipe, data, d))
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
    ema = ModelEmaV3(model, decay=recipe.model_ema_decay) if recipe.model_ema else None
    criterion, mixup_fn = build_criterion(recipe, data.info.num_classes)
    mixup_fn, bn_groups = use_virtual_gpus(model, mixup_fn, recipe.virtual_gpus, d.world_size)
    if recipe.compile:
        compile_model(model, dev)
    net: nn.Module = model
    if d.world_size > 1:
        # Table 8's "split CLS" rows without SE leave the last block's patch FFN unused (see ablations.py).
        unused = recipe.model_kwargs.get("daff_se") == "none"
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                  find_unused_parameters=unused)
    rs = RunState(recipe, model, optimizer, scheduler, precision, scaler=scaler, ema=ema,
                  generators=data.generators)
    return rs, _Loop(net, criterion, mixup_fn, sync_bn, bn_groups)


def _steps_per_epoch(recipe: Recipe, data: RunData, d: Dist) -> int:
    """Optimizer updates per epoch (the same in every epoch): the per-step schedule's unit."""
    idx = train_indices(len(data.train), 0, recipe.seed, rank=d.rank, world_size=d.world_size,
                        repeated_aug=recipe.repeated_aug, repeats=recipe.ra_repeats)
    return data.train.steps(idx)


def _change_recipe(rs: RunState, changes: dict[str, tuple[Any, Any]], spe: int, *, verbose: bool) -> None:
    """change_recipe after a divergence: the new lr takes effect from the resumed epoch on; the change is recorded."""
    if "lr" in changes:
        for g in rs.optimizer.param_groups:
            g["initial_lr"] = rs.recipe.effective_lr
        _, rs.scheduler = build_optimizer(rs.model, rs.recipe, optimizer=rs.optimizer, steps_per_epoch=spe)
        if rs.recipe.sched_unit == "step":
            rs.scheduler.step_update(rs.epoch * spe + (rs.epoch_state.step if rs.epoch_state else 0))
        else:
            rs.scheduler.step(max(rs.epoch - 1, 0))  # the lr DeiT's per-epoch stepping gives the resumed epoch
    rs.recipe_changes.append({"epoch": rs.epoch, "step": rs.epoch_state.step if rs.epoch_state else 0, "at": now(),
                              "changes": {k: list(v) for k, v in changes.items()}})
    if verbose:
        print(f"resuming with a changed recipe: {describe_diff(changes)} (recorded in the manifest)", flush=True)


# Who ran a session of the run (RunState.start_session): the manifest's top-level values are the last session's.
SESSION_KEYS = ("git_commit", "git_dirty", "versions", "hardware", "device", "world_size", "precision")


def _manifest(rs: RunState, out: Path, data: RunData, d: Dist, dev: torch.device, loop: _Loop, *,
              experiment: str | None, tag: str | None, reason: str) -> dict[str, Any]:
    """The run's record as it starts (see docs/interfaces.md); `_finish` adds the outcome."""
    r = rs.recipe
    commit, dirty = git_state()
    return {"run_id": out.name, "experiment": experiment or r.name, "tag": tag, "model": r.model,
            "model_kwargs": r.model_kwargs, "dataset": r.dataset, "preset": r.name, "seed": r.seed,
            "config": r.to_dict(), "samples_per_class": r.samples_per_class,
            "train_images": len(data.train), "test_images": len(data.test), "data": data.info.details,
            "params": count_params(rs.model), "model_config": rs.model.config,
            "git_commit": commit, "git_dirty": dirty, **environment(dev), "device": str(dev),
            "world_size": d.world_size, "sync_bn": loop.sync_bn, "precision": rs.precision,
            "precision_reason": reason, "bn_groups_per_process": loop.bn_groups, "effective_lr": r.effective_lr,
            "started": rs.started, "ended": None, "wall_s": None, "cpu_s": None, "status": "running",
            "output": str(out), "recipe_changes": rs.recipe_changes}


# ------------------------------------------------------------------------------------------------ one epoch
def _epoch(rs: RunState, loop: _Loop, data: RunData, saver: Checkpoints, stop: StopSignals, epoch: int, *,
           show: bool) -> dict[str, Any]:
    """Train epoch `epoch` (from its saved step when resuming inside it), step the schedule, evaluate when due;
    returns its metrics row."""
    r, d = rs.recipe, saver.d
    idx = train_indices(len(data.train), epoch, r.seed, rank=d.rank, world_size=d.world_size,
                        repeated_aug=r.repeated_aug, repeats=r.ra_repeats)
    state = rs.epoch_state or EpochState()
    rs.epoch, rs.epoch_state = epoch, state
    lr = rs.optimizer.param_groups[0]["lr"]
    spe = data.train.steps(idx)
    bar = progress_bar(show, spe, state.step, f"epoch {epoch + 1}/{r.epochs}")

    def on_step(st: EpochState) -> None:
        if r.sched_unit == "step":  # the lr of the next update, before a mid-epoch checkpoint saves the optimiser
            rs.scheduler.step_update(epoch * spe + st.step)
        saver.after_step(st)
    try:
        state = train_one_epoch(
            loop.net, data.train.batches(idx, train=True, start_step=state.step, epoch=epoch), loop.criterion,
            rs.optimizer, device=saver.dev, precision=rs.precision, mixup_fn=loop.mixup_fn, ema=rs.ema,
            scaler=rs.scaler, clip_grad=r.clip_grad, state=state, epoch=epoch, progress=bar,
            on_step=on_step, stop_requested=lambda: stop.set,
            train_mode=not (r.finetune and r.finetune_eval_mode))
    finally:
        if bar is not None:  # an interrupted epoch's bar too
            bar.close()
    rs.epoch_state = state
    raise_if_nonfinite(rs, saver.out)  # before evaluating diverged weights
    if r.sched_unit == "epoch":
        rs.scheduler.step(epoch)  # as DeiT: lr_scheduler.step(epoch) after each epoch
    row = {"epoch": epoch, "train_loss": state.loss_sum / max(state.samples, 1), "lr": lr,
           "epoch_s": state.data_s + state.compute_s,
           "img_s": state.samples / max(state.compute_s + state.data_s, 1e-9) * d.world_size,
           "data_s": state.data_s, "compute_s": state.compute_s}
    if (epoch + 1) % r.eval_every == 0 or epoch + 1 == r.epochs:
        row.update(_evaluate(rs, loop.net, data, saver, epoch))
    return row


def _evaluate(rs: RunState, net: nn.Module, data: RunData, saver: Checkpoints, epoch: int) -> dict[str, float]:
    d, dev = saver.d, saver.dev

    def on(model: nn.Module) -> dict[str, float]:
        batches = data.test.batches(eval_indices(len(data.test), d.rank, d.world_size), train=False)
        return evaluate(model, batches, device=dev, precision=rs.precision)

    start = time.perf_counter()
    ev = on(net)
    if not math.isfinite(ev["test_loss"]):
        raise NonFiniteLossError(
            f"the test loss is {ev['test_loss']} after epoch {epoch + 1} although the weights are finite (an "
            f"overflow); the run stopped and keeps its last good checkpoint: lower lr or use precision='fp32' "
            f"({resume_hint(saver.out)}).")
    row = {"test_loss": ev["test_loss"], "top1": ev["top1"], "top5": ev["top5"]}
    if rs.ema is not None and rs.recipe.eval_ema:
        ev_ema = on(rs.ema.module)
        row.update(ema_top1=ev_ema["top1"], ema_top5=ev_ema["top5"])
    row["eval_s"] = time.perf_counter() - start
    return row


def _record(rs: RunState, saver: Checkpoints, row: dict[str, Any], out: Path, *, verbose: bool) -> None:
    """The finished epoch into the run state and its checkpoints; the metrics files when checkpoint-last.pt was
    written (rank 0)."""
    if saver.after_epoch(row) and saver.d.main:
        write_metrics(out, rs.history)
        if verbose:
            print(_epoch_line(row, rs.best, rs.recipe.epochs), flush=True)


def _finish(rs: RunState, out: Path, manifest: dict[str, Any], status: str, error: str | None) -> None:
    """The outcome into the manifest, the final weights (completed runs) and metrics: both from the same history."""
    manifest.update(summarize(rs.history, rs.best), ended=now(), wall_s=round(rs.wall_s, 1),
                    cpu_s=None if rs.cpu_s is None else round(rs.cpu_s, 1), status=status,
                    sessions=rs.session_records())
    if error:
        manifest["error"] = error
    if status == "completed":
        manifest["weights"] = "model.safetensors"
        manifest["weights_sha256"] = export_safetensors(rs.model, out / "model.safetensors")
    write_metrics(out, rs.history)  # the manifest and metrics always describe the same epochs
    write_json(out / "manifest.json", manifest)


# ------------------------------------------------------------------------------------------------ records
def _epoch_line(row: dict[str, Any], best: dict[str, Any], epochs: int) -> str:
    s = f"epoch {row['epoch'] + 1:>3}/{epochs}  loss {row['train_loss']:.4f}  lr {row['lr']:.2e}"
    if "top1" in row:
        s += f"  top1 {row['top1']:6.2f}  top5 {row['top5']:6.2f}  (best {best['top1']:.2f})"
    return s + f"  {row['epoch_s']:.1f}s  {row['img_s']:.0f} img/s"


# ------------------------------------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> None:
    args = train_parser(__doc__).parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = recipe_overrides(args)
    if args.ablation:
        if args.ablation not in ABLATIONS:
            raise SystemExit(f"dhvt-train: unknown ablation row {args.ablation!r}; choose one of: "
                             f"{', '.join(ABLATIONS)}.")
        row = ABLATIONS[args.ablation]
        overrides.update({k: v for k, v in row.recipe.items() if overrides.get(k) is None})
        overrides["model"] = overrides["model"] or row.base
        overrides["model_kwargs"] = {**row.model_kwargs, **(overrides["model_kwargs"] or {})}
        args.tag = args.tag or row.key
    preset = args.preset or ("ablation" if args.ablation and not args.resume else None)
    try:
        m = run(preset, output=args.output, data_dir=args.data_dir, download=args.download, resume=args.resume,
                device=args.device, experiment=args.experiment, tag=args.tag, progress=not args.no_progress,
                change_recipe=args.change_recipe, **overrides)
    except (ValueError, FileNotFoundError, FileExistsError, NonFiniteLossError, RunLockedError) as e:
        raise SystemExit(f"dhvt-train: {e}") from None
    except RunInterrupted as e:
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        raise SystemExit(f"dhvt-train: cannot write {e.filename or 'the run directory'} ({WRITE_ERRORS[e.errno]}); "
                         "the run keeps its last checkpoint: free space (or fix the folder) and continue with "
                         "--resume and the same --output.") from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if m.get("status") == "completed" and (int(os.environ.get("RANK", "0")) == 0):
        print(summary_line(m))



if __name__ == "__main__":
    main()
