"""Your own image folder: decoding any mode, sizes and splits, the decode-once cache, one sentence per bad
folder, training in memory with bitwise resume after a real SIGKILL, and evaluation with the recorded settings."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dhvtlib.data import InMemoryImages
from dhvtlib.data.cache import folder_cache
from dhvtlib.data.folder import (FolderError, FileImages, infer_img_size, load_image, own_data, own_image_size,
                                 scan_folder, stored_size)
from dhvtlib.data.loaders import FileLoader
from dhvtlib.evaluate import evaluate_checkpoint
from dhvtlib.run.train import run
from clitools import read_metrics, run_module as _cli
from fakedata import MODES, image_folder

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(verbose=False)


# ------------------------------------------------------------------------------------------------ decoding

def test_every_mode_decodes_to_the_right_values(tmp_path):
    grey = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10) * 2
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "16bit.png")  # I;16: was solid white
    assert Image.open(tmp_path / "16bit.png").mode in ("I;16", "I")
    assert np.array_equal(np.asarray(load_image(tmp_path / "16bit.png", 1)), grey)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    out = np.asarray(load_image(tmp_path / "rgba.png", 3))
    assert out[0, 0].tolist() == [200, 0, 0] and out[3, 3].tolist() == [255, 255, 255]  # over white
    la = Image.fromarray(grey[:4, :4]).convert("LA")
    la.putalpha(0)
    la.save(tmp_path / "la.png")
    assert np.asarray(load_image(tmp_path / "la.png", 1)).tolist() == [[255] * 4] * 4
    Image.fromarray(grey).convert("P").save(tmp_path / "p.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "p.png", 1)), grey)
    Image.fromarray(np.stack([grey] * 3, -1)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert np.abs(np.asarray(load_image(tmp_path / "cmyk.jpg", 1)).astype(int) - grey).max() <= 8
    assert load_image(tmp_path / "p.png", 3).mode == "RGB" and load_image(tmp_path / "16bit.png", 3).mode == "RGB"


def test_sizes_resize_rule_and_inferred_img_size(tmp_path):
    assert infer_img_size([20, 21, 19, 40], 4) == (20, "the median shorter side of the 4 training images is 20.5 "
                                                       "px, rounded to a multiple of the patch size 4")
    assert infer_img_size([500] * 3, 4)[0] == 64 and "capped at 64 (256 tokens)" in infer_img_size([500], 4)[1]
    assert infer_img_size([500] * 3, 16)[0] == 224 and infer_img_size([3], 4)[0] == 8
    assert stored_size(32) == 32 and stored_size(224) == 256
    root = image_folder(tmp_path / "d", classes=3, per_class=4, sizes=(18, 26), modes=("L", "I;16"))
    o = own_data(root, **QUIET)
    assert o.in_chans == 1 and o.details["in_chans"]["why"] == "every image is greyscale"
    assert o.img_size == 20 and isinstance(o.train, InMemoryImages) and o.train.images.shape == (12, 1, 20, 20)
    # the stored image is torchvision's Resize(shorter side, bicubic) + CenterCrop of the file (timm's eval rule)
    from torchvision import transforms as T

    rel = [p for p, _ in scan_folder(root).train][0]
    ref = T.CenterCrop(20)(T.Resize(20, interpolation=T.InterpolationMode.BICUBIC)(load_image(root / rel, 1)))
    assert torch.equal(o.train.images[0, 0], torch.from_numpy(np.array(ref)))
    big = own_data(root, img_size=48, **QUIET)  # above 32 px: stored at int(48 / 0.875) = 54 for rrc + centre crop
    assert big.train.images.shape[-1] == 54 and big.config["stored_size"] == 54
    with pytest.warns(UserWarning, match=r"img_size 128 with patch size 4 gives 1024 tokens"):
        own_data(root, img_size=128, **QUIET)


def test_own_image_size_is_the_size_own_data_trains_at(tmp_path, capsys):
    """A folder's image size is decided in one place: own_image_size (file headers only, nothing decoded) gives the
    size own_data uses with the same arguments, for the model's patch size, and a given size as it is."""
    root = image_folder(tmp_path / "d", classes=3, per_class=4, sizes=(18, 26), modes=("L", "I;16"))
    assert own_image_size(root, cache_dir=tmp_path / "c") == 20
    assert "img_size 20: the median shorter side of the 12 training images" in capsys.readouterr().out
    assert [p.name[:8] for p in (tmp_path / "c").glob("*.pt")] == ["headers-"]  # nothing decoded
    for kw in ({"model_kwargs": {"patch_size": 8}}, {"model": "resnet18_cifar"}, {"img_size": 40}):
        assert own_image_size(root, **kw, **QUIET) == own_data(root, **kw, **QUIET).img_size == \
            {"model_kwargs": 24, "model": 16, "img_size": 40}[next(iter(kw))]


