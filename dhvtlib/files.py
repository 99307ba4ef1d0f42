"""Files written all-or-nothing, and their digests: the one home for atomic writes in dhvtlib.

- `atomic_write(path)`: a temp file in the same folder, flushed and fsynced, then renamed over `path`; an
  interrupted write leaves the previous file intact and no partial file behind. Files get the umask's mode.
- `write_json(path, obj)`, `write_text(path, text)`: the same for JSON (indented, newline-terminated) and text.
- `sha256(path)`: the hex digest of a file, read in 1 MiB chunks.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

__all__ = ["atomic_write", "write_json", "write_text", "sha256"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[BinaryIO]:
    """Write `path` all-or-nothing: yields a temp file in the same folder, renamed over `path` on success.
    `open_kwargs` (e.g. newline, encoding) go to the file object in text mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a results folder shared with a group needs the umask's mode
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _umask() -> int:
    """The process umask (read without changing it where /proc allows; else set and restored at once)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """`obj` as indented JSON (values JSON cannot hold written as str), atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """`text` as UTF-8 with newlines as given, atomically."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
