"""Nothing lost, nothing silently wrong and the paper's protocol without silent traps: one
writer per run directory, completed runs never reopened, non-finite weights never checkpointed, SIGTERM like Ctrl-C,
wall-clock checkpoints, explicit 'none', and one sentence instead of a traceback for each bad input."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dhvtlib.run import build
from dhvtlib import checkpoint as ckpt_mod
from dhvtlib import experiments
from dhvtlib import launch
from dhvtlib.run import state as runstate
from dhvtlib.run import train as train_mod
from dhvtlib.checkpoint import export_safetensors, load_checkpoint, nonfinite_tensors
from dhvtlib.evaluate import evaluate_checkpoint
from dhvtlib.files import atomic_write, sha256
from dhvtlib.models import create_model
from dhvtlib.recipe import PRESETS, resolve
from dhvtlib.run.rundir import RunLock, RunLockedError
from dhvtlib.run.train import run
from clitools import read_metrics, run_module as _cli

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, verbose=False)




def _sentence(excinfo) -> str:
    """The error's text is one line (one sentence), not a traceback."""
    text = str(excinfo.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# ------------------------------------------------------------------------------------------------ one writer
def test_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_recovered(fmnist, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from dhvtlib.run.rundir import RunLock\n"
                               f"with RunLock({str(out)!r}):\n    print('locked', flush=True); time.sleep(120)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as e:
            run("smoke", output=out, data_dir=fmnist, **QUIET)
        assert f"is in use by another run (pid {holder.pid} on " in _sentence(e)
        assert not (out / "config.json").exists()  # nothing of the second run was written
    finally:
        holder.kill()  # SIGKILL: the lock is left behind as a file, and the kernel has dropped the flock
        holder.wait()
    assert (out / ".lock").exists()
    m = run("smoke", output=out, data_dir=fmnist, **QUIET)
    assert m["status"] == "completed" and not (out / ".lock").exists()


def test_lock_is_exclusive_within_one_process(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):  # released and retaken
        pass


# ------------------------------------------------------------------------------------------------ completed runs
def test_completed_run_is_never_reopened(fmnist, tmp_path):
    out = tmp_path / "run"
    m = run("smoke", output=out, data_dir=fmnist, **QUIET)
    before = {p.name: (p.stat().st_mtime_ns, sha256(p)) for p in out.iterdir() if p.is_file()}
    with pytest.raises(ValueError) as e:
        run("smoke", output=out, data_dir=fmnist, resume=True, epochs=4, **QUIET)
    assert "completed run of another recipe (epochs 2 -> 4); a completed run is never reopened" in _sentence(e)
    again = run(None, output=out, data_dir=fmnist, resume=True, **QUIET)  # same recipe: nothing to do
    assert again == json.loads((out / "manifest.json").read_text()) and again["wall_s"] == m["wall_s"]
    assert before == {p.name: (p.stat().st_mtime_ns, sha256(p)) for p in out.iterdir() if p.is_file()}


@pytest.mark.slow
def test_resume_without_epochs_keeps_the_saved_recipe_and_other_epochs_are_refused(fmnist, tmp_path):
    args = ["--preset", "smoke", "--data-dir", str(fmnist), "--no-progress", "--threads", "1", "--epochs", "3"]
    ref, out = tmp_path / "ref", tmp_path / "int"
    assert _cli(*args, "--output", str(ref)).returncode == 0
    stopped = _cli(*args, "--output", str(out), signal_after=(1, 2, "INT"))
    assert stopped.returncode == 130
    changed = _cli("--output", str(out), "--resume", "--epochs", "5")
    assert changed.returncode == 1 and "cosine schedule is fixed by its epochs" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1
    resumed = _cli("--output", str(out), "--resume", "--data-dir", str(fmnist), "--no-progress", "--threads", "1")
    assert resumed.returncode == 0, resumed.stderr  # no --preset, no --epochs: the run's own recipe
    assert read_metrics(out) == read_metrics(ref)
    assert sha256(out / "model.safetensors") == sha256(ref / "model.safetensors")


# ------------------------------------------------------------------------------------------------ non-finite
def _poison_after(monkeypatch, n_steps: int) -> None:
    """Make the weights non-finite right after optimizer step `n_steps` (the loss of that step was finite)."""
    real, calls = torch.optim.AdamW.step, {"n": 0}

    def step(self, *a, **k):
        out = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == n_steps:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return out
    monkeypatch.setattr(torch.optim.AdamW, "step", step)


def test_non_finite_weights_end_diverged_with_the_last_finite_checkpoint(fmnist, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _poison_after(monkeypatch, 7)  # epoch 1 (5 steps per epoch), step 2; a checkpoint after every step
    with pytest.raises(train_mod.NonFiniteLossError) as e:
        run("smoke", output=out, data_dir=fmnist, checkpoint_every_steps=1, **QUIET)
    text = _sentence(e)
    assert "weights became non-finite in epoch 2, step 2" in text and "--change-recipe" in text
    assert "--precision fp32 --clip-grad 1.0" in text and "copy checkpoint-best.pt over checkpoint-last.pt" in text
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "diverged" and "non-finite" in m["error"] and m["epochs_run"] == 1
    assert len(read_metrics(out)) == 1 and not (out / "model.safetensors").exists()
    last = load_checkpoint(out / "checkpoint-last.pt")
    assert (last["epoch"], last["epoch_state"]["step"]) == (1, 1)  # the last finite one, kept
    assert not nonfinite_tensors(last["model"], last["ema"])
    assert "NaN" not in (out / "metrics.jsonl").read_text() and "Infinity" not in (out / "metrics.jsonl").read_text()

    monkeypatch.undo()
    with pytest.raises(ValueError) as e:  # changing lr needs the explicit flag
        run(None, output=out, data_dir=fmnist, resume=True, lr=5e-4, **QUIET)
    assert "--change-recipe" in _sentence(e)
    with pytest.raises(ValueError, match="only clip_grad, lr, precision may change on resume"):
        run(None, output=out, data_dir=fmnist, resume=True, change_recipe=True, batch_size=8, **QUIET)
    m = run(None, output=out, data_dir=fmnist, resume=True, change_recipe=True, lr=5e-4, **QUIET)
    assert m["status"] == "completed" and m["config"]["lr"] == 5e-4
    assert m["recipe_changes"][0]["changes"] == {"lr": [1e-3, 5e-4]} and m["recipe_changes"][0]["epoch"] == 1
    assert json.loads((out / "config.json").read_text())["lr"] == 5e-4


def test_evaluating_non_finite_weights_is_refused(fmnist, tmp_path):
    model = create_model("dhvt_tiny_cifar_patch4", img_size=28, in_chans=1, num_classes=10, embed_dim=32, depth=1)
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    export_safetensors(model, tmp_path / "nan.safetensors")
    with pytest.raises(ValueError) as e:
        evaluate_checkpoint(tmp_path / "nan.safetensors", "fashion_mnist", data_dir=fmnist, device="cpu")
    assert "holds 1 tensors with NaN or infinity (e.g. head.weight); it comes from a diverged run" in _sentence(e)


# ------------------------------------------------------------------------------------------------ preemption
@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_is_bitwise_equal(fmnist, tmp_path):
    args = ["--preset", "smoke", "--data-dir", str(fmnist), "--no-progress", "--threads", "1",
            "--checkpoint-every-steps", "0", "--epochs", "3"]
    ref, out = tmp_path / "ref", tmp_path / "term"
    assert _cli(*args, "--output", str(ref)).returncode == 0
    stopped = _cli(*args, "--output", str(out), signal_after=(1, 3, "TERM"))
    assert stopped.returncode == 143 and "SIGTERM: stopping after this step" in stopped.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "interrupted" and not (out / ".lock").exists()
    ck = load_checkpoint(out / "checkpoint-last.pt")
    assert (ck["epoch"], ck["epoch_state"]["step"]) == (1, 3)
    (out / ".checkpoint-last.pt.killed.tmp").write_bytes(b"partial")  # as a SIGKILL during a write leaves
    assert _cli(*args, "--output", str(out), "--resume").returncode == 0
    assert not list(out.glob("*.tmp"))
    assert read_metrics(out) == read_metrics(ref)
    assert sha256(out / "model.safetensors") == sha256(ref / "model.safetensors")


def test_wall_clock_checkpoints_and_defaults(fmnist, tmp_path, monkeypatch):
    assert all(resolve(p).checkpoint_every_minutes == 10.0 for p in ("cifar100", "imagenet", "quick"))
    saved = []
    real = runstate.save_checkpoint
    monkeypatch.setattr(runstate, "save_checkpoint", lambda state, path: (saved.append(
        (Path(path).name, state["epoch"], (state["epoch_state"] or {}).get("step"))), real(state, path))[1])
    run("smoke", output=tmp_path / "run", data_dir=fmnist, checkpoint_every_steps=0,
        checkpoint_every_minutes=1e-9, **QUIET)
    mid = [s for s in saved if s[2] is not None]
    assert mid[:5] == [("checkpoint-last.pt", 0, step) for step in range(1, 6)]  # every step: the clock is past due


def test_failed_write_leaves_manifest_and_metrics_agreeing(fmnist, tmp_path, monkeypatch):
    real, calls = train_mod.write_metrics, {"n": 0}

    def flaky(out, history):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(out, history)
    monkeypatch.setattr(train_mod, "write_metrics", flaky)
    out = tmp_path / "run"
    with pytest.raises(OSError):
        run("smoke", output=out, data_dir=fmnist, **QUIET)
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "failed" and "No space left" in m["error"]
    assert m["epochs_run"] == len(read_metrics(out)) == 2


# ------------------------------------------------------------------------------------------------ values
def test_none_turns_optional_values_off(fmnist, tmp_path):
    out = tmp_path / "run"
    r = _cli("--preset", "smoke", "--data-dir", str(fmnist), "--output", str(out), "--no-progress", "--threads", "1",
             "--epochs", "1", "--rand-augment", "none", "--test-samples-per-class", "none", "--samples-per-class",
             "none")
    assert r.returncode == 0, r.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["rand_augment"] is None and config["samples_per_class"] is None
    assert config["test_samples_per_class"] is None
    assert json.loads((out / "manifest.json").read_text())["train_images"] == 160  # the whole (fake) set


@pytest.mark.parametrize("overrides, sentence", [
    (dict(epochs="3"), "epochs must be an integer, got '3' (str)."),
    (dict(model_kwargs=[1]), "model_kwargs must be a JSON object, got [1] (list)."),
    (dict(img_size=0), "img_size must be a positive number of pixels, or none"),
    (dict(lr=float("nan")), "lr must be a finite non-negative number, got nan."),
    (dict(lr=1e300), "which diverges at once"),
    (dict(epochs="none"), "epochs cannot be turned off with 'none'"),
])
def test_bad_recipe_values_are_one_sentence(overrides, sentence):
    with pytest.raises(ValueError) as e:
        resolve("smoke", **overrides)
    assert sentence in _sentence(e)


def test_model_kwargs_that_contradict_the_data_are_refused(fmnist, tmp_path):
    with pytest.raises(ValueError) as e:
        run("smoke", output=tmp_path / "r", data_dir=fmnist, model_kwargs={"num_classes": 100}, **QUIET)
    assert "model_kwargs num_classes=100 does not match the data set 'fashion_mnist' (num_classes 10)" in _sentence(e)
    assert not (tmp_path / "r").exists()  # nothing half-made is left


@pytest.mark.parametrize("args, sentence", [
    (["--model-kwargs", "[1,2]"], "is a JSON list, not an object"),
    (["--model-kwargs", "{depth: 2"], "is not valid JSON"),
    (["--threads", "-1"], "'-1' is not a positive integer"),
    (["--device", "tpu"], "unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps."),
    (["--img-size", "-8"], "img_size must be a positive number of pixels"),
    (["--lr", "nan"], "lr must be a finite non-negative number, got nan."),
])
def test_cli_bad_values_are_one_sentence(fmnist, tmp_path, capsys, args, sentence):
    with pytest.raises(SystemExit) as e:
        train_mod.main(["--preset", "smoke", "--data-dir", str(fmnist), "--output", str(tmp_path / "x"), *args])
    message = capsys.readouterr().err + (e.value.code if isinstance(e.value.code, str) else "")
    assert sentence in message and "Traceback" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_gpu_is_one_sentence(fmnist, tmp_path):
    with pytest.raises(SystemExit) as e:
        train_mod.main(["--preset", "smoke", "--data-dir", str(fmnist), "--device", "cuda"])
    assert "device 'cuda' was asked for but no CUDA GPU is visible" in e.value.code
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        experiments.execute(experiments.quickstart_runs(["dhvt_tiny_cifar_patch4"]), preset="smoke",
                            results_root=tmp_path, data_dir=fmnist, device="cuda", **QUIET)


def test_failed_download_is_one_sentence(tmp_path, monkeypatch):
    import urllib.error

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(build, "load_split", offline)
    with pytest.raises(SystemExit) as e:
        train_mod.main(["--preset", "smoke", "--dataset", "cifar100", "--download", "--output", str(tmp_path / "x")])
    assert e.value.code.startswith("dhvt-train: downloading cifar100 failed (URLError")
    assert "drop download (--download)" in e.value.code


def test_unwritable_output_is_one_sentence(fmnist, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError) as e:
        run("smoke", output=blocker / "run", data_dir=fmnist, **QUIET)
    assert "cannot write the run directory" in _sentence(e) and "choose a writable output" in str(e.value)


# ------------------------------------------------------------------------------------------------ evaluation
@pytest.fixture(scope="module")
def exported(fmnist, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "run"
    run("smoke", output=out, data_dir=fmnist, epochs=1, **QUIET)
    return out


def test_eval_bad_files_are_one_sentence(fmnist, exported, tmp_path):
    pickle_file = tmp_path / "evil.safetensors"
    pickle_file.write_bytes((exported / "checkpoint-last.pt").read_bytes())
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes((exported / "model.safetensors").read_bytes()[:1000])
    for path, sentence in ((pickle_file, "is not a readable safetensors file"),
                           (truncated, "is not a readable safetensors file"),
                           (tmp_path, "is a folder; pass a file inside it")):
        with pytest.raises(ValueError) as e:
            evaluate_checkpoint(path, "fashion_mnist", data_dir=fmnist, device="cpu")
        assert sentence in _sentence(e)
    # a run folder means its model.safetensors
    ev = evaluate_checkpoint(exported, "fashion_mnist", data_dir=fmnist, device="cpu", test_samples_per_class=4)
    assert ev["checkpoint"].endswith("model.safetensors")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0."):
        evaluate_checkpoint(exported, "fashion_mnist", data_dir=fmnist, device="cpu", batch_size=0)
    r = _cli("--checkpoint", str(exported), "--dataset", "fashion_mnist", "--batch-size", "0",
             module="dhvtlib.run", env={})
    assert r.returncode != 0


def test_a_damaged_checkpoint_is_named_corrupt_and_points_at_the_best_one(fmnist, exported, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for f in exported.iterdir():
        if f.is_file():
            (out / f.name).write_bytes(f.read_bytes())
    last = (out / "checkpoint-last.pt").read_bytes()
    for damaged in (last[: len(last) // 2], last[: len(last) - 100], b""):
        (out / "checkpoint-last.pt").write_bytes(damaged)
        with pytest.raises(ValueError) as e:
            run(None, output=out, data_dir=fmnist, resume=True, **QUIET)
        text = _sentence(e)
        assert f"{out / 'checkpoint-last.pt'} is corrupt or truncated (" in text and "weights_only=False" not in text
        assert "checkpoint-best.pt beside it (the best epoch's full state) may be intact" in text
    (out / "checkpoint-last.pt").write_bytes((out / "checkpoint-best.pt").read_bytes())  # as the sentence says
    assert run(None, output=out, data_dir=fmnist, resume=True, **QUIET)["status"] == "completed"


@pytest.mark.parametrize("classes", [100, 5])
def test_eval_with_another_class_count_is_refused_before_any_forward(fmnist, tmp_path, classes):
    model = create_model("dhvt_tiny_cifar_patch4", img_size=28, in_chans=1, num_classes=classes, embed_dim=32,
                         depth=1)
    export_safetensors(model, tmp_path / "m.safetensors")
    with pytest.raises(ValueError) as e:
        evaluate_checkpoint(tmp_path / "m.safetensors", "fashion_mnist", data_dir=fmnist, device="cpu")
    assert f"has a {classes}-class head but fashion_mnist has 10 classes" in _sentence(e)


def test_crafted_metadata_is_checked_before_building(fmnist, tmp_path):
    from safetensors.torch import save_file

    small = create_model("dhvt_tiny_cifar_patch4", img_size=28, in_chans=1, num_classes=10, embed_dim=32, depth=1)
    cfg = {**small.config, "embed_dim": 16384, "depth": 64}
    path = tmp_path / "crafted.safetensors"
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(path),
              metadata={"dhvtlib": json.dumps({"model": "dhvt_tiny_cifar_patch4", "config": cfg})})
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as e:
        evaluate_checkpoint(path, "fashion_mnist", data_dir=fmnist, device="cpu")
    assert "metadata describes another model than its tensors hold" in _sentence(e)
    with pytest.raises(ValueError, match="metadata describes another model"):
        ckpt_mod.load_model(path)
    assert time.perf_counter() - t0 < 60  # no 4.8 GB model was built (a meta-device skeleton only)


# ------------------------------------------------------------------------------------------------ files
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "f.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == mode


# ------------------------------------------------------------------------------------------------ protocol
def test_reusing_a_run_with_another_recipe_is_refused(fmnist, tmp_path):
    specs = experiments.quickstart_runs(["dhvt_tiny_cifar_patch4"])
    kw = dict(preset="smoke", results_root=tmp_path, data_dir=fmnist, device="cpu", **QUIET)
    first = experiments.execute(specs, epochs=1, **kw)
    again = experiments.execute(specs, epochs=1, dataset=None, **kw)  # None never erases a row's value
    assert list(again["wall_s"]) == list(first["wall_s"])  # reused, not retrained
    with pytest.raises(ValueError) as e:
        experiments.execute(specs, epochs=2, **kw)
    assert _sentence(e) == (f"1 completed run(s) under {tmp_path} cannot be reused for this request (epochs 1 -> "
                            "2): quick/dhvt_tiny_cifar_patch4/s0; to keep them, pass another experiment (e.g. "
                            "experiment='quick_2') or output_dir, or delete those run folders to train them again.")


def test_presets_follow_the_table_not_a_toy_default(tmp_path, capsys):
    with pytest.raises(ValueError, match="the finetune preset needs the checkpoint to start from"):
        resolve("finetune")
    assert resolve("finetune", finetune="x.safetensors").finetune_eval_mode  # official: eval-mode fine-tuning
    # --ablation without --preset trains the ablation recipe (CIFAR-100), not the quick toy on Fashion-MNIST
    with pytest.raises(SystemExit) as e:
        train_mod.main(["--ablation", "table5/sope", "--data-dir", str(tmp_path / "none"),
                        "--output", str(tmp_path / "x")])
    assert "CIFAR100" in e.value.code or "cifar100" in e.value.code
    rows = {s.tag: s for s in experiments.cifar100_runs() + experiments.ablation_runs("table5")}
    assert rows["table4/dhvt_small_cifar_patch2"].preset.batch_size == 256  # the paper's text for DHVT-S
    assert rows["table4/dhvt_tiny_cifar_patch2"].preset == "cifar100"  # the shipped script, 2 x 256
    assert rows["table5/sope"].preset == "ablation"
    t16 = experiments.table16_runs()
    assert len(t16) == 8 and all(s.preset == "drloc" for s in t16) and t16[0].paper_top1 == 74.78  # Drloc's scheme
    assert PRESETS["drloc"].epochs == 100
    t10 = {s.tag: s for s in experiments.ablation_runs("table10")}  # DHVT-S: the paper's only CIFAR batch, 256
    assert all(t10[f"table10/dhvt_s_h{h}"].recipe == {"batch_size": 256} for h in (4, 6, 8))
    assert t10["table10/dhvt_t_h4"].recipe == {} and resolve("ablation", batch_size=256).per_gpu_batch == 128


# ------------------------------------------------------------------------------------------------ early stops
def test_run_killed_before_its_first_checkpoint_starts_again(fmnist, tmp_path):
    args = ["--preset", "smoke", "--data-dir", str(fmnist), "--no-progress", "--threads", "1",
            "--checkpoint-every-steps", "0", "--epochs", "1"]
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert _cli(*args, "--output", str(ref)).returncode == 0
    own_recipe = ["--resume", "--data-dir", str(fmnist), "--no-progress", "--threads", "1"]
    for again in ([*args, "--resume"], args, own_recipe):  # the same command, with --resume, or the saved recipe
        killed = _cli(*args, "--output", str(out), signal_after=(0, 1, "KILL"))
        assert killed.returncode == -9 and not (out / "checkpoint-last.pt").exists()
        assert json.loads((out / "manifest.json").read_text())["status"] == "running"
        resumed = _cli(*again, "--output", str(out))
        assert resumed.returncode == 0, resumed.stderr
        assert read_metrics(out) == read_metrics(ref)
        assert sha256(out / "model.safetensors") == sha256(ref / "model.safetensors")
        for p in ("checkpoint-last.pt", "checkpoint-best.pt", "model.safetensors", "model.safetensors.sha256",
                  "metrics.jsonl", "metrics.csv"):
            (out / p).unlink()  # back to "killed before its first checkpoint" for the next way in
        (out / "manifest.json").unlink()
    # another recipe is refused in one sentence, and the same recipe from a launcher starts again
    killed = _cli(*args, "--output", str(out), signal_after=(0, 1, "KILL"))
    assert killed.returncode == -9
    with pytest.raises(FileExistsError) as e:
        run("smoke", output=out, data_dir=fmnist, epochs=2, **QUIET)
    assert "another recipe that stopped before its first checkpoint (epochs 1 -> 2)" in _sentence(e)
    task = launch.RunTask(str(out), "smoke", {"epochs": 1, "checkpoint_every_steps": 0}, "quick", "t", 0, str(fmnist))
    assert task(verbose=False)["status"] == "completed" and len(read_metrics(out)) == 1


def test_names_that_would_become_paths_outside_the_results_are_refused(fmnist, tmp_path):
    for name in ("../../escaped", "/etc/x", "a/../../b", "a\\b"):
        with pytest.raises(ValueError) as e:
            run("smoke", output=tmp_path / "run", data_dir=fmnist, experiment=name, **QUIET)
        assert f"experiment name {name!r} could leave its folder" in _sentence(e)
        with pytest.raises(ValueError, match="tag name .* could leave its folder"):
            run("smoke", output=tmp_path / "run", data_dir=fmnist, tag=name, **QUIET)
        spec = experiments.RunSpec(name, "t", "t", "dhvt_tiny_cifar_patch4")
        with pytest.raises(ValueError, match="could leave its folder"):
            experiments.execute([spec], preset="smoke", results_root=tmp_path / "res", data_dir=fmnist, **QUIET)
    assert not (tmp_path / "run").exists() and not (tmp_path / "res").exists()
    bad = _cli("--preset", "smoke", "--output", str(tmp_path / "run"), "--experiment", "../up")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "dhvt-train: experiment name '../up' could leave its folder; use letters, digits, '-', '_' and '.' (with '/' "
        "between sub-folders), without '..' or a leading '/'."]


def test_a_full_disk_and_a_hand_edited_manifest_are_one_sentence(fmnist, exported, tmp_path, monkeypatch, capsys):
    real = train_mod.write_metrics

    def full(out, history):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "metrics.jsonl"))
    monkeypatch.setattr(train_mod, "write_metrics", full)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train_mod.main(["--preset", "smoke", "--data-dir", str(fmnist), "--output", str(out), "--no-progress",
                        "--epochs", "1"])
    assert e.value.code == (f"dhvt-train: cannot write {out / 'metrics.jsonl'} (the disk is full); the run keeps its "
                            "last checkpoint: free space (or fix the folder) and continue with --resume and the same "
                            "--output.")
    monkeypatch.setattr(train_mod, "write_metrics", real)
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in exported.iterdir():
        if f.is_file():
            (edited / f.name).write_bytes(f.read_bytes())
    m = json.loads((edited / "manifest.json").read_text())
    (edited / "manifest.json").write_text(json.dumps({**m, "best_top1": "x", "best_epoch": None}))
    capsys.readouterr()
    train_mod.main(["--output", str(edited), "--resume", "--data-dir", str(fmnist)])
    assert "best top-1 'x' (epoch None), final " in capsys.readouterr().out
