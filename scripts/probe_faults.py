"""Probe bad inputs and faults as a user would, and classify what each one does.

    python scripts/probe_faults.py --out probe.md            # this checkout (imports dhvtlib from PYTHONPATH/venv)

Each case runs `dhvt-train`, `dhvt-eval` or a short Python snippet in a subprocess on a small fake Fashion-MNIST and
is classified as:
- `sentence`: refused (non-zero exit) with one short message and no traceback;
- `handled`: the run did the right thing (e.g. SIGTERM left a resumable checkpoint; a completed run kept);
- `silent`: exit 0 although the input was wrong or a value was ignored;
- `traceback`: a Python traceback (or an error message of many lines);
- `lost`: data was lost or a wrong result recorded.
Prints a Markdown table and the counts. Needs no GPU and no real data; takes a few minutes on 2 cores.
`--only r3:` runs the third round's cases alone (early kills, links, the sweep, names, data folders, reports).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fakedata import fake_fashion_mnist, image_folder  # noqa: E402

PY = sys.executable
SMOKE = ["--preset", "smoke", "--no-progress", "--threads", "1"]


def sh(args: list[str], timeout: int = 300, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, **kw)


def train(*args: str, **kw) -> subprocess.CompletedProcess:
    return sh([PY, "-m", "dhvtlib.run", *args], **kw)


def evaluate(*args: str) -> subprocess.CompletedProcess:
    return sh([PY, "-c", "from dhvtlib.evaluate import main; main()", *args])


def refused(r: subprocess.CompletedProcess, expect: str | None = None) -> str:
    err = r.stderr.strip()
    if r.returncode == 0:
        return "silent"
    if "Traceback" in err:
        return "traceback"
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("usage:") and not ln.startswith(" ")]
    if len(lines) > 2:
        return "traceback"
    return "sentence" if expect is None or expect.lower() in err.lower() else "sentence (another error)"


def train_then_signal(args: list[str], wait_for: Path, sig: int, settle_s: float = 0.0) -> None:
    """Start `dhvt-train args`, send `sig` once `wait_for` exists (after `settle_s` more), and wait for it to end."""
    p = subprocess.Popen([PY, "-m", "dhvtlib.run", *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not wait_for.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(settle_s)
    p.send_signal(sig)
    p.wait(120)


def config(out: Path) -> dict:
    return json.loads((out / "config.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the Markdown table here")
    ap.add_argument("--only", nargs="*", default=[], help="run only the cases whose name contains one of these")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="probe-"))
    data = fake_fashion_mnist(tmp / "fmnist", train_per_class=16, test_per_class=4)
    base = [*SMOKE, "--data-dir", str(data)]
    n = iter(range(1000))

    def out() -> Path:
        return tmp / f"run{next(n)}"

    ok_run = out()
    assert train(*base, "--output", str(ok_run), "--epochs", "1").returncode == 0
    weights = ok_run / "model.safetensors"
    cases: list[tuple[str, callable]] = []

    def case(name):
        def deco(f):
            cases.append((name, f))
            return f
        return deco

    for flag, value in (("--model-kwargs", "[1,2]"), ("--model-kwargs", "{bad"), ("--threads", "-1"),
                        ("--device", "cuda"), ("--device", "tpu"), ("--lr", "1e300"), ("--lr", "nan"),
                        ("--img-size", "-8")):
        case(f"`{flag} {value}`")(lambda f=flag, v=value: refused(train(*base, "--output", str(out()), f, v)))

    @case("`--img-size 0`")
    def _():
        o = out()
        r = train(*base, "--output", str(o), "--img-size", "0", "--epochs", "1")
        return "silent" if r.returncode == 0 else refused(r)

    for flag, key in (("--samples-per-class", "samples_per_class"), ("--rand-augment", "rand_augment"),
                      ("--test-samples-per-class", "test_samples_per_class")):
        @case(f"`{flag} none`")
        def _(flag=flag, key=key):
            o = out()
            r = train(*base, "--output", str(o), flag, "none", "--epochs", "1")
            if r.returncode != 0:
                return refused(r)
            return "handled" if config(o)[key] is None else "silent"

    @case("`--model-kwargs '{\"num_classes\": 100}'` on 10 classes")
    def _():
        return refused(train(*base, "--output", str(out()), "--model-kwargs", '{"num_classes": 100}', "--epochs", "1"))

    @case("`--output` under a regular file")
    def _():
        f = tmp / "regular"
        f.write_text("x")
        return refused(train(*base, "--output", str(f / "run")))

    @case("`--lr inf`, one step per epoch")
    def _():
        o = out()
        r = train(*base, "--output", str(o), "--lr", "inf", "--samples-per-class", "2", "--batch-size", "16")
        if r.returncode != 0:
            return refused(r)
        return "lost" if json.loads((o / "manifest.json").read_text())["status"] == "completed" else "handled"

    for arg, value in (("epochs", "'3'"), ("model_kwargs", "[1]")):
        @case(f"API `run({arg}={value})`")
        def _(arg=arg, value=value):  # an API error is an exception: one sentence naming the argument
            r = sh([PY, "-c", "import sys\nfrom dhvtlib.run.train import run\ntry:\n    run('smoke', data_dir="
                    f"{str(data)!r}, output={str(out())!r}, {arg}={value}, progress=False)\nexcept Exception as e:\n"
                    "    sys.exit(f'{type(e).__name__}: {e}')"])
            return refused(r, expect=arg)

    @case("`--ablation table5/sope` without `--preset`")
    def _():
        o = out()
        r = train("--ablation", "table5/sope", "--output", str(o), "--no-progress", "--data-dir", str(data),
                  "--epochs", "1", "--samples-per-class", "8", "--test-samples-per-class", "4", "--batch-size", "16")
        if r.returncode == 0:
            return "silent" if config(o)["dataset"] == "fashion_mnist" else "handled"
        return refused(r, expect="CIFAR")

    @case("`--preset finetune` without a checkpoint")
    def _():
        r = train("--preset", "finetune", "--output", str(out()), "--data-dir", str(data), "--dataset",
                  "fashion_mnist", "--epochs", "1", "--no-progress", "--samples-per-class", "8", "--batch-size", "16",
                  "--test-samples-per-class", "4")
        return "silent (trained from scratch)" if r.returncode == 0 else refused(r, expect="checkpoint")

    @case("`dhvt-eval --batch-size 0`")
    def _():
        return refused(evaluate("--checkpoint", str(weights), "--dataset", "fashion_mnist", "--data-dir", str(data),
                                "--batch-size", "0"))

    @case("`dhvt-eval` with a folder as `--checkpoint`")
    def _():
        r = evaluate("--checkpoint", str(tmp), "--dataset", "fashion_mnist", "--data-dir", str(data))
        return refused(r)

    @case("`dhvt-eval` with a pickle renamed `.safetensors`")
    def _():
        f = tmp / "renamed.safetensors"
        shutil.copy(ok_run / "checkpoint-last.pt", f)
        return refused(evaluate("--checkpoint", str(f), "--dataset", "fashion_mnist", "--data-dir", str(data)))

    @case("`dhvt-eval` with a truncated safetensors")
    def _():
        f = tmp / "cut.safetensors"
        f.write_bytes(weights.read_bytes()[:1000])
        return refused(evaluate("--checkpoint", str(f), "--dataset", "fashion_mnist", "--data-dir", str(data)))

    for classes in (100, 5):
        @case(f"`dhvt-eval`: a {classes}-class checkpoint on a 10-class set")
        def _(classes=classes):
            f = tmp / f"c{classes}.safetensors"
            sh([PY, "-c", "from dhvtlib.models import create_model; from dhvtlib.checkpoint import "
                f"export_safetensors as e; e(create_model('dhvt_tiny_cifar_patch4', img_size=28, in_chans=1, "
                f"num_classes={classes}, embed_dim=32, depth=1), {str(f)!r})"])
            return refused(evaluate("--checkpoint", str(f), "--dataset", "fashion_mnist", "--data-dir", str(data)))

    @case("`dhvt-eval`: metadata claims width 16384, depth 64")
    def _():
        f = tmp / "crafted.safetensors"
        sh([PY, "-c", "import json; from safetensors.torch import save_file; from dhvtlib.models import "
            "create_model\nm = create_model('dhvt_tiny_cifar_patch4', img_size=28, in_chans=1, num_classes=10, "
            "embed_dim=32, depth=1)\ncfg = {**m.config, 'embed_dim': 16384, 'depth': 64}\nsave_file({k: "
            f"v.contiguous() for k, v in m.state_dict().items()}}, {str(f)!r}, metadata={{'dhvtlib': json.dumps("
            "{'model': 'x', 'config': cfg})})"])
        t0 = time.perf_counter()
        r = evaluate("--checkpoint", str(f), "--dataset", "fashion_mnist", "--data-dir", str(data))
        return refused(r) + ("" if time.perf_counter() - t0 < 30 else " (slow)")

    @case("`--resume` a completed run with another `--epochs`")
    def _():
        o = out()
        train(*base, "--output", str(o), "--epochs", "1")
        digest = (o / "model.safetensors").read_bytes()
        r = train(*base, "--output", str(o), "--resume", "--epochs", "2")
        if r.returncode == 0:
            return "lost" if (o / "model.safetensors").read_bytes() != digest else "handled"
        return refused(r)

    @case("`--resume` an interrupted 3-epoch run, forgetting `--epochs`")
    def _():
        o = out()
        train_then_signal([*base, "--output", str(o), "--epochs", "3", "--checkpoint-every-steps", "1"],
                          o / "checkpoint-last.pt", signal.SIGINT)
        r = train(*base, "--output", str(o), "--resume")
        if r.returncode != 0:
            return refused(r)
        return "lost" if json.loads((o / "manifest.json").read_text())["config"]["epochs"] != 3 else "handled"

    @case("two runs on one `--output` at once")
    def _():
        o = out()
        procs = [subprocess.Popen([PY, "-m", "dhvtlib.run", *base, "--output", str(o)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                 for _ in range(2)]
        codes = [p.wait(300) for p in procs]
        errs = [p.stderr.read() for p in procs]
        if codes == [0, 0]:
            return "lost"
        return "sentence" if any("in use by another run" in e for e in errs) else "traceback"

    @case("SIGTERM mid-epoch")
    def _():
        o = out()
        train_then_signal([*base, "--output", str(o), "--epochs", "20", "--checkpoint-every-steps", "0"],
                          o / "metrics.jsonl", signal.SIGTERM, settle_s=0.5)
        status = json.loads((o / "manifest.json").read_text())["status"]
        resumed = train(*base, "--output", str(o), "--resume", "--epochs", "20", timeout=600)
        return "handled" if status == "interrupted" and resumed.returncode == 0 else f"lost (status {status})"

    @case("files of a run under umask 022")
    def _():
        mode = (ok_run / "manifest.json").stat().st_mode & 0o777
        return "handled" if mode == 0o644 else f"lost (mode {oct(mode)})"

    round_three(case, base, data, tmp, out)
    rows = []
    for name, f in cases:
        if args.only and not any(o in name for o in args.only):
            continue
        try:
            outcome = f()
        except Exception as e:  # the probe itself failed on this case
            outcome = f"probe error: {type(e).__name__}"
        rows.append((name, outcome))
        print(f"{outcome:12s} {name}", flush=True)
    counts: dict[str, int] = {}
    for _, o in rows:
        key = o.split()[0]
        counts[key] = counts.get(key, 0) + 1
    table = "| case | outcome |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
    table += "\n" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    shutil.rmtree(tmp, ignore_errors=True)


def round_three(case, base: list[str], data: Path, tmp: Path, out) -> None:
    """The third round's cases (names start with 'r3:')."""
    def tree(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*")}
    flat = image_folder(tmp / "flat", classes=2, per_class=12, layout="flat")
    own = [*SMOKE, "--dataset", "imagefolder", "--epochs", "1", "--img-size", "16"]
    os.environ["XDG_CACHE_HOME"] = str(tmp / "xdg")  # the probe's caches stay in its temporary folder

    def killed_early(o: Path) -> None:
        train_then_signal([*base, "--output", str(o), "--epochs", "1", "--checkpoint-every-steps", "0"],
                          o / "manifest.json", signal.SIGKILL)

    for again in ([], ["--resume"]):
        @case(f"r3: SIGKILL before the first checkpoint, then the same command {' '.join(again)}".rstrip())
        def _(again=again):
            o = out()
            killed_early(o)
            if (o / "checkpoint-last.pt").exists():
                return "probe error: a checkpoint was written"
            r = train(*base, "--output", str(o), "--epochs", "1", "--checkpoint-every-steps", "0", *again)
            return "handled" if r.returncode == 0 else "lost (" + refused(r) + ")"

    for name, link, target in (("train/class_0/loop -> .. with --skip-bad-files true", "train/class_0/loop", ".."),
                               ("flat folder with class_0/self -> .", "class_0/self", ".")):
        @case(f"r3: link loop: {name}")
        def _(link=link, target=target, name=name):
            root = image_folder(tmp / f"loop{len(link)}", classes=2, per_class=8,
                                layout="train/val" if link.startswith("train") else "flat")
            (root / link).symlink_to(target)
            return refused(train(*own, "--data-dir", str(root), "--output", str(out()), "--skip-bad-files", "true"),
                           expect="reached a second time")

    slurm = tmp / "bin"  # srun and sbatch as SLURM answers them, without a cluster
    slurm.mkdir()
    for name, text in (("srun", "exit 0"), ("sbatch", 'echo "Submitted batch job 4242"')):
        (slurm / name).write_text(f"#!/bin/sh\n{text}\n")
        (slurm / name).chmod(0o755)
    sweep_env = {"PATH": f"{slurm}{os.pathsep}{os.environ['PATH']}"}

    def sweep(*extra: str) -> subprocess.CompletedProcess:
        return sh([PY, "-c", "import sys; from dhvtlib.launch import main; sys.exit(main())", "--experiment",
                   "ladder", "--rows", "table5/pe", "--preset", "smoke", "--results-root", str(out()), "--launcher",
                   "slurm", "--partition", "gpu", *extra], env=sweep_env)

    @case("r3: `dhvt-sweep` exit status on success")
    def _():
        r = sweep("--seeds", "0")
        return "handled" if r.returncode == 0 and not r.stderr.strip() else f"lost (exit {r.returncode})"

    for extra in (["--seeds", "-1"], ["--dataset", "nope"]):
        @case(f"r3: `dhvt-sweep {' '.join(extra)}`")
        def _(extra=extra):
            r = sweep(*extra)
            return "silent (submitted)" if "4242\t" in r.stdout else refused(r)  # a job id line: submitted

    @case("r3: a manifest with experiment `../../escaped`, then `report figures`")
    def _():
        root = tmp / "shared" / "a" / "results"
        shutil.copytree(next(tmp.glob("run0")), root / "x" / "s0")
        m = json.loads((root / "x" / "s0" / "manifest.json").read_text())
        (root / "x" / "s0" / "manifest.json").write_text(json.dumps({**m, "experiment": "../../escaped", "tag": "t"}))
        before = tree(tmp / "shared")
        sh([PY, "-m", "dhvtlib.report", "figures", "--root", str(root)])
        outside = {p for p in tree(tmp / "shared") - before if not p.startswith("a/results")}
        return f"lost ({len(outside)} paths outside the root)" if outside else "handled"

    case("r3: `--experiment ../x`")(lambda: refused(train(*base, "--output", str(out()), "--experiment", "../x")))

    @case("r3: a run on a flat folder, then torchvision's ImageFolder")
    def _():
        before = tree(flat)
        r = train(*own, "--data-dir", str(flat), "--output", str(out()))
        if r.returncode != 0:
            return refused(r)
        loads = sh([PY, "-c", f"from torchvision.datasets import ImageFolder; ImageFolder({str(flat)!r})"])
        return "handled" if loads.returncode == 0 and tree(flat) == before else "lost (written into the folder)"


    @case("r3: a 30000x30000 PNG (decompression bomb)")
    def _():
        root = image_folder(tmp / "bomb", classes=2, per_class=8, layout="flat")
        sh([PY, "-c", f"from PIL import Image; Image.new('1', (30000, 30000)).save({str(root / 'class_0/b.png')!r})"])
        return refused(train(*own, "--data-dir", str(root), "--output", str(out())), expect="b.png")

    case("r3: `--cache-dir /proc/nocache`")(lambda: refused(train(
        *own, "--data-dir", str(flat), "--output", str(out()), "--cache-dir", "/proc/nocache"), expect="/proc/nocache"))

    @case("r3: a truncated checkpoint-last.pt, then `--resume`")
    def _():
        o = out()
        train_then_signal([*base, "--output", str(o), "--epochs", "3", "--checkpoint-every-steps", "1"],
                          o / "checkpoint-best.pt", signal.SIGINT)
        last = o / "checkpoint-last.pt"
        last.write_bytes(last.read_bytes()[:1000])
        r = train(*base, "--output", str(o), "--resume", "--epochs", "3")
        return refused(r, expect="corrupt or truncated") + (" (advises weights_only=False)"
                                                            if "weights_only=False" in r.stderr else "")

    @case("r3: a hand-edited manifest (`best_top1: \"x\"`), then `--resume`")
    def _():
        o = out()
        shutil.copytree(next(tmp.glob("run0")), o)
        m = o / "manifest.json"
        m.write_text(json.dumps({**json.loads(m.read_text()), "best_top1": "x"}))
        r = train(*base, "--output", str(o), "--resume", "--epochs", "1")
        return "handled" if r.returncode == 0 else refused(r)

    @case("r3: `report figures` with `$x^$` and `<script>` in a tag")
    def _():
        root = tmp / "dollar"
        shutil.copytree(next(tmp.glob("run0")), root / "q" / "s0")
        m = json.loads((root / "q" / "s0" / "manifest.json").read_text())
        (root / "q" / "s0" / "manifest.json").write_text(json.dumps({**m, "experiment": "q",
                                                                    "tag": "$x^$ <script>"}))
        r = sh([PY, "-m", "dhvtlib.report", "figures", "--root", str(root)])
        md = (root / "q" / "table.md").read_text() if (root / "q" / "table.md").exists() else ""
        ok = r.returncode == 0 and (root / "report.md").exists() and "<script>" not in md
        return "handled" if ok else refused(r) if r.returncode else "lost (HTML kept raw)"

    case("r3: `report figures --root` on a typo")(lambda: refused(
        sh([PY, "-m", "dhvtlib.report", "figures", "--root", str(tmp / "typo")]), expect="no runs found"))


if __name__ == "__main__":
    main()
