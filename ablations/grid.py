"""Grid files: TOML `[base]` (one run's settings) + `[grid]` (axes, each a non-empty list).

The runs are the Cartesian product of the axes over `[base]`, in the order the
axes are written (last axis fastest). Everything is validated before anything
runs; cells that resolve to the same configuration (see `ablations.config`) are
run once, so `len(expand(grid))` can be smaller than the product of axis lengths.

    [base]
    dataset = "digits"
    epochs = 30

    [grid]
    loss = ["batch_hard", "batch_all"]
    margin = [0.1, 0.2]
    seed = [0, 1, 2]

`class_folds = K` (in [base] or as an axis) makes each cell K runs, `fold` = 0..K-1
(K class-disjoint partitions, ablations/data.py); `fold` itself is never set in a
grid file. The baselines (ablations/baselines.py) are added by the runner, not here.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablations.config import DEFAULTS, RunConfig, check_value, resolve_config, unique_configs

SECTIONS = ("base", "grid")


@dataclass(frozen=True)
class Grid:
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    text: str

    @property
    def num_cells(self) -> int:
        """Product of the axis lengths (before de-duplicating equivalent cells)."""
        n = 1
        for values in self.axes.values():
            n *= len(values)
        return n


def parse_grid_text(text: str, *, source: str = "grid") -> Grid:
    """TOML text -> validated Grid; ValueError naming the offending key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{source}: not valid TOML: {err}") from err
    for section in doc:
        if section not in SECTIONS:
            raise ValueError(f"{source}: unknown section [{section}]; "
                             f"valid sections: {', '.join(SECTIONS)}")
    base, axes = doc.get("base", {}), doc.get("grid", {})
    for name, table in (("base", base), ("grid", axes)):
        if not isinstance(table, dict):
            raise ValueError(f"{source}: [{name}] must be a table, got {type(table).__name__}")
    if "fold" in base or "fold" in axes:
        raise ValueError(f"{source}: key 'fold' is not set in a grid file: set class_folds = K "
                         "and the grid runs every fold 0..K-1 of each cell")
    checked_base = {}
    for key, value in base.items():
        checked_base[key] = _checked(source, f"base.{key}", key, value)
    checked_axes: dict[str, list[Any]] = {}
    for key, values in axes.items():
        if key in base:
            raise ValueError(f"{source}: key {key!r} is set in both [base] and [grid]; "
                             f"keep it in one of them")
        if not isinstance(values, list):
            raise ValueError(f"{source}: axis grid.{key} must be a list of values, "
                             f"got {type(values).__name__} {values!r}")
        if not values:
            raise ValueError(f"{source}: axis grid.{key} is empty; give at least one value")
        checked = [_checked(source, f"grid.{key}", key, v) for v in values]
        if len(set(map(repr, checked))) != len(checked):
            raise ValueError(f"{source}: axis grid.{key} repeats a value: {values!r}")
        checked_axes[key] = checked
    grid = Grid(base=checked_base, axes=checked_axes, text=text)
    expand(grid)  # cross-key checks (e.g. npz without a path) fail here, before any run
    return grid


def _checked(source: str, where: str, key: str, value: Any) -> Any:
    try:
        return check_value(key, value)
    except ValueError as err:
        raise ValueError(f"{source}: {where}: {err}") from err


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file not found: {path}")
    return parse_grid_text(path.read_text(encoding="utf-8"), source=str(path))


def expand(grid: Grid) -> list[RunConfig]:
    """Every cell of the grid as a resolved RunConfig, equivalent cells once, in grid order;
    a cell with class_folds = K gives K configs, fold 0..K-1 (fastest)."""
    keys = list(grid.axes)
    cells = ({**grid.base, **dict(zip(keys, values))}
             for values in itertools.product(*(grid.axes[k] for k in keys)))
    return unique_configs(resolve_config({**cell, "fold": fold}) for cell in cells
                          for fold in range(cell.get("class_folds", DEFAULTS["class_folds"])))
