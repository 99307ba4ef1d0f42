"""Launchers: a smoke table trained by concurrent local submitit jobs, one killed and one preempted, equals
the inline table run for run; the SLURM path's sbatch script, parameters and requeue without a cluster; bad input."""
from __future__ import annotations

import ast
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dhvtlib import experiments, launch, sweep
from dhvtlib.jobs import Registry, holder_alive, holder_job, job_alive, run_state, session_job, watch
from dhvtlib.checkpoint import sha256
from dhvtlib.run.rundir import RunLock
from clitools import read_metrics

submitit = pytest.importorskip("submitit")

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, verbose=False)


def _table(specs, seeds, root, fmnist, **kw):
    return experiments.execute(specs, seeds, preset="smoke", epochs=3, results_root=root, data_dir=str(fmnist),
                               device="cpu", **kw)


def _wait_for(predicate, timeout: float = 300, what: str = "") -> None:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _holder(out: Path) -> int:
    return int(json.loads((out / ".lock").read_text())["pid"])


# ------------------------------------------------------------------------------------------------ local
def test_local_jobs_killed_and_preempted_give_the_inline_table(fmnist, tmp_path, capsys):
    specs = experiments.quickstart_runs(["dhvt_tiny_cifar_patch4", "deit_tiny_cifar_patch4"], "sweep")
    seeds = [0, 1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the local jobs run 1 thread each: the same kernels, the same bits
    try:
        inline = _table(specs, seeds, tmp_path / "inline", fmnist, **QUIET)
    finally:
        torch.set_num_threads(threads)
    assert list(inline["status"]) == ["completed"] * 4

    root = tmp_path / "local"
    opts = {"workers": 2, "threads": 1, "poll_s": 0.5}
    first = _table(specs, seeds, root, fmnist, launcher="local", launch_options=opts, wait=False, **QUIET)
    jobs = first.attrs["jobs"]
    assert len(jobs) == 4 and len(set(jobs.values())) == 2  # 2 concurrent workers, 2 runs each (round-robin)
    killed = experiments.run_dir(root, specs[0], 0)    # worker 0's first run: SIGKILL after its first checkpoint
    preempted = experiments.run_dir(root, specs[0], 1)  # worker 1's first run: SIGUSR2 (preemption/time limit)
    for out, sig in ((killed, signal.SIGKILL), (preempted, signal.SIGUSR2)):
        _wait_for(lambda: (out / "checkpoint-last.pt").exists(), what=f"a checkpoint in {out}")
        os.kill(_holder(out), sig)
    _wait_for(lambda: not holder_alive(killed), what="the killed run's process to end")
    worker0 = {"launcher": "local", "job_id": jobs[str(killed)], "host": socket.gethostname()}
    _wait_for(lambda: not job_alive(launch._job_handle(root / ".submitit", worker0), worker0),
              what="worker 0 to end")
    # killed mid-run; the workers share one queue, so the requeued worker 1 may already have taken it over
    assert json.loads((killed / "manifest.json").read_text())["status"] in ("running", "completed")

    # Re-running collects: the preempted run was requeued by submitit and resumes in its job; the killed run (and
    # the run its worker never reached) are submitted again and resume / start.
    capsys.readouterr()
    local = _table(specs, seeds, root, fmnist, launcher="local", launch_options=opts, wait=True, verbose=True,
                   progress=False)
    out = capsys.readouterr().out
    # worker 1, requeued after its preemption, shares the queue: it may have finished every run (the killed one
    # included) before this call; otherwise this call watches it instead of submitting its runs twice
    if "already submitted" in out:
        assert "watching it" in out and "completed" in out and "best top-1" in out and "[job " in out
    assert list(local["status"]) == ["completed"] * 4
    # the preempted run stopped with a checkpoint and was resumed from it; the workers share one queue, so which
    # worker held it and which one resumed it (the requeued one, or one of the second call) is not fixed
    out_logs = "".join(p.read_text() for p in (root / ".submitit").rglob("*_log.out"))
    err_logs = "".join(p.read_text() for p in (root / ".submitit").rglob("*_log.err"))
    assert f"=== resuming {specs[0].tag} seed 1" in out_logs
    assert "stopping after this step with a checkpoint" in err_logs and "this job is preempted" in err_logs

    cols = ["tag", "seed", "best_top1", "best_epoch", "final_top1", "final_top5", "epochs_run", "weights_sha256"]
    assert inline[cols].to_dict("records") == local[cols].to_dict("records")
    for a, b in zip(inline["run_dir"], local["run_dir"]):  # bitwise: every epoch's values and the weights
        assert read_metrics(a) == read_metrics(b)
        assert sha256(Path(a) / "model.safetensors") == sha256(Path(b) / "model.safetensors")


def test_a_failed_run_shows_its_log_and_the_others_finish(fmnist, tmp_path, capsys):
    specs = experiments.quickstart_runs(["dhvt_tiny_cifar_patch4"], "sweep")
    frame = experiments.execute(specs, [0, 1], preset="smoke", epochs=1, results_root=tmp_path, data_dir=str(fmnist),
                                device="cpu", batch_size=4096, launcher="local", verbose=True, progress=False,
                                launch_options={"workers": 1, "threads": 1, "poll_s": 0.5})
    err = capsys.readouterr().err
    assert frame.empty or "completed" not in set(frame["status"])
    assert f"{specs[0].tag} seed 0 is " in err and "Last lines of job" in err
    assert "fewer than batch_size 4096" in err  # the run's own sentence, from the job's log


# ------------------------------------------------------------------------------------------------ slurm
@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """`srun` and `sbatch` on PATH: sbatch keeps each script and answers like SLURM with job ids 4242, 4243, ..."""
    bin_dir, scripts = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    scripts.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\nn=$(ls {scripts} | wc -l)\ncp "$1" {scripts}/$n.sh\n'
                                    'echo "Submitted batch job $((4242 + n))"\n')
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return scripts


