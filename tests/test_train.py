"""The recipe, the loop and the run: presets equal the spec, exact resume after SIGKILL and Ctrl-C, records,
checkpoints, errors, evaluation, and DDP under torchrun on CPU."""
from __future__ import annotations

import json
import math
import pickle
import re
import subprocess
from pathlib import Path

import pytest
import torch

from dhvtlib.run import train as train_mod
from dhvtlib.checkpoint import export_safetensors, load_checkpoint, load_weights
from dhvtlib.files import sha256
from dhvtlib.jobs import session_job
from dhvtlib.data.loaders import eval_indices, train_indices
from dhvtlib.models import DHVT, create_model
from dhvtlib.recipe import DRLOC_SCHEME, PAPER_PRESETS, PRESETS, recipe_diff, resolve
from dhvtlib.run.build import build_optimizer
from dhvtlib.evaluate import evaluate_checkpoint
from dhvtlib.run.train import run
from clitools import read_metrics, run_module as _cli

FIX = Path(__file__).parent / "fixtures"

# dhvt-spec.md section 3.3: the official scripts (per-GPU batch x 2 GPUs, --lr, warmup, epochs, wd, ...)
SPEC_PRESETS = {
    "cifar100": dict(batch_size=512, lr=1e-3, effective_lr=1e-3, warmup_epochs=5, epochs=300, weight_decay=0.05,
                     min_lr=1e-5, repeated_aug=True),
    "ablation": dict(batch_size=512, lr=1e-3, effective_lr=1e-3, warmup_epochs=10, epochs=300, weight_decay=0.05,
                     min_lr=1e-5, repeated_aug=True),
    "domainnet": dict(batch_size=256, lr=1e-3, effective_lr=5e-4, warmup_epochs=20, epochs=300, weight_decay=0.05,
                      min_lr=1e-5, repeated_aug=True),
    "imagenet": dict(batch_size=256, lr=5e-4, effective_lr=2.5e-4, warmup_epochs=10, epochs=300, weight_decay=0.05,
                     min_lr=1e-5, repeated_aug=True),
    "finetune": dict(batch_size=256, lr=5e-4, effective_lr=2.5e-4, warmup_epochs=2, epochs=100, weight_decay=1e-8,
                     min_lr=1e-6, repeated_aug=False),
}
SPEC_COMMON = dict(opt_eps=1e-8, opt_betas=(0.9, 0.999), warmup_lr=1e-6, mixup=0.8, cutmix=1.0, mixup_prob=1.0,
                   mixup_switch_prob=0.5, smoothing=0.1, rand_augment="rand-m9-mstd0.5-inc1", random_erasing=0.25,
                   hflip=0.5, ra_repeats=3, drop_path=0.1, drop=0.0, model_ema=True, model_ema_decay=0.99996,
                   eval_ema=False, clip_grad=None, lr_scale_batch=512, seed=0,
                   finetune_eval_mode=True)  # spec 3.4: set_training_mode = (args.finetune == ''), for any preset




# ------------------------------------------------------------------------------------------------ recipe
@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_equal_the_spec(name):
    r = PRESETS[name]
    for k, v in {**SPEC_COMMON, **SPEC_PRESETS[name]}.items():
        got = r.effective_lr if k == "effective_lr" else getattr(r, k)
        assert got == pytest.approx(v) if isinstance(v, float) else got == v, (name, k, got, v)
    assert r.dataset in {"cifar100": "cifar100", "ablation": "cifar100", "domainnet": "domainnet_clipart",
                         "imagenet": "imagenet", "finetune": "domainnet_clipart"}[name]


