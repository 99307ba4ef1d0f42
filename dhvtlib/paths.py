"""Where the project's files are, whatever the working directory.

JupyterLab runs a notebook with the notebook's folder (notebooks/) as its working directory, papermill with the
caller's (or --cwd), `make` with the repository root. Relative paths in notebooks and in `make figures` therefore
resolve against the *project root*, never against the working directory:

- `project_root()`: $DHVTLIB_ROOT if set; else the source checkout holding this package (a git clone, installed
  editable with `pip install -e .` or put on PYTHONPATH); else, for a non-editable install (the package lives in
  site-packages, which is no project), the first folder from the working directory upwards holding both
  `pyproject.toml` and `notebooks/`, and failing that the working directory itself. Set DHVTLIB_ROOT (or
  DHVTLIB_RESULTS) when using an installed dhvtlib from elsewhere.
- `results_root()`: where new runs, tables and figures go: $DHVTLIB_RESULTS if set (relative: to the project
  root); else `<project root>/outputs/results`, a working tree git ignores, so running a notebook never changes a
  committed file.
- `store_root()`: `<project root>/results`, the committed store of completed runs, tables and figures that the
  README and `make figures` read. Notebooks reuse a completed run found there (its records are copied into the
  working tree) instead of training it again; it is written only when asked (`make figures`,
  `output_dir="results"`).
- `check_name(name, what)`, `join_under(root, *parts)`: experiment and tag names become folders; a name is refused
  when it could leave its root (`..`, an absolute path, a backslash, an empty part), and a joined path must stay
  under its root.
"""
from __future__ import annotations

import os
from pathlib import Path

from .data import default_data_dir

__all__ = ["ENV_ROOT", "ENV_RESULTS", "project_root", "results_root", "store_root", "resolve", "output_dir",
           "data_dir", "check_name", "join_under"]

ENV_ROOT = "DHVTLIB_ROOT"
ENV_RESULTS = "DHVTLIB_RESULTS"


def _is_project(folder: Path) -> bool:
    return (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir()


def project_root() -> Path:
    """The folder relative paths resolve against (see the module docstring for the order of fallbacks)."""
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent  # the folder holding the dhvtlib package
    if _is_project(checkout):
        return checkout
    cwd = Path.cwd().resolve()
    return next((p for p in (cwd, *cwd.parents) if _is_project(p)), cwd)


def resolve(path: str | os.PathLike | None) -> Path | None:
    """`path` made absolute against the project root (absolute paths and None are returned as they are)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def results_root() -> Path:
    """$DHVTLIB_RESULTS (relative: to the project root), else `<project root>/outputs/results` (git-ignored)."""
    return resolve(os.environ.get(ENV_RESULTS) or "outputs/results")


def store_root() -> Path:
    """`<project root>/results`: the committed results (read as a store of completed runs)."""
    return project_root() / "results"


def output_dir(value: str | os.PathLike | None = None) -> Path:
    """A notebook's `output_dir` parameter: None -> `results_root()` (the working tree); a relative path -> under
    the project root."""
    return results_root() if value is None else resolve(value)


def data_dir(value: str | os.PathLike | None, dataset: str | None = None) -> Path | None:
    """A notebook's `data_dir` parameter: a relative path -> under the project root. None keeps the data set's
    default search (dhvtlib.data; Debian's Fashion-MNIST first), except that a copy at the data set's usual place
    under the project root (`data/fashion-mnist`, `data/cifar100`, ...) is used from any working directory."""
    if value is not None or dataset is None:
        return resolve(value)
    local = project_root() / default_data_dir(dataset)
    return local if local.is_dir() else None


def check_name(name: object, what: str = "experiment") -> str:
    """`name` when it is a safe folder name below a root: text whose '/'-separated parts are neither empty, '.'
    nor '..', without a backslash, a leading '/' or '~', or control characters; else one sentence."""
    text = name if isinstance(name, str) else ""
    parts = text.split("/")
    if (not text or text.startswith(("/", "~")) or "\\" in text or any(p in ("", ".", "..") for p in parts)
            or any(ord(c) < 32 for c in text)):
        raise ValueError(f"{what} name {name!r} could leave its folder; use letters, digits, '-', '_' and '.' "
                         "(with '/' between sub-folders), without '..' or a leading '/'.")
    return text


def join_under(root: str | os.PathLike, *parts: str | os.PathLike) -> Path:
    """`root / parts`, refused in one sentence when it would lie outside `root` (an absolute part, '..'). Links the
    user made inside the root (a sub-folder on another disk) are followed as they are."""
    base = Path(root)
    path = base.joinpath(*parts)
    real_root, real = os.path.normpath(os.path.abspath(base)), os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([real_root, real]) != real_root:
        raise ValueError(f"{path} lies outside {base}; a name must not lead out of its folder.")
    return path
