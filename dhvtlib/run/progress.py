"""What a person sees while a run trains: one progress bar per epoch where it helps, nothing where it is noise, and
one sentence (no traceback) when a run is interrupted.

The bar depends on where the run is (`bar_kind`):
- a Jupyter kernel started by a Jupyter server (JupyterLab, Notebook; the server sets JPY_SESSION_NAME for the
  kernels of its sessions) with ipywidgets installed: a widget bar, updated in place and removed at the end of
  the epoch (also when the epoch is interrupted);
- any other kernel (papermill and nbclient start kernels themselves, with no widget frontend): no bar, since
  widget or text bars become frozen outputs or hundreds of lines in the executed notebook;
- a terminal: tqdm's text bar when stderr is a terminal, none when it is a file or a pipe (CI logs).
DHVTLIB_PROGRESS=widget|text|off overrides the choice. The one-line epoch summary is printed either way.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .rundir import RunInterrupted
from .runtime import in_kernel

__all__ = ["ENV_PROGRESS", "bar_kind", "progress_bar", "RunInterrupted", "interrupted",
           "install_refusals"]

ENV_PROGRESS = "DHVTLIB_PROGRESS"
KINDS = ("widget", "text", "off")


def _has_ipywidgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def bar_kind() -> str:
    """'widget', 'text' or 'off' for this process (see the module docstring)."""
    kind = os.environ.get(ENV_PROGRESS, "").strip().lower()
    if kind in KINDS:
        return kind
    if in_kernel():
        return "widget" if os.environ.get("JPY_SESSION_NAME") and _has_ipywidgets() else "off"
    return "text" if sys.stderr.isatty() else "off"


def progress_bar(enabled: bool, total: int, initial: int, desc: str) -> Any:
    """A tqdm bar for one epoch (`update(1)` per step, `close()` at the end), or None where no bar is shown."""
    kind = bar_kind() if enabled else "off"
    if kind == "off":
        return None
    kwargs = dict(total=total, initial=initial, desc=desc, leave=False)
    if kind == "widget":
        return _widget_bar_class()(**kwargs)
    return tqdm(dynamic_ncols=True, **kwargs)


def _widget_bar_class():
    from tqdm.notebook import tqdm as notebook_tqdm

    class WidgetBar(notebook_tqdm):
        """tqdm's widget bar, removed on close also when the epoch did not finish (tqdm keeps it then, red)."""

        def close(self):
            super().close()
            if not self.leave and getattr(self, "container", None) is not None:
                self.container.close()

    return WidgetBar


def interrupted(output: str | os.PathLike, tell: bool = True, signum: int = signal.SIGINT) -> RunInterrupted:
    """The exception `dhvtlib.run.run` raises when stopped (by `signum`): in a kernel its message says to re-run the
    cell; in a terminal the sentence (with the --resume command) is printed on its own line to stderr when `tell`."""
    if in_kernel():
        return RunInterrupted(signum, output, f"Stopped at a step boundary; the checkpoint is in {Path(output)}. "
                              "Re-run this cell to resume.")
    message = f"stopped at a step boundary; resume with resume=True (--resume --output {output})"
    if tell:
        print(message, file=sys.stderr, flush=True)
    return RunInterrupted(signum, output, message)


# Expected refusals: dhvtlib raises these (with one sentence naming the value and the fix) for bad input; a
# notebook cell shows that sentence alone, as the command-line tools print it.
REFUSALS = (ValueError, FileNotFoundError, FileExistsError)
_PACKAGE = str(Path(__file__).resolve().parents[1])  # dhvtlib/, not dhvtlib/run/


def _raised_by_dhvtlib(tb) -> bool:
    """Whether the innermost frame of a traceback is dhvtlib's own code (an error from torch or a bug elsewhere
    keeps its traceback)."""
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and last.tb_frame.f_code.co_filename.startswith(_PACKAGE)


def install_refusals(shell: Any = None) -> bool:
    """In a Jupyter kernel, show dhvtlib's expected refusals (`REFUSALS` raised by dhvtlib's own checks) as their
    one sentence instead of a traceback; any other error keeps its traceback. Returns whether it was installed."""
    shell = shell or (sys.modules.get("IPython") and sys.modules["IPython"].get_ipython())
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return False

    def show(self, etype, value, tb, tb_offset=None):
        if _raised_by_dhvtlib(tb):  # an error output whose whole traceback is the sentence (as RunInterrupted's)
            self._showtraceback(etype, value, [f"{etype.__name__}: {value}"])
        else:
            self.showtraceback((etype, value, tb), tb_offset=tb_offset)

    shell.set_custom_exc(REFUSALS, show)
    return True
