"""`python -m dhvtlib.data fetch-default`: make the default data set (Fashion-MNIST) available, print where it is."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .datasets import default_data_dir, fetch_fashion_mnist


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dhvtlib.data", description=__doc__)
    parser.add_argument("command", choices=["fetch-default"])
    parser.add_argument("--dest", type=Path, default=default_data_dir("fashion_mnist"),
                        help="download folder when no copy exists (default: %(default)s)")
    args = parser.parse_args(argv)
    print(f"Fashion-MNIST: {fetch_fashion_mnist(args.dest)}")


if __name__ == "__main__":
    main()
