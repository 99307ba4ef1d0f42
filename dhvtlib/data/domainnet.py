"""Prepare DomainNet (as distributed: `<domain>.zip` + `<domain>_train.txt` / `<domain>_test.txt`) as ImageFolders.

    python -m dhvtlib.data.domainnet --src DIR --out data/domainnet [--domains clipart sketch]

writes `out/<domain>/train/<class>/<file>.jpg` and `out/<domain>/val/<class>/<file>.jpg` (the official split; val is
the official test list). Each domain is built in `out/<domain>.partial` and renamed at the end, so an interrupted
prep leaves no half-written domain.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Sequence

from ..files import sha256
from .datasets import DOMAINNET_DOMAINS, DOMAINNET_SPLIT_SIZES

__all__ = ["prepare_domainnet", "prepare_domain", "read_split_list", "paper_count_warnings",
           "KNOWN_SHA256", "main"]

# sha256 of each official <domain>.zip; empty because this project cannot download the zips to compute them.
# Fill in as `"clipart": "<hex>"` to have every prep verify them.
KNOWN_SHA256: dict[str, str] = {}
SPLITS = (("train", "train"), ("test", "val"))  # (split list suffix, output folder)


def read_split_list(path: Path, domain: str) -> list[tuple[str, str]]:
    """(zip member, class) of each line `<domain>/<class>/<file>.jpg <label>`; one label per class is checked."""
    if not path.is_file():
        raise FileNotFoundError(f"DomainNet split list {path} not found; download {path.name} from the DomainNet "
                                "site next to the zips.")
    entries, labels = [], {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        member_parts = parts[0].split("/")
        if len(parts) != 2 or len(member_parts) != 3 or member_parts[0] != domain or not parts[1].isdigit():
            raise ValueError(f"{path}:{number}: {line!r} is not '{domain}/<class>/<file> <label>'; use the official "
                             "split list.")
        cls = member_parts[1]
        if labels.setdefault(cls, parts[1]) != parts[1]:
            raise ValueError(f"{path}:{number}: class {cls!r} has labels {labels[cls]} and {parts[1]}; use the "
                             "official split list.")
        entries.append((parts[0], cls))
    return entries


def prepare_domain(src: Path, out: Path, domain: str, checksum: str | None = None,
                   expect_classes: int = 345) -> dict[str, int]:
    """Build out/<domain>/{train,val}/<class>/ from src/<domain>.zip; returns {'train': n, 'val': n}."""
    final, partial = out / domain, out / f"{domain}.partial"
    if final.is_dir():
        return {folder: sum(1 for p in (final / folder).rglob("*") if p.is_file()) for _, folder in SPLITS}
    zip_path = src / f"{domain}.zip"
    if not zip_path.is_file():
        raise FileNotFoundError(f"{zip_path} not found; download {domain}.zip from the DomainNet site into {src}.")
    if checksum is not None and (found := sha256(zip_path)) != checksum:
        raise ValueError(f"{zip_path} has sha256 {found}, expected {checksum}; download it again.")
    splits = {folder: read_split_list(src / f"{domain}_{suffix}.txt", domain) for suffix, folder in SPLITS}
    for folder, entries in splits.items():
        if (n := len({cls for _, cls in entries})) != expect_classes:
            raise ValueError(f"{domain} {folder} split lists {n} classes, expected {expect_classes}; use the "
                             "official split lists.")
    shutil.rmtree(partial, ignore_errors=True)  # left over from an interrupted prep
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        missing = [m for entries in splits.values() for m, _ in entries if m not in names]
        if missing:
            raise ValueError(f"{zip_path} lacks {len(missing)} listed files (e.g. {missing[:3]}); the zip and the "
                             "split lists do not match, so download both again.")
        for folder, entries in splits.items():
            for member, cls in entries:
                dest = partial / folder / cls / Path(member).name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as fin, open(dest, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
    partial.rename(final)
    return {folder: len(entries) for folder, entries in splits.items()}


def prepare_domainnet(src: str | Path, out: str | Path, domains: Sequence[str] = DOMAINNET_DOMAINS,
                      checksums: dict[str, str] | None = None, expect_classes: int = 345) -> dict[str, dict[str, int]]:
    """Prepare each domain (already prepared ones are counted, not rebuilt); checksums: domain -> zip sha256."""
    unknown = sorted(set(domains) - set(DOMAINNET_DOMAINS))
    if unknown:
        raise ValueError(f"DomainNet domains {unknown} are not known; use some of {list(DOMAINNET_DOMAINS)}.")
    checksums = KNOWN_SHA256 if checksums is None else checksums
    Path(out).mkdir(parents=True, exist_ok=True)
    return {d: prepare_domain(Path(src), Path(out), d, checksums.get(d), expect_classes) for d in domains}


def paper_count_warnings(counts: dict[str, dict[str, int]]) -> list[str]:
    """Where the prepared train/val counts differ from the paper's (Tables 1 and 12)."""
    warnings = []
    for domain, got in counts.items():
        paper = dict(zip(("train", "val"), DOMAINNET_SPLIT_SIZES[domain]))
        if got != paper:
            warnings.append(f"warning: {domain} has train/val {got['train']}/{got['val']} images but the paper "
                            f"reports {paper['train']}/{paper['val']}.")
    return warnings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, required=True, help="folder with <domain>.zip and the split lists")
    parser.add_argument("--out", type=Path, required=True, help="output root, e.g. data/domainnet")
    parser.add_argument("--domains", nargs="+", choices=DOMAINNET_DOMAINS, default=list(DOMAINNET_DOMAINS))
    args = parser.parse_args(argv)
    try:
        counts = prepare_domainnet(args.src, args.out, args.domains)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    for domain, got in counts.items():
        print(f"{domain}: train {got['train']}, val {got['val']} -> {args.out / domain}")
    for warning in paper_count_warnings(counts):
        print(warning, file=sys.stderr)


if __name__ == "__main__":
    main()