SLURM = {"partition": "gpu", "gpus_per_run": 2, "time_min": 600, "account": "proj", "cpus_per_task": 8,
         "mem_gb": 64, "setup": ["module load cuda/12.4"], "sbatch": {"qos": "high", "exclusive": True}}


def test_slurm_two_gpu_run_sbatch_script_and_parameters(fmnist, tmp_path, fake_slurm):
    specs = experiments.ladder_runs("ladder", rows=["table5/sope"])
    frame = experiments.execute(specs, [0, 1], preset="smoke", results_root=tmp_path / "r", data_dir=str(fmnist),
                                launcher="slurm", launch_options=SLURM, wait=False, **QUIET)
    assert frame.empty  # nothing has trained yet
    outs = [str(experiments.run_dir(tmp_path / "r", specs[0], s)) for s in (0, 1)]
    assert frame.attrs["jobs"] == {outs[0]: "4242", outs[1]: "4243"}
    folder = tmp_path / "r" / ".submitit"
    script = (fake_slurm / "0.sh").read_text()
    sbatch = sorted(line for line in script.splitlines() if line.startswith("#SBATCH"))
    assert sbatch == [
        "#SBATCH --account=proj",
        "#SBATCH --cpus-per-task=8",
        f"#SBATCH --error={folder}/%j_0_log.err",
        "#SBATCH --exclusive",
        "#SBATCH --gpus-per-node=2",             # 2 GPUs ...
        "#SBATCH --job-name=dhvt-table5-sope-s0",
        "#SBATCH --mem=64GB",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=2",           # ... and one DDP process per GPU
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={folder}/%j_0_log.out",
        "#SBATCH --partition=gpu",
        "#SBATCH --qos=high",
        "#SBATCH --signal=USR2@120",             # time limit: SIGUSR2 two minutes before, then requeue
        "#SBATCH --time=600",
        "#SBATCH --wckey=submitit",
    ]
    body = script.split("# setup\n", 1)[1]
    assert body.startswith("module load cuda/12.4\n")
    assert "export SUBMITIT_EXECUTOR=slurm" in body
    assert f"srun --unbuffered --output {folder}/%j_%t_log.out --error {folder}/%j_%t_log.err" in body
    assert f"-u -m submitit.core._submit {folder}" in body

    ex = launch.slurm_executor(launch.config("slurm", **SLURM), folder)
    assert {k: ex.parameters[k] for k in ("partition", "time", "nodes", "ntasks_per_node", "gpus_per_node",
                                          "cpus_per_task", "account", "mem", "signal_delay_s")} == {
        "partition": "gpu", "time": 600, "nodes": 1, "ntasks_per_node": 2, "gpus_per_node": 2, "cpus_per_task": 8,
        "account": "proj", "mem": "64GB", "signal_delay_s": 120}

    # the pickled job trains exactly that run; its checkpoint (submitit's requeue) is the same run, resumed
    delayed = submitit.helpers.DelayedSubmission.load(folder / "4242_submitted.pkl")
    job = delayed.function
    assert isinstance(job, launch.SlurmRun) and job.task.output == outs[0] and job.task.seed == 0
    assert job.task.tag == "table5/sope" and job.task.preset == "smoke" and job.task.data_dir == str(fmnist)
    requeued = job.checkpoint()
    assert requeued.function.task == job.task and requeued.function.requeues == 1
    # re-running while the jobs are pending does not submit them again
    assert json.loads((folder / "jobs.json").read_text())[outs[0]]["job_id"] == "4242"


