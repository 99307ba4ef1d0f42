"""JupyterLab as a researcher sees it, in a real browser (headless Chromium driven by Playwright): the quickstart
mid-training, interrupted, resumed and finished, and the head-token explorer after moving a slider. Screenshots go
to --out (they are evidence, not test data: keep them out of git).

Opt-in (it trains for a few minutes): it runs only with DHVTLIB_BROWSER_TEST=1, Playwright (the `browser` extra)
and a Chromium binary (Debian's: `apt-get install chromium`; never `playwright install`):

    .venv/bin/pip install -e '.[notebooks,browser]'
    DHVTLIB_BROWSER_TEST=1 DHVTLIB_SCREENS=/tmp/screens .venv/bin/python -m pytest -q tests/browser
    .venv/bin/python tests/browser/test_jupyterlab.py --out /tmp/screens            # the same, as a script

JupyterLab serves a copy of notebooks/ in a temporary project (DHVTLIB_ROOT) whose runs go to its own default
working tree (outputs/results), so nothing in the checkout is written; autosave is off. The notebooks run on Fashion-MNIST
(Debian's dataset-fashion-mnist or data/fashion-mnist) with the smoke preset's small model for 4 epochs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("DHVTLIB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The smoke preset's model on real Fashion-MNIST, 4 epochs: seconds per epoch on a shared 2-core machine, long
# enough to see a bar mid-epoch and to interrupt one.
# 05 keeps its defaults (but 2 images): it must find 00's model whatever 00's preset and epochs were.
SMOKE = {'preset = None ': 'preset = "smoke"', "epochs = None": "epochs = 4"}
PARAMS = {"00_quickstart.ipynb": SMOKE, "05_head_tokens.ipynb": {"n_images = 3": "n_images = 2"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_notebooks(src: Path, dest: Path) -> None:
    """The notebooks with the parameters of PARAMS (parameter cells edited, nothing else)."""
    dest.mkdir(parents=True)
    for nb_path in sorted(src.glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        for cell in nb["cells"]:
            if "parameters" in cell["metadata"].get("tags", []):
                text = "".join(cell["source"])
                for old, new in PARAMS.get(nb_path.name, {}).items():
                    text = text.replace(old, new)
                cell["source"] = text
        (dest / nb_path.name).write_text(json.dumps(nb, indent=1) + "\n")


@contextlib.contextmanager
def jupyter_lab(workdir: Path, notebooks: Path, pythonpath: str):
    """`jupyter lab` on 127.0.0.1 serving a temporary project; yields (base url, token); stopped on exit."""
    project, settings = workdir / "project", workdir / "settings"
    _copy_notebooks(notebooks, project / "notebooks")
    plugin = settings / "@jupyterlab" / "docmanager-extension"
    plugin.mkdir(parents=True)
    (plugin / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    news = settings / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                       "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**{k: v for k, v in os.environ.items() if k != "DHVTLIB_RESULTS"}, "PYTHONPATH": pythonpath,
           "DHVTLIB_ROOT": str(project), "OMP_NUM_THREADS": "2"}  # the default output_dir: outputs/results
    jupyter = Path(sys.executable).with_name("jupyter")
    log = open(workdir / "jupyter.log", "w")
    proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={project}",
                             f"--LabApp.user_settings_dir={settings}", "--LabApp.expose_app_in_browser=True",
                             f"--ServerApp.allow_origin=http://127.0.0.1:{port}", "--allow-root"],
                            cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if proc.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError(f"jupyter lab did not start; see {workdir / 'jupyter.log'}")
        yield url, token, project
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def chromium(workdir: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(workdir / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=CHROMIUM_ARGS,
                                                       viewport={"width": 1400, "height": 1000})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


class Lab:
    """One notebook open in JupyterLab, driven through the app's command registry (window.jupyterapp)."""

    def __init__(self, page, url: str, token: str, out: Path, label: str, project: Path):
        self.page, self.url, self.token, self.out, self.label, self.project = page, url, token, out, label, project

    def wait_first_epoch(self, timeout: float) -> None:
        """Until a run under the project (results/ or, before the fix, notebooks/results/) has finished an epoch."""
        end = time.time() + timeout
        while time.time() < end:
            if any(p.stat().st_size for p in self.project.rglob("metrics.jsonl")):
                return
            time.sleep(0.5)
        raise TimeoutError(f"no epoch finished within {timeout}s")

    def open(self, name: str) -> None:
        self.name = name.removesuffix(".ipynb")
        self.page.goto(f"{self.url}/lab/tree/notebooks/{name}?token={self.token}")
        self.page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        self.wait_idle(120)
        time.sleep(2)  # let JupyterLab apply the kernel's language_info and spec (this is what marks a file dirty)

    def command(self, cmd: str) -> None:
        """Start a JupyterLab command without waiting for it (run-all's promise settles when every cell has run)."""
        self.page.evaluate("cmd => { window.jupyterapp.commands.execute(cmd); }", cmd)

    def kernel_status(self) -> str:
        return self.page.evaluate("window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status"
                                  " ?? 'none'")

    def dirty(self) -> bool:
        return bool(self.page.evaluate("window.jupyterapp.shell.currentWidget?.context?.model?.dirty"))

    def wait_idle(self, timeout: float) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.kernel_status() == "idle" and not self.page.evaluate(
                    "[...document.querySelectorAll('.jp-InputPrompt')].some(p => p.textContent.includes('*'))"):
                return
            time.sleep(1)
        raise TimeoutError(f"{self.name}: the kernel is still busy after {timeout}s")

    def show_cell(self, index: int, where: str = "start") -> None:
        self.page.evaluate(f"document.querySelectorAll('.jp-Notebook .jp-Cell')[{index}]"
                           f".scrollIntoView({{block: '{where}'}})")
        time.sleep(1)

    def shot(self, what: str) -> Path:
        path = self.out / f"{self.label}_{self.name}_{what}.png"
        self.page.screenshot(path=str(path))
        return path