def test_flat_folder_split_is_stratified_seeded_and_recorded(tmp_path):
    root = image_folder(tmp_path / "flat", classes=3, per_class=10, layout="flat")
    a, b = scan_folder(root, 0.2), scan_folder(root, 0.2)
    assert a.layout == "split" and a.test == b.test and len(a.test) == 6 and len(a.train) == 24
    assert [sum(t == c for _, t in a.test) for c in range(3)] == [2, 2, 2]  # stratified
    assert not {p for p, _ in a.train} & {p for p, _ in a.test}
    o = own_data(root, val_fraction=0.3, **QUIET)
    assert o.details["split"]["test_files"] == [p for p, _ in scan_folder(root, 0.3).test]
    assert o.details["test_counts"] == {"class_0": 3, "class_1": 3, "class_2": 3} and o.config["val_fraction"] == 0.3
    # train/ + test/ is used as it is
    tt = scan_folder(image_folder(tmp_path / "tt", classes=2, per_class=3, layout="train/test"))
    assert tt.layout == "train/test" and len(tt.test) == 4


def test_mean_std_choice_and_imbalance_report(tmp_path, capsys):
    root = image_folder(tmp_path / "d", classes=2, per_class=3)
    for i in range(6):  # class_1 gets 3x the images of class_0
        Image.new("L", (22, 22), 90).save(root / "train" / "class_1" / f"extra{i}.png")
    o = own_data(root)
    x = o.train.images.double() / 255
    assert o.details["mean_std"]["choice"] == "train" and o.mean[0] == pytest.approx(x.mean().item(), abs=1e-6)
    assert o.details["imbalance"] == 3.0
    assert "class imbalance: 'class_1' has 9 training images, 'class_0' 3 (3.0x)" in capsys.readouterr().out
    assert own_data(root, mean_std="imagenet", **QUIET).mean == (pytest.approx(0.449),)


# ------------------------------------------------------------------------------------------------ the cache

def test_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path):
    root = image_folder(tmp_path / "d", classes=2, per_class=3)
    first = own_data(root, **QUIET)
    assert "built_s" in first.details["cache"]
    path = Path(first.details["cache"]["path"])
    assert path.parent == folder_cache(root) and not list(path.parent.glob("*.tmp"))
    assert folder_cache(root).parent == Path(os.environ["XDG_CACHE_HOME"]) / "dhvtlib"
    assert set(torch.load(path, weights_only=True)) >= {"train_images", "test_images", "mean", "key"}
    again = own_data(root, **QUIET)
    assert "loaded_s" in again.details["cache"] and torch.equal(again.train.images, first.train.images)
    victim = root / "train" / "class_0" / "0000.png"
    Image.new("L", (30, 30), 255).save(victim)  # same name, new content, size and mtime
    changed = own_data(root, **QUIET)
    assert "built_s" in changed.details["cache"] and not torch.equal(changed.train.images, first.train.images)
    assert own_data(root, img_size=16, **QUIET).details["cache"]["path"] != changed.details["cache"]["path"]
    path.write_bytes(b"not a torch file")  # a damaged cache is rebuilt, never trusted
    other = own_data(root, cache_dir=tmp_path / "elsewhere", **QUIET)
    assert Path(other.details["cache"]["path"]).parent == tmp_path / "elsewhere"


# ------------------------------------------------------------------------------------------------ bad folders

