"""Where decoded image folders are cached: the user's cache directory, never the data folder itself.

A data folder's cache lives in `$XDG_CACHE_HOME/dhvtlib/<folder name>-<hash of its absolute path>/` (without
XDG_CACHE_HOME: `~/.cache/dhvtlib/...`), beside a `folder.json` naming the data folder it belongs to. Nothing is
written inside a data folder unless a cache directory there is asked for (`cache_dir=`, `--cache-dir`): torchvision's
ImageFolder (timm's, the official DHVT code's) then still loads the folder as it is.

- `folder_cache(root)`: the cache directory of data folder `root` (created, with its folder.json, on first use).
- `writable_cache(path)`: `path` created and checked for writing, or one sentence naming it.
- `cache_dir_for(root, cache_dir)`: the directory a folder's caches go to (`cache_dir`, else `folder_cache(root)`),
  created and checked (a FolderError sentence otherwise).
- `fingerprint(root, files)`, `save_cache(path, obj)`, `load_cache(path, fields)`: what a cache file is keyed by,
  and writing (atomically) and reading (weights_only, rebuilt when unreadable or missing a field) one.
- `prune(path, keep)`: keep the `keep` most recently used decode caches of a folder, delete the rest.
- `list_caches()`, `clear_caches(folders)`: what `python -m dhvtlib.data cache list|clear` shows and removes.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..files import atomic_write, write_json
from .types import FolderError

__all__ = ["cache_root", "folder_cache", "writable_cache", "cache_dir_for", "fingerprint", "save_cache",
           "load_cache", "touch", "prune", "list_caches", "clear_caches", "LEGACY_NAME", "KEEP"]

LEGACY_NAME = ".dhvtlib-cache"  # where earlier versions cached, inside the data folder
KEEP = 3  # decode caches kept per data folder (different sizes, channels or file sets); older ones are pruned
_INFO = "folder.json"


def cache_root() -> Path:
    """$XDG_CACHE_HOME/dhvtlib (an absolute XDG_CACHE_HOME only, as the XDG spec says), else ~/.cache/dhvtlib."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "dhvtlib"


def _key(root: Path) -> str:
    real = os.path.realpath(root)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(real).name or "root")[:40]
    return f"{name}-{hashlib.sha256(real.encode()).hexdigest()[:16]}"


def folder_cache(root: str | os.PathLike) -> Path:
    """The cache directory of data folder `root`, keyed by its absolute (resolved) path."""
    return cache_root() / _key(Path(root))


def writable_cache(path: Path, data_root: Path | None = None) -> Path:
    """`path` (created with its parents; with `data_root`, its folder.json) after a write test; else one sentence."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
        if data_root is not None and not (path / _INFO).exists():
            write_json(path / _INFO, {"folder": os.path.realpath(data_root)})
    except OSError as e:
        reason = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                  errno.ENOTDIR: "a path component is a regular file, not a folder",
                  errno.EEXIST: "a file of that name exists", errno.ENOSPC: "the disk is full",
                  errno.ENOENT: "it cannot be created there"}.get(e.errno, e.strerror or type(e).__name__)
        raise ValueError(f"cannot write the decode cache directory {path} ({reason}); pass a writable cache_dir "
                         "(--cache-dir), or set XDG_CACHE_HOME to a writable folder.") from None
    return path


def cache_dir_for(root: Path, cache_dir: str | os.PathLike | None) -> Path:
    """The cache directory asked for, else the folder's own one in the user's cache (never inside `root`), created
    and checked for writing (one sentence naming it otherwise)."""
    try:
        if cache_dir is not None:
            return writable_cache(Path(cache_dir))
        return writable_cache(folder_cache(root), data_root=root)
    except ValueError as e:
        raise FolderError(str(e)) from None


def fingerprint(root: Path, files: Sequence[str]) -> str:
    """sha256 of every file's relative path, size and mtime (ns)."""
    h = hashlib.sha256()
    for rel in files:
        st = os.stat(root / rel)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def save_cache(path: Path, obj: dict[str, Any]) -> None:
    """`torch.save(obj)` to `path`, written atomically (a reader never sees half a file)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_write(path) as f:
        f.write(buf.getbuffer())


def load_cache(path: Path, fields: Sequence[str] = ()) -> dict[str, Any] | None:
    """A cache file holding every one of `fields`, or None when absent, unreadable or written by another version
    (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        got = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a corrupt cache is rebuilt, never trusted
        return None
    if not isinstance(got, dict) or any(f not in got for f in fields):
        return None
    touch(path)
    return got


def touch(path: Path) -> None:
    """Mark a cache file as just used (its mtime orders pruning)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def prune(path: Path, keep: int = KEEP) -> list[Path]:
    """Delete all but the `keep` most recently used decode caches (`*.pt`, not the header caches) in `path`."""
    files = sorted((p for p in path.glob("*.pt") if not p.name.startswith("headers-")),
                   key=lambda p: p.stat().st_mtime_ns, reverse=True)
    headers = sorted(path.glob("headers-*.pt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    removed = []
    for p in files[keep:] + headers[keep:]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def _size(path: Path) -> tuple[int, int]:
    """(bytes, files) under path."""
    total = count = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
                count += 1
    return total, count


def list_caches(extra_folders: Iterable[str | os.PathLike] = ()) -> list[dict[str, Any]]:
    """One entry per cache directory under `cache_root()` (and a `.dhvtlib-cache` left inside each of
    `extra_folders` by an earlier version): path, the data folder it belongs to, bytes and files."""
    out = []
    root = cache_root()
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        try:
            folder = json.loads((d / _INFO).read_text()).get("folder")
        except (OSError, ValueError, AttributeError):
            folder = None
        size, files = _size(d)
        out.append({"path": str(d), "folder": folder, "bytes": size, "files": files})
    for f in extra_folders:
        legacy = Path(f) / LEGACY_NAME
        if legacy.is_dir():
            size, files = _size(legacy)
            out.append({"path": str(legacy), "folder": os.path.realpath(f), "bytes": size, "files": files})
    return out


def clear_caches(folders: Iterable[str | os.PathLike] | None = None) -> list[dict[str, Any]]:
    """Delete every cache (folders None) or those of the given data folders (their cache directory, and a
    `.dhvtlib-cache` an earlier version left inside them); returns the entries removed."""
    folders = None if folders is None else [Path(f) for f in folders]
    wanted = None if folders is None else {os.path.realpath(f) for f in folders}
    keys = None if folders is None else {_key(f) for f in folders}
    removed = []
    for entry in list_caches(folders or ()):
        path = Path(entry["path"])
        if wanted is not None and entry["folder"] not in wanted and path.name not in keys:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(entry)
    return removed


def human(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
