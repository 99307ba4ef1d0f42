"""dhvtlib.paths (where files go, whatever the working directory) and dhvtlib.run.progress (which bar, and the
one-sentence interrupt)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dhvtlib import paths
from dhvtlib.run import progress

ROOT = Path(__file__).resolve().parents[1]


def test_project_root_is_the_checkout_whatever_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ENV_ROOT, raising=False)
    monkeypatch.delenv(paths.ENV_RESULTS, raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.project_root() == ROOT
    assert paths.output_dir(None) == ROOT / "outputs" / "results" == paths.results_root()
    assert paths.store_root() == ROOT / "results"
    assert paths.output_dir("outputs/results") == ROOT / "outputs" / "results"
    assert paths.resolve(tmp_path / "x") == tmp_path / "x" and paths.resolve(None) is None
    assert paths.data_dir(None) is None and paths.data_dir("data/cifar100") == ROOT / "data" / "cifar100"


def test_environment_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_ROOT, str(tmp_path))
    monkeypatch.delenv(paths.ENV_RESULTS, raising=False)
    assert paths.output_dir(None) == tmp_path / "outputs" / "results"
    (tmp_path / "data" / "fashion-mnist").mkdir(parents=True)
    assert paths.data_dir(None, "fashion_mnist") == tmp_path / "data" / "fashion-mnist"
    assert paths.data_dir(None, "cifar100") is None  # not there: the data set's own default search
    monkeypatch.setenv(paths.ENV_RESULTS, "elsewhere/res")
    assert paths.output_dir(None) == tmp_path / "elsewhere" / "res"
    assert paths.output_dir("mine") == tmp_path / "mine"  # an explicit output_dir wins over DHVTLIB_RESULTS


def test_non_editable_install_falls_back_on_the_cwd(tmp_path, monkeypatch):
    """A copy of the package outside any checkout (as in site-packages) finds the project from the cwd upwards."""
    import shutil

    site = tmp_path / "site"
    shutil.copytree(ROOT / "dhvtlib", site / "dhvtlib", ignore=shutil.ignore_patterns("__pycache__"))
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in (paths.ENV_ROOT, paths.ENV_RESULTS)}
    code = "import sys; sys.path.insert(0, sys.argv[1]); from dhvtlib.paths import project_root; print(project_root())"
    for cwd, expected in ((project / "notebooks", project), (tmp_path, tmp_path)):
        r = subprocess.run([sys.executable, "-c", code, str(site)], cwd=cwd, env={**env, "PYTHONPATH": ""},
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert Path(r.stdout.strip()) == expected.resolve()


def test_runs_record_the_commit_of_the_code_they_imported(monkeypatch):
    from dhvtlib.run import runtime
    commit, dirty = runtime.git_state()
    assert commit is None or (len(commit) == 40 and isinstance(dirty, bool))
    assert runtime.read_git_state()[0] == commit  # nothing checked out since the import

    def checkout_changed(*a, **k):  # a `git checkout` under a running process must not relabel the code it runs
        raise AssertionError("git_state read the checkout again")
    monkeypatch.setattr(runtime.subprocess, "run", checkout_changed)
    assert runtime.git_state() == (commit, dirty)


def test_bar_kind(monkeypatch):
    monkeypatch.delenv(progress.ENV_PROGRESS, raising=False)
    monkeypatch.setattr(sys, "stderr", open(os.devnull, "w"))  # not a terminal (CI, a log file): no bar
    assert progress.bar_kind() == "off" and progress.progress_bar(True, 10, 0, "epoch 1/1") is None
    monkeypatch.setenv(progress.ENV_PROGRESS, "text")
    bar = progress.progress_bar(True, 10, 0, "epoch 1/1")
    assert bar is not None and bar.total == 10
    bar.close()
    assert progress.progress_bar(False, 10, 0, "x") is None
    monkeypatch.setenv(progress.ENV_PROGRESS, "off")
    assert progress.bar_kind() == "off"


def test_kernel_kinds(monkeypatch):
    """Inside a kernel: a widget bar only when a Jupyter server started it (JPY_SESSION_NAME), else none."""
    monkeypatch.delenv(progress.ENV_PROGRESS, raising=False)
    monkeypatch.setattr(progress, "in_kernel", lambda: True)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert progress.bar_kind() == "off"  # papermill / nbclient
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/00_quickstart.ipynb")
    pytest.importorskip("ipywidgets")
    assert progress.bar_kind() == "widget"


def test_interrupted_is_one_sentence(monkeypatch, capsys):
    e = progress.interrupted("runs/x", tell=True)
    assert isinstance(e, KeyboardInterrupt) and e._render_traceback_() == [str(e)]
    assert capsys.readouterr().err == "stopped at a step boundary; resume with resume=True (--resume --output runs/x)\n"
    monkeypatch.setattr(progress, "in_kernel", lambda: True)
    e = progress.interrupted("runs/x")
    assert str(e).endswith("Re-run this cell to resume.") and capsys.readouterr().err == ""