def _raises(root, sentence: str, **kw):
    with pytest.raises(FolderError) as e:
        own_data(root, **QUIET, **kw)
    msg = str(e.value)
    assert msg == sentence or re.fullmatch(sentence, msg), msg
    assert msg.count(". ") == 0 and "\n" not in msg  # one sentence


def test_bad_folders_get_one_sentence_each(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _raises(empty, f"{empty} is empty; put each class's images in {empty}/<class>/ (one folder per class).")
    loose = image_folder(tmp_path / "loose", classes=2, per_class=2, layout="flat")
    for f in loose.glob("class_0/*.png"):
        f.rename(loose / f.name)
    for f in loose.glob("class_1/*.png"):
        f.rename(loose / ("b" + f.name))
    (loose / "class_0").rmdir(), (loose / "class_1").rmdir()
    _raises(loose, f"{loose} holds 4 files but no class folders; put each class's images in {loose}/<class>/ "
                   "(one folder per class).")
    one = image_folder(tmp_path / "one", classes=1, per_class=3)
    _raises(one, f"{one} has one class folder ('class_0'); a classifier needs at least two classes, so add a folder "
                 "per class.")
    hollow = image_folder(tmp_path / "hollow", classes=2, per_class=2)
    (hollow / "train" / "class_9").mkdir()
    _raises(hollow, f"class folder {hollow / 'train' / 'class_9'} of the train split holds no images; add images to "
                    "it or remove it.")
    extra = image_folder(tmp_path / "extra", classes=2, per_class=2)
    (extra / "val" / "zebra").mkdir()
    Image.new("L", (8, 8)).save(extra / "val" / "zebra" / "z.png")
    _raises(extra, f"{extra / 'val'} has class folder\\(s\\) \\['zebra'\\] that {extra / 'train'} lacks, so they "
                   "could never be predicted; add them to train/ or remove them from val/.")
    _raises(extra, r"val_fraction 1.5 must lie strictly between 0 and 1 \(0.2 keeps a fifth of each class for "
                   r"testing\).", val_fraction=1.5)
    with pytest.raises(FileNotFoundError, match="data folder .*nowhere does not exist; pass --data-dir"):
        own_data(tmp_path / "nowhere", **QUIET)


def test_unreadable_and_non_image_files_are_named_and_skippable(tmp_path):
    root = image_folder(tmp_path / "d", classes=2, per_class=4)
    (root / "train" / "class_0" / "notes.txt").write_text("not an image")
    _raises(root, re.escape(f"1 file(s) in {root} are not readable images: train/class_0/notes.txt (not an image "
                            "file extension); delete or fix them, or pass skip_bad_files=True (--skip-bad-files true) "
                            "to skip them (listed in the run's manifest)."))
    (root / "train" / "class_0" / "notes.txt").unlink()
    (root / "train" / "class_1" / "garbage.png").write_bytes(b"\x00" * 64)  # no image header
    good = (root / "val" / "class_0" / "0000.png").read_bytes()
    (root / "val" / "class_0" / "0001.png").write_bytes(good[: len(good) // 2])  # truncated: header fine
    _raises(root, r"1 file\(s\) in .* are not readable images: train/class_1/garbage.png \(UnidentifiedImageError: "
                  r".*\); delete or fix them, or pass skip_bad_files=True .*")
    (root / "train" / "class_1" / "garbage.png").unlink()
    _raises(root, r"1 file\(s\) in .* are not readable images: val/class_0/0001.png \((OSError|SyntaxError): .*\); "
                  r"delete or fix them, or pass skip_bad_files=True .*")
    assert own_data(root, skip_bad_files=True, **QUIET).details["skipped"] == ["val/class_0/0001.png"]
    _raises(root, r"1 file\(s\) in .* are not readable images: val/class_0/0001.png .*")  # the cache says it too
    (root / "train" / "class_1" / "garbage.png").write_bytes(b"\x00" * 64)
    o = own_data(root, skip_bad_files=True, **QUIET)
    assert o.details["skipped"] == ["train/class_1/garbage.png", "val/class_0/0001.png"]
    assert len(o.train) == 8 and len(o.test) == 3  # nothing else dropped
    with pytest.raises(FolderError, match=r"^cannot decode image .*0001.png \(.*\); delete or replace it, or pass "
                                          r"skip_bad_files=True"):
        load_image(root / "val" / "class_0" / "0001.png")


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    one = image_folder(tmp_path / "one", classes=1, per_class=3)
    r = _cli("--preset", "smoke", "--dataset", "imagefolder", "--data-dir", str(one), "--output", str(tmp_path / "o"),
             "--no-progress")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (f"dhvt-train: {one} has one class folder ('class_0'); a classifier "
                                                 "needs at least two classes, so add a folder per class.")


# ------------------------------------------------------------------------------------------------ training

def _kill_at_first_checkpoint(args: list[str], out: Path) -> subprocess.CompletedProcess:
    """Start dhvt-train and SIGKILL it as soon as a mid-epoch checkpoint exists (no hook inside the code)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "dhvtlib.run", *args, "--output", str(out)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while p.poll() is None and time.monotonic() < deadline and not (out / "checkpoint-last.pt").exists():
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    stdout, stderr = p.communicate()
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


@pytest.mark.slow
def test_in_memory_folder_sigkill_then_resume_is_bitwise_equal_and_eval_uses_the_recorded_size(tmp_path):
    root = image_folder(tmp_path / "data", classes=3, per_class=16, test_per_class=4, sizes=(20, 40), modes=MODES)
    args = ["--preset", "smoke", "--dataset", "imagefolder", "--data-dir", str(root), "--samples-per-class", "16",
            "--epochs", "3", "--threads", "1", "--no-progress"]
    ref = tmp_path / "ref"
    done = _cli(*args, "--output", str(ref))
    assert done.returncode == 0, done.stderr
    assert "img_size 28: the median shorter side" in done.stdout  # information goes to stdout
    assert "decoding " in done.stdout  # the first run decodes the folder and caches it
    out = tmp_path / "killed"
    killed = _kill_at_first_checkpoint(args, out)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "decoding " not in killed.stdout  # the second run read the cache
    resumed = _cli(*args, "--output", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert read_metrics(out) == read_metrics(ref)
    a = torch.load(ref / "checkpoint-last.pt", weights_only=True)
    b = torch.load(out / "checkpoint-last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (ref / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    manifest = json.loads((ref / "manifest.json").read_text())
    assert manifest["model_config"]["img_size"] == 28 and manifest["data"]["memory"]["in_memory"]
    assert a["data_config"]["img_size"] == 28 and a["data_config"]["in_chans"] == 3
    # dhvt-eval: the recorded size, channels, mean/std and split, not 224 px
    ev = _cli("--checkpoint", str(ref / "model.safetensors"), "--dataset", "imagefolder", "--data-dir", str(root),
              "--device", "cpu", module="dhvtlib.evaluate")
    assert ev.returncode == 0, ev.stderr
    res = json.loads(ev.stdout)
    assert res["img_size"] == 28 and res["top1"] == pytest.approx(manifest["final_top1"])


def test_folder_over_the_memory_budget_reads_files_at_any_size(tmp_path):
    root = image_folder(tmp_path / "data", classes=2, per_class=8, test_per_class=4, sizes=(20, 40), modes=MODES)
    m = run("smoke", output=tmp_path / "run", data_dir=root, dataset="imagefolder", memory_budget_gb=0, img_size=32,
            epochs=1, num_workers=0, progress=False, verbose=False)
    assert m["status"] == "completed" and not m["data"]["memory"]["in_memory"]
    assert m["data"]["mean_std"]["choice"] == "imagenet" and m["test_images"] == 8
    ev = evaluate_checkpoint(tmp_path / "run" / "checkpoint-last.pt", "imagefolder", data_dir=root, device="cpu")
    assert ev["img_size"] == 32 and ev["top1"] == pytest.approx(m["final_top1"])


def test_file_loader_draws_are_a_function_of_the_position(tmp_path):
    """Per-image seeds (seed, epoch, position): a resume at step s gets the same augmented batches."""
    from dhvtlib.data.augment import build_pil_transform

    root = image_folder(tmp_path / "data", classes=2, per_class=6, sizes=(20, 40), modes=MODES)
    scan = scan_folder(root)
    ds = FileImages(root, scan.train, scan.classes, 3, build_pil_transform(32, (0.5,) * 3, (0.5,) * 3, train=True))
    loader = FileLoader(ds, 4, torch.device("cpu"), num_workers=0, seed=3)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    full = list(loader.batches(idx, train=True, epoch=1))
    tail = list(loader.batches(idx, train=True, epoch=1, start_step=1))
    assert len(full) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(full[1:], tail))
    other = list(loader.batches(idx, train=True, epoch=2))
    assert not torch.equal(full[0][0], other[0][0])


def test_benchmark_script_runs_end_to_end(tmp_path):
    """benchmarks/own_data.py on a fake Fashion-MNIST (tiny settings: the numbers are not checked, only made)."""
    from fakedata import fake_fashion_mnist

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import own_data as bench

    fm = fake_fashion_mnist(tmp_path / "fm", train_per_class=4, test_per_class=4)
    res = bench.main(["--data-dir", str(fm), "--rounds", "1", "--limit", "40", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == res and res["images"] == 40
    assert res["ratio_folder_vs_fashion_mnist"] > 0 and res["reload_read_the_cache"]
    assert {"git_commit", "versions", "hardware", "wall_s"} <= set(res)


def test_file_loader_workers_persist_and_a_bad_file_is_one_sentence(tmp_path):
    """Worker processes are kept across passes; an undecodable file in a worker surfaces as the one sentence naming
    it (not the worker's traceback)."""
    from dhvtlib.data.augment import build_pil_transform

    root = image_folder(tmp_path / "data", classes=2, per_class=4, sizes=(20, 40))
    scan = scan_folder(root)
    ds = FileImages(root, scan.train, scan.classes, 1, build_pil_transform(24, (0.5,), (0.5,), train=False))
    loader = FileLoader(ds, 4, torch.device("cpu"), num_workers=1)
    idx = torch.arange(len(ds))
    first = [x for x, _ in loader.batches(idx, train=False)]
    workers = loader._loaders[False][0]._iterator._workers
    again = [x for x, _ in loader.batches(idx, train=False)]
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and first[0].shape == (4, 1, 24, 24)
    assert loader._loaders[False][0]._iterator._workers == workers  # the same processes
    victim = root / scan.train[5][0]
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(FolderError) as e:
        list(loader.batches(idx, train=False))
    assert str(e.value).startswith(f"cannot decode image {victim} (") and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ links

def test_link_loops_and_images_reached_twice_are_refused(tmp_path):
    """A link loop labelled one class's images as another's (followed again and again), and a link to '.' copied
    training images into the test split: each real folder and file is read once, else one sentence names it."""
    root = image_folder(tmp_path / "d", classes=2, per_class=4)
    (root / "train" / "class_0" / "loop").symlink_to("..")
    for skip in (False, True):
        _raises(root, re.escape(f"folder {root / 'train/class_0/loop'} is {root / 'train'} reached a second time "
                                "through a link (a loop); remove the link (or copy the files) so that every image "
                                "is read once, under one class."), skip_bad_files=skip)
    (root / "train" / "class_0" / "loop").unlink()
    flat = image_folder(tmp_path / "flat", classes=2, per_class=4, layout="flat")
    (flat / "class_0" / "self").symlink_to(".")
    _raises(flat, re.escape(f"folder {flat / 'class_0/self'} is {flat / 'class_0'} reached a second time through a "
                            "link (a loop); remove the link (or copy the files) so that every image is read once, "
                            "under one class."))
    (flat / "class_0" / "self").unlink()
    (flat / "class_1" / "dup.png").symlink_to(flat / "class_0" / "0000.png")  # one image under two classes
    _raises(flat, re.escape(f"file {flat / 'class_1/dup.png'} is {flat / 'class_0/0000.png'} reached a second time "
                            "through a link; remove the link (or copy the files) so that every image is read once, "
                            "under one class."))
    (flat / "class_1" / "dup.png").unlink()
    elsewhere = image_folder(tmp_path / "other", classes=1, per_class=3, layout="flat")
    (flat / "class_2").symlink_to(elsewhere / "class_0")  # a class folder linked from another disk: read once
    scan = scan_folder(flat)
    assert scan.classes == ["class_0", "class_1", "class_2"] and len(scan.files) == 11


# ------------------------------------------------------------------------------------------------ users' folders

def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_a_run_writes_nothing_inside_the_data_folder_and_caches_can_be_listed_and_cleared(tmp_path):
    from torchvision.datasets import ImageFolder

    flat = image_folder(tmp_path / "flat", classes=2, per_class=12, layout="flat")
    before = _tree(flat)
    m = run("smoke", output=tmp_path / "run", data_dir=flat, dataset="imagefolder", epochs=1, img_size=16,
            progress=False, verbose=False)
    assert m["status"] == "completed" and _tree(flat) == before  # nothing written, nothing touched
    cache = Path(m["data"]["cache"]["path"])
    assert cache.parent == folder_cache(flat) and Path(os.environ["XDG_CACHE_HOME"]) in cache.parents
    ds = ImageFolder(str(flat))  # torchvision's (timm's, the official code's) loader still reads the folder
    assert ds.classes == ["class_0", "class_1"] and len(ds) == 24
    listed = _cli("cache", "list", module="dhvtlib.data")
    assert listed.returncode == 0 and str(folder_cache(flat)) in listed.stdout and f"({flat})" in listed.stdout
    assert re.search(r"\d+(\.\d)? (KiB|MiB)\s+\d+ files", listed.stdout)
    (flat / ".dhvtlib-cache").mkdir()  # left inside by an earlier version
    (flat / ".dhvtlib-cache" / "old.pt").write_bytes(b"x" * 2048)
    hint = _cli("--preset", "smoke", "--dataset", "imagefolder", "--data-dir", str(flat), "--output",
                str(tmp_path / "run2"), "--epochs", "1", "--img-size", "16", "--no-progress")
    assert f"remove it: python -m dhvtlib.data cache clear {flat}" in hint.stdout
    listed = _cli("cache", "list", str(flat), module="dhvtlib.data")
    assert listed.stdout.splitlines()[-1].startswith("2 cache(s), ")
    cleared = _cli("cache", "clear", str(flat), module="dhvtlib.data")
    assert cleared.returncode == 0 and cleared.stdout.splitlines()[-1].startswith("2 cache(s) removed, ")
    assert not folder_cache(flat).exists() and not (flat / ".dhvtlib-cache").exists() and _tree(flat) == before
    asked = own_data(flat, cache_dir=flat / "my-cache", **QUIET)  # inside the folder only when asked
    assert Path(asked.details["cache"]["path"]).parent == flat / "my-cache"


def test_cache_and_file_faults_are_one_sentence_or_rebuilt(tmp_path):
    root = image_folder(tmp_path / "d", classes=2, per_class=4)
    first = own_data(root, **QUIET)
    path = Path(first.details["cache"]["path"])
    old = torch.load(path, weights_only=True)
    del old["late_skipped"]  # the same key, a field another version did not write
    torch.save(old, path)
    again = own_data(root, **QUIET)
    assert "built_s" in again.details["cache"] and torch.equal(again.train.images, first.train.images)
    _raises(root, re.escape("cannot write the decode cache directory /proc/nocache (it cannot be created there); "
                            "pass a writable cache_dir (--cache-dir), or set XDG_CACHE_HOME to a writable folder."),
            cache_dir="/proc/nocache")
    bomb = root / "train" / "class_0" / "bomb.png"
    Image.new("1", (30000, 30000)).save(bomb)  # 900 Mpx: over twice Pillow's limit
    _raises(root, r"1 file\(s\) in .* are not readable images: train/class_0/bomb.png \(DecompressionBombError: "
                  r".*\); delete or fix them, or pass skip_bad_files=True .*")
    bomb.unlink()
    few = image_folder(tmp_path / "few", classes=2, per_class=3, layout="flat")
    (few / "class_2").mkdir()
    Image.new("L", (20, 20)).save(few / "class_2" / "only.png")
    with pytest.warns(UserWarning, match=r"class\(es\) \['class_2'\] have no test images"):
        own_data(few, **QUIET)