def test_drloc_preset_is_drlocs_code():
    """Table 16's preset: Drloc's public code (yhlleo/VTs-Drloc, config.py / train.sh / main.py), value by value."""
    r = PRESETS["drloc"]
    pinned = dict(batch_size=1024, virtual_gpus=8, lr=5e-4, lr_scale_batch=512, warmup_lr=1e-6, min_lr=1e-5,
                  warmup_epochs=20, epochs=100, clip_grad=5.0, weight_decay=0.05, opt_eps=1e-8, opt_betas=(0.9, 0.999),
                  drop_path=0.1, smoothing=0.1, rand_augment="rand-m9-mstd0.5-inc1", random_erasing=0.25, mixup=0.8,
                  cutmix=1.0, mixup_prob=1.0, mixup_switch_prob=0.5, repeated_aug=False, model_ema=False,
                  img_size=224, model="dhvt_tiny_domain_patch16", dataset="domainnet_clipart")
    for k, v in pinned.items():
        assert getattr(r, k) == (pytest.approx(v) if isinstance(v, float) else v), k
    assert r.per_gpu_batch == 128 and r.effective_lr == pytest.approx(1e-3)  # 5e-4 x 8 x 128 / 512
    # Drloc scales its warmup and min lr with the batch too: 5e-7 and 5e-6 x 1024 / 512
    assert (r.warmup_lr, r.min_lr) == (pytest.approx(5e-7 * 1024 / 512), pytest.approx(5e-6 * 1024 / 512))
    assert getattr(r, "sched_unit", "step") == "step"  # a per-iteration cosine (main.py: step_update)
    assert set(pinned) - {"model", "dataset"} | {"sched_unit"} == set(DRLOC_SCHEME)
    for k, (v, source) in DRLOC_SCHEME.items():  # every value names its Drloc file and line
        assert re.search(r"(config\.py|train\.sh|main\.py|data/build\.py)( L\d+|: )", source), (k, source)
        assert k == "sched_unit" or getattr(r, k) == v, k
    assert resolve("drloc") == r


def test_finetune_trains_in_eval_mode_under_any_preset(fmnist, tmp_path, monkeypatch):
    """As the official main.py (set_training_mode = args.finetune == ''): finetune= alone puts the model in eval mode
    for training, whatever the preset; finetune_eval_mode=False is the opt-out."""
    for name in PRESETS:
        assert resolve(name, finetune="x.safetensors").finetune_eval_mode, name
    # a run saved when the flag defaulted to False: without finetune= it is the same recipe; with it, it is not
    assert recipe_diff({**PRESETS["cifar100"].to_dict(), "finetune_eval_mode": False}, PRESETS["cifar100"]) == {}
    ft = resolve("domainnet", finetune="x.safetensors")
    assert recipe_diff({**ft.to_dict(), "finetune_eval_mode": False}, ft) == {"finetune_eval_mode": (False, True)}
    src = tmp_path / "src"
    run("smoke", output=src, data_dir=fmnist, progress=False, verbose=False, epochs=1)
    seen = []
    real = train_mod.train_one_epoch

    def recording(model, *args, **kwargs):
        hook = model.register_forward_pre_hook(lambda m, _: seen.append(m.training))
        try:
            return real(model, *args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(train_mod, "train_one_epoch", recording)
    common = dict(data_dir=fmnist, progress=False, verbose=False, epochs=1)
    run("smoke", output=tmp_path / "ft", finetune=str(src / "model.safetensors"), **common)
    assert seen and not any(seen)  # every training forward in eval mode (not the finetune preset)
    seen.clear()
    run("smoke", output=tmp_path / "ft_train", finetune=str(src / "model.safetensors"), finetune_eval_mode=False,
        **common)
    assert seen and all(seen)
    seen.clear()
    run("smoke", output=tmp_path / "scratch", **common)
    assert seen and all(seen)  # without finetune= the flag changes nothing


def test_resolve_overrides_and_errors():
    r = resolve("quick", epochs=3, model_kwargs={"depth": 2})
    assert r.epochs == 3 and r.model_kwargs == {**PRESETS["quick"].model_kwargs, "depth": 2}
    assert PRESETS["quick"].epochs != 3  # presets are not mutated
    with pytest.raises(ValueError, match="unknown preset 'cifar'"):
        resolve("cifar")
    with pytest.raises(ValueError, match=r"unknown recipe value\(s\) \['learning_rate'\]"):
        resolve("quick", learning_rate=1)
    with pytest.raises(ValueError, match="batch_size 63 must be even"):
        resolve("quick", batch_size=63)
    with pytest.raises(ValueError, match="precision 'fp8'"):
        resolve("quick", precision="fp8")


def test_lr_schedule_is_deit_per_epoch_cosine():
    r = PRESETS["cifar100"]
    opt, sched = build_optimizer(torch.nn.Linear(2, 2), r)
    lrs = []
    for epoch in range(r.epochs):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step(epoch)
    warm = lambda t: 1e-6 + t * (1e-3 - 1e-6) / 5  # noqa: E731
    cos = lambda t: 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * t / 300))  # noqa: E731
    assert lrs[0] == lrs[1] == pytest.approx(1e-6)  # epochs 0 and 1 both at the warmup lr (spec 3.2)
    assert lrs[2] == pytest.approx(warm(1)) and lrs[5] == pytest.approx(warm(4))
    assert lrs[6] == pytest.approx(cos(5)) and lrs[150] == pytest.approx(cos(149)) and lrs[-1] == pytest.approx(cos(298))
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}