@pytest.mark.slow
def test_slurm_job_runs_as_two_ddp_tasks(fmnist, tmp_path, fake_slurm):
    """What srun would start: 2 tasks of the submitted job with SLURM's variables -> one gloo DDP run on CPU."""
    specs = experiments.quickstart_runs(["dhvt_tiny_cifar_patch4"], "sweep")
    frame = experiments.execute(specs, [0], preset="smoke", results_root=tmp_path, data_dir=str(fmnist),
                                device="cpu", launcher="slurm", wait=False,
                                launch_options={**SLURM, "gpus_per_run": 2}, **QUIET)
    out = Path(next(iter(frame.attrs["jobs"])))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242",
           "SLURM_NTASKS": "2", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "localhost",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, "-u", "-m", "submitit.core._submit", str(tmp_path / ".submitit")],
                              env={**env, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)}, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "completed" and m["world_size"] == 2 and m["ddp_params_in_sync"]


def test_slurm_without_a_cluster_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    specs = experiments.quickstart_runs(["dhvt_tiny_cifar_patch4"], "sweep")
    with pytest.raises(ValueError, match=r"^launcher 'slurm' needs a SLURM cluster: srun was not found"):
        experiments.execute(specs, preset="smoke", results_root=tmp_path, launcher="slurm",
                            launch_options={"partition": "gpu"}, **QUIET)


# ------------------------------------------------------------------------------------------------ input
@pytest.mark.parametrize("launcher, options, sentence", [
    ("cluster", {}, "unknown launcher 'cluster'; choose one of: inline, local, slurm."),
    ("slurm", {}, "launcher 'slurm' needs a partition"),
    ("local", {"workers": 0}, "launch option workers=0 must be a positive integer."),
    ("local", {"gpus": 2}, "unknown launch option 'gpus'; choose from:"),
    ("slurm", {"partition": "gpu", "gpus_per_run": -1},
     "launch option gpus_per_run=-1 must be 0 or a positive integer."),
    ("slurm", {"partition": "gpu", "setup": "module load cuda"},
     "launch option setup='module load cuda' must be a list of shell lines."),
])
def test_bad_launch_options_are_one_sentence(tmp_path, launcher, options, sentence):
    with pytest.raises(ValueError) as e:
        experiments.execute(experiments.quickstart_runs(["dhvt_tiny_cifar_patch4"]), preset="smoke",
                            results_root=tmp_path, launcher=launcher, launch_options=options, **QUIET)
    assert str(e.value).startswith(sentence) and "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())  # nothing submitted, nothing written


def test_submitit_missing_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ValueError, match=r"launchers 'local' and 'slurm' need submitit; pip install"):
        experiments.execute(experiments.quickstart_runs(["dhvt_tiny_cifar_patch4"]), preset="smoke",
                            results_root=tmp_path, launcher="local", **QUIET)


def test_notebooks_validate_the_launcher():
    assert experiments.validate(launcher="slurm")["launcher"] == "slurm"
    with pytest.raises(ValueError, match="launcher 'gpu' is not a valid launcher; choose from: inline, local"):
        experiments.validate(launcher="gpu")


