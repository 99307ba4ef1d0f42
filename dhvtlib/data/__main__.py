"""The data command line.

    python -m dhvtlib.data fetch-default [--dest DIR]   # make Fashion-MNIST available, print where it is
    python -m dhvtlib.data cache list [FOLDER ...]      # decode caches of image folders: path, data folder, size
    python -m dhvtlib.data cache clear [FOLDER ...]     # delete them all, or those of the given data folders

Caches live in $XDG_CACHE_HOME/dhvtlib (default ~/.cache/dhvtlib), never inside a data folder unless --cache-dir
points there; naming a FOLDER also lists (clears) a .dhvtlib-cache an earlier version left inside it.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .cache import cache_root, clear_caches, human, list_caches
from .datasets import default_data_dir, fetch_fashion_mnist


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dhvtlib.data", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch-default", help="make the default data set (Fashion-MNIST) available")
    fetch.add_argument("--dest", type=Path, default=default_data_dir("fashion_mnist"),
                       help="download folder when no copy exists (default: %(default)s)")
    cache = sub.add_parser("cache", help="list or clear the decode caches of image folders")
    cache.add_argument("action", choices=["list", "clear"])
    cache.add_argument("folders", nargs="*", type=Path, help="only the caches of these data folders")
    args = parser.parse_args(argv)
    if args.command == "fetch-default":
        print(f"Fashion-MNIST: {fetch_fashion_mnist(args.dest)}")
        return
    if args.action == "list":
        entries = list_caches(args.folders)
        if args.folders:
            wanted = {str(f.resolve()) for f in args.folders}
            entries = [e for e in entries if e["folder"] in wanted]
        for e in entries:
            folder = e["folder"] or "data folder unknown"
            print(f"{human(e['bytes']):>10}  {e['files']:>4} files  {e['path']}  ({folder})")
        total = sum(e["bytes"] for e in entries)
        print(f"{len(entries)} cache(s), {human(total)} in all, under {cache_root()}")
        return
    removed = clear_caches(args.folders or None)
    for e in removed:
        print(f"removed {e['path']} ({human(e['bytes'])})")
    print(f"{len(removed)} cache(s) removed, {human(sum(e['bytes'] for e in removed))} freed")


if __name__ == "__main__":
    main()