def test_epoch_orders_repeated_augmentation_and_shards():
    a, b = train_indices(1000, 3, seed=0), train_indices(1000, 3, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, train_indices(1000, 4, seed=0))
    assert sorted(a.tolist()) == list(range(1000))
    ra = train_indices(1000, 0, seed=0, repeated_aug=True)
    assert len(ra) == 768 and torch.equal(ra[:9:3], ra[1:9:3])  # each image 3 times in a row, floor(n/256)*256
    shards = [train_indices(1000, 0, 0, rank=r, world_size=3, repeated_aug=True) for r in range(3)]
    assert all(len(s) == 256 for s in shards)
    ev = [eval_indices(10, r, 3) for r in range(3)]
    assert [len(e) for e in ev] == [4, 3, 3] and sorted(torch.cat(ev).tolist()) == list(range(10))


# ------------------------------------------------------------------------------------------------ a whole run
def test_smoke_run_records_everything(fmnist, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "5")  # as inside a submitit local job (its session names it)
    m = run("smoke", output=out, data_dir=fmnist, progress=False, verbose=False, experiment="t", tag="row/a")
    assert m["status"] == "completed" and m["epochs_run"] == 2 and m["tag"] == "row/a"
    for k in ("config", "seed", "git_commit", "versions", "hardware", "device", "started", "ended", "wall_s",
              "best_top1", "best_epoch", "final_top1", "final_top5", "params", "train_images", "data_overhead"):
        assert k in m, k
    assert m["train_images"] == 80 and m["test_images"] == 40 and m["versions"]["torch"] == torch.__version__
    assert 0 < m["cpu_s"] and isinstance(m["cpu_s"], float)  # this process's CPU seconds, beside wall_s
    rows = read_metrics(out, timings=True)  # every evaluation is timed; the manifest sums it against training time
    assert all(r["eval_s"] > 0 for r in rows if "top1" in r)
    assert m["eval_overhead"] == pytest.approx(sum(r["eval_s"] for r in rows) / sum(r["epoch_s"] for r in rows))
    assert m["hardware"]["cpu_bf16"].startswith(("native bf16 (", "no native bf16 ("))  # AVX2 or AVX512-BF16 EPYC
    (session,) = m["sessions"]  # one process ran it all
    assert (session["start"], session["end"], session["git_commit"]) == ([0, 0], [2, 0], m["git_commit"])
    assert session["job"] == "5" and session_job(out) == "5"  # which local worker took it outlives the lock
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["best_top1"] == m["best_top1"]
    rows = read_metrics(out, timings=True)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert {"train_loss", "test_loss", "top1", "top5", "lr", "epoch_s", "img_s"} <= set(rows[0])
    # smoke has no warmup (with 1 warmup epoch, DeiT's schedule would keep both epochs at warmup_lr)
    assert rows[0]["lr"] == rows[1]["lr"] == pytest.approx(resolve("smoke").effective_lr)
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("epoch,")
    assert m["best_top1"] == max(r["top1"] for r in rows) and m["final_top1"] == rows[-1]["top1"]
    ck = load_checkpoint(out / "checkpoint-last.pt")
    assert ck["epoch"] == 2 and ck["model_name"] == "dhvt_tiny_cifar_patch4" and ck["ema"] is not None
    assert (out / "checkpoint-best.pt").is_file() and not list(out.glob("*.tmp"))
    digest = (out / "model.safetensors.sha256").read_text().split()[0]
    assert digest == sha256(out / "model.safetensors") == m["weights_sha256"]
    # the exported weights and the checkpoint give the run's final accuracy
    for path in (out / "model.safetensors", out / "checkpoint-last.pt"):
        ev = evaluate_checkpoint(path, "fashion_mnist", data_dir=fmnist, test_samples_per_class=4, device="cpu")
        assert ev["top1"] == pytest.approx(rows[-1]["top1"]) and ev["test_images"] == 40
    with pytest.raises(FileExistsError, match="already holds a run; pass resume=True"):
        run("smoke", output=out, data_dir=fmnist, progress=False, verbose=False)
    with pytest.raises(ValueError, match=r"completed run of another recipe \(lr 0.001 -> 0.5\); a completed run is "
                       r"never reopened"):
        run("smoke", output=out, data_dir=fmnist, progress=False, verbose=False, resume=True, lr=0.5)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(fmnist, tmp_path):
    args = ["--preset", "smoke", "--data-dir", str(fmnist), "--no-progress", "--epochs", "3", "--threads", "1"]
    ref = tmp_path / "ref"
    assert _cli(*args, "--output", str(ref)).returncode == 0
    out = tmp_path / "killed"
    killed = _cli(*args, "--output", str(out), signal_after=(1, 3, "KILL"))
    assert killed.returncode == -9, killed.stderr  # a real SIGKILL in epoch 1 after step 3 (checkpoint at step 2)
    ck = load_checkpoint(out / "checkpoint-last.pt")
    assert ck["epoch"] == 1 and ck["epoch_state"]["step"] == 2  # resumes in the middle of the epoch
    resumed = _cli(*args, "--output", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert 0 < ck["cpu_s"] < m["cpu_s"]  # summed over the resume
    # each process's share: from where to where, its clocks, who ran it; the shares add up to the run's
    first, second = m["sessions"]
    assert first == ck["sessions"][0] and (first["start"], first["end"]) == ([0, 0], [1, 2])
    assert (second["start"], second["end"]) == ([1, 2], [3, 0])
    assert all(s[k] == m[k] for s in (first, second) for k in ("git_commit", "versions", "hardware", "precision"))
    assert first["wall_s"] + second["wall_s"] == pytest.approx(m["wall_s"], abs=0.15)
    assert first["cpu_s"] + second["cpu_s"] == pytest.approx(m["cpu_s"], abs=0.15)
    assert read_metrics(out) == read_metrics(ref)
    a, b = load_checkpoint(ref / "checkpoint-last.pt"), load_checkpoint(out / "checkpoint-last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert sha256(ref / "model.safetensors") == sha256(out / "model.safetensors")


@pytest.mark.slow
def test_ctrl_c_leaves_a_resumable_checkpoint(fmnist, tmp_path):
    args = ["--preset", "smoke", "--data-dir", str(fmnist), "--no-progress", "--threads", "1",
            "--checkpoint-every-steps", "0"]
    ref, out = tmp_path / "ref", tmp_path / "int"
    assert _cli(*args, "--output", str(ref)).returncode == 0
    stopped = _cli(*args, "--output", str(out), signal_after=(0, 3, "INT"))
    assert stopped.returncode == 130 and "resume" in stopped.stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    ck = load_checkpoint(out / "checkpoint-last.pt")
    assert ck["epoch_state"]["step"] == 3
    del ck["cpu_s"], ck["sessions"]  # as written before they were recorded: unknown, not undercounted
    torch.save(ck, out / "checkpoint-last.pt")
    assert _cli(*args, "--output", str(out), "--resume").returncode == 0
    assert read_metrics(out) == read_metrics(ref)
    m = json.loads((out / "manifest.json").read_text())
    assert m["cpu_s"] is None
    before, resumed = m["sessions"]  # the time before the resume stays, as a session nobody is named for
    assert before["git_commit"] is None and before["cpu_s"] is None and before["end"] == resumed["start"] == [0, 3]
    assert before["wall_s"] + resumed["wall_s"] == pytest.approx(m["wall_s"], abs=0.15)


def test_non_finite_loss_stops_with_clear_message(fmnist, tmp_path, monkeypatch):
    real = train_mod.build_criterion

    def nan_after_first_epoch(recipe, k):
        crit, mix = real(recipe, k)
        calls = {"n": 0}

        def loss(logits, y):
            calls["n"] += 1
            return crit(logits, y) * (float("nan") if calls["n"] > 5 else 1.0)
        return loss, mix
    monkeypatch.setattr(train_mod, "build_criterion", nan_after_first_epoch)
    out = tmp_path / "nan"
    with pytest.raises(train_mod.NonFiniteLossError, match=r"training loss is nan at epoch 1, step 0.*last good"):
        run("smoke", output=out, data_dir=fmnist, progress=False, verbose=False, checkpoint_every_steps=0)
    assert json.loads((out / "manifest.json").read_text())["status"] == "diverged"
    assert load_checkpoint(out / "checkpoint-last.pt")["epoch"] == 1  # the last good (epoch-end) checkpoint


def test_missing_data_and_bad_values_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        run("smoke", output=tmp_path / "x", data_dir=tmp_path / "nowhere", progress=False, verbose=False)
    r = _cli("--preset", "smoke", "--data-dir", str(tmp_path / "nowhere"), "--output", str(tmp_path / "y"))
    assert r.returncode == 1 and r.stderr.strip().startswith("dhvt-train: ") and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------ checkpoints
def test_weights_for_another_model_fail_clearly(tmp_path):
    small = create_model("dhvt_small_cifar_patch4")
    export_safetensors(small, tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match=r"holds dhvt_small_cifar_patch4 \(width 384, 100 classes\) but the model "
                                         r"is dhvt_tiny_cifar_patch4 \(width 192, 100 classes\)"):
        load_weights(create_model("dhvt_tiny_cifar_patch4"), tmp_path / "s.safetensors")
    tiny = create_model("dhvt_tiny_cifar_patch4")
    export_safetensors(tiny, tmp_path / "t.safetensors")
    ten = create_model("dhvt_tiny_cifar_patch4", num_classes=10)
    with pytest.raises(ValueError, match="with its class count, or fine-tune"):
        load_weights(ten, tmp_path / "t.safetensors")
    assert load_weights(ten, tmp_path / "t.safetensors", new_head_ok=True) == ["head.weight", "head.bias"]
    assert torch.equal(ten.blocks[0].attn.qkv.weight, tiny.blocks[0].attn.qkv.weight)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the evil pickle's protocol
def test_official_state_dict_loads_and_unsafe_pickles_are_refused(tmp_path):
    g = torch.load(FIX / "sope_p4_img32.pt", weights_only=True)
    cfg = json.loads(g["config"])
    cfg.pop("apply_dhvt")
    torch.save(g["state_dict"], tmp_path / "official.pth")
    m = DHVT(**cfg)
    load_weights(m, tmp_path / "official.pth")
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(g["input"]), g["logits_eval"], rtol=1e-5, atol=1e-5)
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(subprocess.Popen))
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        load_checkpoint(tmp_path / "evil.pt")