def quickstart(lab: Lab, interrupt: bool) -> dict:
    """00: opened (not modified), mid-training, interrupted (optional) and resumed, finished."""
    lab.open("00_quickstart.ipynb")
    facts = {"dirty_after_open": lab.dirty()}
    lab.shot("opened")
    lab.command("notebook:run-all-cells")
    lab.wait_first_epoch(600)
    lab.show_cell(3)
    time.sleep(1.5)
    lab.shot("mid_training")
    if interrupt:
        lab.command("kernelmenu:interrupt")
        lab.wait_idle(300)
        lab.show_cell(3, "end")
        lab.shot("interrupted")
        facts["interrupted_text"] = lab.page.evaluate(
            "document.querySelectorAll('.jp-Notebook .jp-Cell')[3].textContent")
        lab.command("notebook:run-all-cells")
        time.sleep(3)
    lab.wait_idle(900)
    for index, what in ((3, "end_runs"), (4, "end_table"), (5, "end_curves"), (7, "end_head_tokens")):
        lab.show_cell(index)
        lab.shot(what)
    facts["text"] = lab.page.evaluate("document.querySelector('.jp-Notebook').textContent")
    return facts


def head_tokens(lab: Lab) -> dict:
    """05: the figures, then the explorer before and after moving the block slider."""
    lab.open("05_head_tokens.ipynb")
    facts = {"dirty_after_open": lab.dirty()}
    lab.command("notebook:run-all-cells")
    time.sleep(3)
    lab.wait_idle(900)
    lab.show_cell(4)
    lab.shot("head_tokens")
    lab.show_cell(6)
    lab.shot("attributions")
    cells = lab.page.locator(".jp-Notebook .jp-Cell")
    explorer = cells.nth(cells.count() - 1)
    if explorer.locator(".widget-hslider").count():
        lab.show_cell(cells.count() - 1)
        lab.shot("explorer")
        before = explorer.locator("img").first.get_attribute("src")
        handle = explorer.locator(".widget-hslider").nth(1).locator(".noUi-handle")  # the block slider
        handle.focus()
        lab.page.keyboard.press("ArrowLeft")
        lab.page.wait_for_function("([el, src]) => el.getAttribute('src') !== src",
                                   arg=[explorer.locator("img").first.element_handle(), before], timeout=120_000)
        time.sleep(1)
        facts["explorer_status"] = explorer.locator(".widget-html").first.inner_text()
        lab.shot("explorer_after_slider")
        facts["explorer_updated"] = True
    facts["text"] = lab.page.evaluate("window.jupyterapp.shell.currentWidget.node.textContent")  # 05, not 00
    return facts


