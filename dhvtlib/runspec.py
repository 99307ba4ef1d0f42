"""One row of a table (`RunSpec`) and where its runs live: the run directory of a (row, seed) (`run_dir`), the data
set a row trains on (`spec_dataset`) and the folder it reads (`spec_data_dir`). The rows themselves are made by the
builders in dhvtlib.experiments, which re-exports these names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .paper import reported_value
from .paths import check_name, join_under
from .recipe import PRESETS, Recipe

__all__ = ["RunSpec", "run_dir", "spec_dataset", "spec_data_dir"]


@dataclass(frozen=True)
class RunSpec:
    """One table row. Tags name the paper cell they reproduce ('table4/<model>', 'table13/<model>/<domain>',
    'table5/sope'), so dhvtlib.results finds the paper's number from the tag alone."""
    experiment: str
    tag: str
    label: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    paper: tuple[str, str, str | None] | None = None  # (table, row, setting) in dhvtlib/paper/reported.csv
    preset: str | Recipe | None = None  # this table's recipe (execute's preset= replaces it, e.g. with "smoke")
    seeds: tuple[int, ...] | None = None  # this row's own seeds (None: execute's seeds)

    @property
    def paper_top1(self) -> float | None:
        return reported_value(self.paper[0], self.paper[1], setting=self.paper[2]) if self.paper else None


def spec_dataset(spec: RunSpec, preset: str | Recipe | None = None) -> str:
    """The data set a row trains on: its own recipe's, else that of the preset it runs with (`preset`, else the
    row's)."""
    if spec.recipe.get("dataset"):
        return spec.recipe["dataset"]
    p = preset or spec.preset or "quick"
    return (p if isinstance(p, Recipe) else PRESETS[p]).dataset


def spec_data_dir(spec: RunSpec, data_dir: str | Path | Mapping[str, str | Path] | None,
                  dataset: str | None = None) -> Path | None:
    """The folder a row reads. `data_dir` is one folder, or {data set or family: folder} for a table that mixes
    data sets (e.g. {"cifar100": ..., "domainnet": ...}); a DomainNet domain is its own data set, read from
    `<folder>/<domain>` (train/ and val/ inside). `dataset` is execute's data set override, which replaces the
    row's own (then the folder is that data set's, as given). None: each data set's default place."""
    name = dataset or spec_dataset(spec)
    family = "domainnet" if name.startswith("domainnet_") else name
    root = data_dir.get(name, data_dir.get(family)) if isinstance(data_dir, Mapping) else data_dir
    if root is None:
        return None
    return Path(root) / name.removeprefix("domainnet_") if family == "domainnet" else Path(root)


def run_dir(results_root: str | Path, spec: RunSpec, seed: int) -> Path:
    """`<root>/<experiment>/<tag with '/' as '__'>/s<seed>`; a name that could leave the root is refused."""
    return join_under(results_root, check_name(spec.experiment, "experiment"),
                      check_name(spec.tag, "tag").replace("/", "__"), f"s{seed}")