def test_cli_prints_one_job_id_per_run(fmnist, tmp_path, fake_slurm, capsys):
    jobs = sweep.sweep(["--experiment", "ablation", "--table", "5", "--rows", "none", "pe", "--seeds", "0",
                        "--preset", "smoke", "--results-root", str(tmp_path), "--launcher", "slurm",
                        "--partition", "gpu", "--gpus-per-run", "2", "--sbatch", "qos=high"])
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert sorted(j for j, _ in lines) == ["4242", "4243"] and dict((o, j) for j, o in lines) == jobs
    assert all("/ablation/table5_tiny/table5__" in o for _, o in lines)
    cli = subprocess.run([sys.executable, "-m", "dhvtlib.sweep", "--experiment", "ladder", "--rows", "table5/pe",
                          "--seeds", "3", "--preset", "smoke", "--results-root", str(tmp_path), "--launcher", "slurm",
                          "--partition", "gpu"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.splitlines()[-1] == f"4244\t{tmp_path}/ablation/ladder_tiny/table5__pe/s3"  # as notebook 02
    with pytest.raises(SystemExit, match="dhvt-sweep: --experiment ablation needs --table"):
        sweep.main(["--experiment", "ablation", "--launcher", "slurm", "--partition", "gpu"])
    with pytest.raises(SystemExit, match="dhvt-sweep: launcher 'slurm' needs a partition"):
        sweep.main(["--experiment", "ladder", "--launcher", "slurm"])


@pytest.mark.slow
def test_ablation_notebook_with_the_local_launcher(fmnist, tmp_path):
    """The notebook's launcher parameters reach execute: 2 rows as 2 concurrent local jobs, then the table."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "dhvtlib" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("the dhvtlib kernel is not registered (make setup registers it)")
    params = dict(device="cpu", preset="smoke", epochs=2, data_dir=str(fmnist), output_dir=str(tmp_path / "res"),
                  dataset="fashion_mnist", table="5", rows=["pe", "sope_daff"], seeds=[0], launcher="local",
                  launch_options={"workers": 2, "threads": 1, "poll_s": 1})
    out = tmp_path / "02.out.ipynb"
    r = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "02_ablation.ipynb"), str(out),
                        "-k", "dhvtlib", "--cwd", str(tmp_path), "--no-progress-bar", "-y", json.dumps(params)],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-4000:]
    text = out.read_text()
    assert "submitted table5/pe seed 0" in text and "[local job" in text
    table = (tmp_path / "res" / "ablation" / "table5_tiny" / "table.csv").read_text()
    assert "table5/pe" in table and "table5/sope_daff" in table
    assert len(list((tmp_path / "res" / "ablation").rglob("model.safetensors"))) == 2


def test_cli_exits_0_on_success_and_checks_seeds_and_data_set_before_submitting(tmp_path, fake_slurm):
    base = ["--experiment", "ladder", "--rows", "table5/pe", "--preset", "smoke", "--results-root", str(tmp_path),
            "--launcher", "slurm", "--partition", "gpu"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    script = "import sys; from dhvtlib.sweep import main; sys.exit(main())"  # what the console script runs
    ok = subprocess.run([sys.executable, "-c", script, *base, "--seeds", "0"], capture_output=True, text=True,
                        timeout=300, cwd=ROOT, env=env)
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    assert ok.stdout.splitlines()[-1] == f"4242\t{tmp_path}/ablation/ladder_tiny/table5__pe/s0"
    for extra, sentence in ((["--seeds", "-1"], "dhvt-sweep: --seeds -1 is negative"),
                            (["--dataset", "nope"], "dhvt-sweep: --dataset 'nope' is not known")):
        bad = subprocess.run([sys.executable, "-c", script, *base, *extra], capture_output=True, text=True,
                             timeout=300, cwd=ROOT, env=env)
        assert bad.returncode == 1 and sentence in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert len(list(fake_slurm.iterdir())) == 1  # nothing more was submitted
    specs = experiments.ladder_runs("ladder", ["table5/pe"])
    with pytest.raises(ValueError, match="seed must be an integer from 0"):
        experiments.execute(specs, [-2], preset="smoke", results_root=tmp_path, launcher="slurm",
                            launch_options={"partition": "gpu"})
    assert len(list(fake_slurm.iterdir())) == 1


class _DeadJob:
    job_id, _process = "77", True

    def done(self) -> bool:
        return True

    def stderr(self) -> str:
        return "epoch 1 ...\nbash: line 1: 4711 Killed python -m submitit.core._submit"


def test_watching_a_run_whose_job_died_says_so_with_the_log_s_last_line(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"status": "running", "ended": None, "config": {"epochs": 3}}))
    task = launch.RunTask(str(out), "smoke", {}, "quick", "t", 0)
    registry = Registry(tmp_path)
    registry.add(str(out), "local", "77")
    watch([task], {str(out): _DeadJob()}, registry, poll_s=0.01, verbose=True)
    cap = capsys.readouterr()
    assert "t s0: died" in cap.out and "4711 Killed" in cap.out and "running?" not in cap.out
    assert "t seed 0 is stopped: the job died before finishing it" in cap.err


class _KilledJob(_DeadJob):
    def __init__(self, job_id: str, last: str):
        self.job_id, self.last = job_id, last

    def stderr(self) -> str:
        return f"epoch 1 ...\n{self.last}"


def test_the_watch_names_the_local_job_that_took_a_run_from_its_lock(tmp_path, monkeypatch, capsys):
    """Local workers share one queue, so a run is often trained by another worker than the round-robin one it was
    registered under: its lock names the job, and the progress line, the died state and the log tail follow it."""
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "78")
    (tmp_path / "held").mkdir()
    with RunLock(tmp_path / "held"):
        assert json.loads((tmp_path / "held" / ".lock").read_text())["job"] == "78"
        assert holder_job(tmp_path / "held") == "78"
    assert holder_job(tmp_path / "held") is None  # the lock is gone with the run
    monkeypatch.delenv("SUBMITIT_LOCAL_JOB_ID")
    with RunLock(tmp_path / "held"):
        assert "job" not in json.loads((tmp_path / "held" / ".lock").read_text())  # outside a local job

    registry, jobs, tasks = Registry(tmp_path), {}, []
    for name, job_id, taken_by in (("a", "77", "78"), ("b", "78", "77")):  # each taken by the other worker
        out = tmp_path / name
        out.mkdir()
        (out / "manifest.json").write_text(json.dumps({"status": "running", "ended": None, "config": {"epochs": 3}}))
        (out / ".lock").write_text(json.dumps({"pid": 2 ** 22 + 1, "host": "gone", "job": taken_by}))  # killed
        registry.add(str(out), "local", job_id)
        jobs[str(out)] = _KilledJob(job_id, f"killed while training {'b' if job_id == '77' else 'a'}")
        tasks.append(launch.RunTask(str(out), "smoke", {}, "quick", name, 0))
    watch(tasks, jobs, registry, poll_s=0.01, verbose=True)
    cap = capsys.readouterr()
    assert "a s0: died" in cap.out and "[job 78]  (the job died; its log ends: killed while training a)" in cap.out
    assert "b s0: died" in cap.out and "[job 77]  (the job died; its log ends: killed while training b)" in cap.out
    assert "Last lines of job 78's log:\nepoch 1 ...\nkilled while training a" in cap.err
    assert "Last lines of job 77's log:\nepoch 1 ...\nkilled while training b" in cap.err

    # once a run ends its lock is gone: its manifest's last session names the worker that took it
    out = tmp_path / "c"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"status": "completed", "config": {"epochs": 3},
                                                   "sessions": [{"job": "77"}, {"job": "78"}]}))
    registry.add(str(out), "local", "77")
    jobs[str(out)] = _KilledJob("77", "")
    watch([launch.RunTask(str(out), "smoke", {}, "quick", "c", 0)], jobs, registry, poll_s=0.01, verbose=True)
    assert "c s0: completed   epoch 0/3  [job 78]" in capsys.readouterr().out
    assert session_job(out) == "78" and session_job(tmp_path / "a") is None  # a manifest without sessions


def test_a_watch_poll_reads_each_run_file_once_and_not_a_completed_runs_metrics(tmp_path, monkeypatch, capsys):
    """`watch` polls every run every few seconds (the study: 83 runs, 4000-row metrics): one poll reads a run's
    manifest and lock once each, and a completed run's progress comes from its manifest (`rundir.summarize`)."""
    done, live = tmp_path / "done", tmp_path / "live"
    for out in (done, live):
        out.mkdir()
        (out / "metrics.jsonl").write_text('{"epoch": 0, "top1": 50.0}\n{"epoch": 1}\n{"epoch": 2, "top1": 60.5}\n')
    (done / "manifest.json").write_text(json.dumps({"status": "completed", "config": {"epochs": 3}, "epochs_run": 3,
                                                    "best_top1": 60.5, "sessions": [{"job": "78"}]}))
    (live / "manifest.json").write_text(json.dumps({"status": "running", "ended": None, "config": {"epochs": 9}}))
    (live / ".lock").write_text(json.dumps({"pid": 2 ** 22 + 1, "host": "gone", "job": "77"}))
    reads: list[str] = []
    read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(f"{self.parent.name}/{self.name}")
                        or read_text(self, *a, **k))
    assert run_state(done) == {"status": "completed", "epoch": 3, "epochs": 3, "best_top1": 60.5, "error": None,
                               "jobs": ["78"]}
    assert reads == ["done/manifest.json", "done/.lock"]  # not its metrics
    reads.clear()
    assert run_state(live) == {"status": "running?", "epoch": 3, "epochs": 9, "best_top1": 60.5, "error": None,
                               "jobs": ["77"]}
    assert sorted(reads) == ["live/.lock", "live/manifest.json", "live/metrics.jsonl"]

    registry, jobs, tasks = Registry(tmp_path), {}, []
    for out, job_id in ((done, "78"), (live, "77")):
        registry.add(str(out), "local", job_id)
        jobs[str(out)] = _KilledJob(job_id, "killed")
        tasks.append(launch.RunTask(str(out), "smoke", {}, "quick", out.name, 0))
    reads.clear()
    watch(tasks, jobs, registry, poll_s=0.01, verbose=True)  # one poll (no job alive), then the unfinished runs
    assert sorted(reads) == ["done/.lock", "done/manifest.json", "live/.lock", "live/manifest.json",
                             "live/metrics.jsonl"]  # `_tell_unfinished` tells from the last poll's states
    cap = capsys.readouterr()
    assert "done s0: completed   epoch 3/3  best top-1 60.50  [job 78]" in cap.out
    assert "live s0: died" in cap.out and "[job 77]" in cap.out
    assert "live seed 0 is stopped: the job died before finishing it; re-run to resume it. Last lines of job 77's" \
        in cap.err and "done seed 0" not in cap.err


# ------------------------------------------------------------------------------------------------ one table
def _notebook_seeds(notebook: str) -> list[int]:
    """`seeds` in a notebook's parameters cell (read, not run)."""
    cells = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    source = "".join(next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))["source"])
    return next(ast.literal_eval(node.value) for node in ast.parse(source).body
                if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["seeds"])