# ------------------------------------------------------------------------------------------------ distributed
@pytest.mark.slow
def test_ddp_two_cpu_processes_against_one(fmnist, tmp_path):
    common = ["--preset", "smoke", "--data-dir", str(fmnist), "--no-progress", "--threads", "1"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert _cli(*common, "--output", str(one)).returncode == 0
    r = _cli("--standalone", "--nproc_per_node", "2", "-m", "dhvtlib.run", *common, "--output", str(two),
             module="torch.distributed.run")
    assert r.returncode == 0, r.stderr[-3000:]
    m1, m2 = (json.loads((p / "manifest.json").read_text()) for p in (one, two))
    assert m2["world_size"] == 2 and m2["ddp_params_in_sync"] is True and m2["status"] == "completed"
    rows1, rows2 = read_metrics(one, timings=True), read_metrics(two, timings=True)
    assert [r["epoch"] for r in rows2] == [0, 1]  # rank 0 alone writes: one row per epoch
    assert [r["lr"] for r in rows1] == [r["lr"] for r in rows2]  # same total batch, same schedule
    assert abs(rows1[0]["train_loss"] - rows2[0]["train_loss"]) < 0.1 * rows1[0]["train_loss"]
    # Evaluation is exact over uneven shards: 3 processes (14/13/13 images) give the 1-process numbers.
    ck = str(two / "checkpoint-last.pt")
    ev_args = ["--checkpoint", ck, "--dataset", "fashion_mnist", "--data-dir", str(fmnist), "--device", "cpu",
               "--test-samples-per-class", "4", "--batch-size", "4"]
    single = _cli(*ev_args, module="dhvtlib.evaluate")
    assert single.returncode == 0, single.stderr
    three = _cli("--standalone", "--nproc_per_node", "3", "-m", "dhvtlib.evaluate", *ev_args,
                 module="torch.distributed.run")
    assert three.returncode == 0, three.stderr[-3000:]
    a, b = json.loads(single.stdout), json.loads(three.stdout[three.stdout.index("{"):])
    assert (a["top1"], a["top5"], a["test_images"]) == (b["top1"], b["top5"], b["test_images"]) == \
        (a["top1"], a["top5"], 40)
    assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-6)
    assert a["top1"] == pytest.approx(m2["final_top1"])