def run_all(out: Path, code: Path = ROOT, pythonpath: str | None = None, label: str = "after",
            interrupt: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dhvtlib-lab-") as tmp:
        work = Path(tmp)
        with jupyter_lab(work, code / "notebooks", pythonpath or str(code)) as (url, token, project):
            with chromium(work) as page:
                lab = Lab(page, url, token, out, label, project)
                facts = {"00": quickstart(lab, interrupt), "05": head_tokens(lab)}
            facts["outputs"] = sorted(str(p.relative_to(project)) for p in project.rglob("manifest.json"))
            facts["written_beside_notebooks"] = sorted(str(p.relative_to(project))
                                                       for p in (project / "notebooks").rglob("*")
                                                       if p.suffix != ".ipynb" and ".ipynb_checkpoints" not in str(p))
        shutil.copy(work / "jupyter.log", out / f"{label}_jupyter.log")
    (out / f"{label}_facts.json").write_text(json.dumps(facts, indent=1))
    return facts


def _skip_reason() -> str | None:
    if os.environ.get("DHVTLIB_BROWSER_TEST") != "1":
        return "opt-in: set DHVTLIB_BROWSER_TEST=1 (trains for a few minutes in JupyterLab)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set DHVTLIB_CHROMIUM)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[browser]')"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_jupyterlab_quickstart_and_explorer():
    out = Path(os.environ.get("DHVTLIB_SCREENS") or tempfile.mkdtemp(prefix="dhvtlib-screens-"))
    facts = run_all(out)
    for name in ("00", "05"):
        assert facts[name]["dirty_after_open"] is False, name  # opening a notebook does not modify it
    q = facts["00"]
    assert "Re-run this cell to resume." in q["interrupted_text"] and "Traceback" not in q["interrupted_text"]
    assert "IProgress" not in q["text"] and "Warning" not in q["text"]
    assert "quick: Fashion-MNIST, preset smoke (4 epochs" in q["text"]  # the table's caption line
    assert facts["05"]["explorer_updated"] and "true: " in facts["05"]["explorer_status"]
    assert "Traceback" not in q["text"] and "Traceback" not in facts["05"]["text"]
    assert "model: " in facts["05"]["text"] and "/outputs/results/quick/dhvt_tiny_cifar_patch4/s0/" in \
        facts["05"]["text"]  # 05 with its defaults found 00's model (smoke preset, 4 epochs)
    assert facts["written_beside_notebooks"] == []  # runs went to the project's outputs/results, not notebooks/
    assert facts["outputs"] and all(p.startswith("outputs/results/") for p in facts["outputs"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the screenshots (keep it out of git)")
    ap.add_argument("--code", type=Path, default=ROOT, help="the dhvtlib checkout whose notebooks and package run")
    ap.add_argument("--pythonpath", help="the kernel's PYTHONPATH (default: --code)")
    ap.add_argument("--label", default="after", help="screenshot name prefix")
    ap.add_argument("--no-interrupt", action="store_true", help="do not interrupt and resume the quickstart")
    args = ap.parse_args(argv)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops jupyter lab and Chromium
    facts = run_all(args.out, args.code, args.pythonpath, args.label, not args.no_interrupt)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "text"} if isinstance(v, dict) else v
                      for k, v in facts.items()}, indent=1))


if __name__ == "__main__":
    main()