def test_the_experiment_table_is_the_notebooks_and_the_cli_s():
    """One table of named experiments: each notebook's default seeds are its entry's, and dhvt-sweep offers exactly
    its names with those seeds (--seeds left out)."""
    for name, exp in experiments.EXPERIMENTS.items():
        assert _notebook_seeds(exp.notebook) == list(exp.seeds), name
    choices = next(a.choices for a in sweep._parser()._actions if a.dest == "experiment")
    assert choices == list(experiments.EXPERIMENTS)
    assert launch.JOB_LAUNCHERS == tuple(x for x in launch.LAUNCHERS if x != "inline")


def _imports(module: str) -> set[str]:
    """The dhvtlib modules `module` imports, at module level or inside functions."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = module.rsplit(".", node.level)[0]
            found.update(f"{base}.{node.module}" if node.module else f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dhvtlib"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dhvtlib"))
    return found


def test_the_launchers_import_nothing_above_them():
    """sweep -> experiments -> plan -> runspec, experiments -> launch -> jobs: no module imports one above it."""
    above = {"dhvtlib.launch": {"dhvtlib.experiments", "dhvtlib.sweep", "dhvtlib.plan", "dhvtlib.study"},
             "dhvtlib.jobs": {"dhvtlib.launch", "dhvtlib.experiments", "dhvtlib.sweep", "dhvtlib.plan"},
             "dhvtlib.experiments": {"dhvtlib.sweep", "dhvtlib.study"},
             "dhvtlib.plan": {"dhvtlib.experiments", "dhvtlib.launch", "dhvtlib.sweep"},
             "dhvtlib.runspec": {"dhvtlib.experiments", "dhvtlib.plan", "dhvtlib.launch", "dhvtlib.sweep"}}
    for module, forbidden in above.items():
        assert not _imports(module) & forbidden, module