def test_cli_ablation_row_sets_model_and_tag(fmnist, tmp_path):
    out = tmp_path / "abl"
    r = _cli("--preset", "smoke", "--data-dir", str(fmnist), "--no-progress", "--epochs", "1", "--threads", "1",
             "--ablation", "table5/sope", "--output", str(out))
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["tag"] == "table5/sope" and m["model"] == "dhvt_tiny_cifar_patch4"
    cfg = m["model_config"]  # Table 5's "SOPE" row: SOPE, no PE, ViT's MLP, no head tokens
    assert (cfg["embed_layer"], cfg["pos_embed"], cfg["mlp_layer"], cfg["head_tokens"]) == ("sope", False, "mlp", False)
    bad = _cli("--preset", "smoke", "--ablation", "table5/nope")
    assert bad.returncode != 0 and "unknown ablation row 'table5/nope'" in bad.stderr


def test_in_memory_data_at_another_image_size(fmnist, tmp_path):
    """Table 7 fine-tunes CIFAR-100 at 224 px: in-memory images are random-resized-cropped to img_size for training
    and resized + centre-cropped (DeiT's eval transform) for testing."""
    from dhvtlib.data.augment import resize_center_crop

    x = torch.arange(4 * 4, dtype=torch.uint8).view(1, 1, 4, 4).repeat(2, 3, 1, 1)
    y = resize_center_crop(x, 8)  # 4 -> Resize(9) -> CenterCrop(8)
    assert y.shape == (2, 3, 8, 8) and y.min() >= 0 and y.max() <= 255 and torch.equal(y, y.round())
    m = run("smoke", output=tmp_path / "big", data_dir=fmnist, progress=False, verbose=False, epochs=1, img_size=56)
    assert m["status"] == "completed" and m["model_config"]["img_size"] == 56
    ev = evaluate_checkpoint(tmp_path / "big" / "model.safetensors", "fashion_mnist", data_dir=fmnist,
                             test_samples_per_class=4, device="cpu")
    assert ev["top1"] == pytest.approx(m["final_top1"])
