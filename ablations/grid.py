"""Grid files: TOML `[base]` (one run's settings) + `[grid]` (axes, each a non-empty list).

The runs are the Cartesian product of the axes over `[base]`, in the order the
axes are written (last axis fastest). Everything is validated before anything
runs; cells that resolve to the same configuration (see `ablations.config`) are
run once, so `len(expand(grid))` can be smaller than the product of axis lengths.
A grid larger than `max_runs` cells (default MAX_RUNS, counted as the product of
the axis lengths before anything is expanded) is refused; an empty grid file is
an error.

    [base]
    dataset = "digits"
    epochs = 30

    [grid]
    loss = ["batch_hard", "batch_all"]
    margin = [0.1, 0.2]
    seed = [0, 1, 2]

`class_folds = K` (in [base] or as an axis) makes each cell K runs, `fold` = 0..K-1
(K class-disjoint partitions, ablations/data.py); `fold` itself is never set in a
grid file. The baselines (ablations/baselines.py) are added by the runner, not here;
an optional `[baselines]` table chooses which (default: every one of BASELINES):

    [baselines]
    include = ["raw", "lda"]     # [] runs none
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablations.config import (BASELINES, DEFAULTS, RunConfig, check_value, readers, resolve_config,
                              unique_configs)
from ablations.search_section import SearchSection, parse_search

SECTIONS = ("base", "grid", "baselines", "search")
MAX_RUNS = 10_000  # default cap on a grid's cells (`tripletlab run --max-runs N` raises it)


@dataclass(frozen=True)
class Grid:
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    text: str
    baselines: tuple[str, ...] = ()   # [baselines] include: the baselines the runner adds (load_grid: all)
    search: SearchSection | None = None  # the [search] section, when the file has one

    @property
    def num_cells(self) -> int:
        """Runs before de-duplicating equivalent cells: product of the axis lengths x folds."""
        n = 1
        for values in self.axes.values():
            n *= len(values)
        if "class_folds" in self.axes:  # each cell gives class_folds runs (one per fold)
            folds = self.axes["class_folds"]
            return n // len(folds) * sum(folds)
        return n * self.base.get("class_folds", 1)

    @functools.cached_property
    def configs(self) -> tuple[RunConfig, ...]:
        """The expansion (see `expand`), computed once per Grid."""
        keys = list(self.axes)
        cells = ({**self.base, **dict(zip(keys, values))}
                 for values in itertools.product(*(self.axes[k] for k in keys)))
        return tuple(unique_configs(
            resolve_config({**cell, "fold": fold}) for cell in cells
            for fold in range(cell.get("class_folds", DEFAULTS["class_folds"]))))


def check_size(grid: Grid, *, max_runs: int, source: str = "grid") -> None:
    """ValueError when the grid has more than `max_runs` cells (no expansion needed)."""
    if grid.num_cells > max_runs:
        sizes = " x ".join(f"{key} {len(values)}" for key, values in grid.axes.items())
        raise ValueError(f"{source}: the grid has {grid.num_cells} cells ({sizes}), more than "
                         f"the limit of {max_runs} runs; split it, or raise the limit with "
                         f"--max-runs {grid.num_cells} (run_grid(..., max_runs=...))")


def parse_grid_text(text: str, *, source: str = "grid", max_runs: int = MAX_RUNS) -> Grid:
    """TOML text -> validated Grid; ValueError naming the offending key.

    max_runs: cap on the number of cells, checked before the grid is expanded.
    """
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
    if "baseline" in base or "baseline" in axes:
        raise ValueError(f"{source}: key 'baseline' is not set in a grid file: a grid's cells are "
                         "trained, and the baselines run beside them; choose which with "
                         "[baselines] include = [...]")
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
    if not checked_base and not checked_axes:
        raise ValueError(f"{source}: the grid is empty; set at least one key in [base] "
                         f"or one axis in [grid] (e.g. [grid] seed = [0, 1, 2])")
    grid = Grid(base=checked_base, axes=checked_axes, text=text,
                baselines=parse_baselines(doc.get("baselines", {}), source=source))
    check_size(grid, max_runs=max_runs, source=source)
    expand(grid)  # cross-key checks (e.g. npz without a path) fail here, before any run
    if "search" in doc:
        grid = dataclasses.replace(grid, search=parse_search(
            doc["search"], base=checked_base, axes=checked_axes, configs=grid.configs,
            source=source, max_runs=max_runs))
    return grid


def parse_baselines(table: Any, *, source: str = "grid") -> tuple[str, ...]:
    """The `[baselines]` table -> the baselines to run (`include`, default all of BASELINES);
    ValueError naming `baselines.include` (or the unknown key) otherwise."""
    if not isinstance(table, dict):
        raise ValueError(f"{source}: [baselines] must be a table, got {type(table).__name__}")
    for key in table:
        if key != "include":
            raise ValueError(f"{source}: unknown key baselines.{key}; valid keys: include")
    include = table.get("include", list(BASELINES))
    if not isinstance(include, list) or not all(isinstance(v, str) for v in include):
        raise ValueError(f"{source}: baselines.include must be a list of baseline names "
                         f"(e.g. [\"raw\", \"lda\"]), got {include!r}")
    for name in include:
        if name not in BASELINES:
            close = difflib.get_close_matches(name, BASELINES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{source}: baselines.include: unknown baseline {name!r}{hint}; "
                             f"valid baselines: {', '.join(BASELINES)}")
    if len(set(include)) != len(include):
        raise ValueError(f"{source}: baselines.include repeats a name: {include!r}")
    return tuple(include)


def _checked(source: str, where: str, key: str, value: Any) -> Any:
    try:
        return check_value(key, value)
    except ValueError as err:
        raise ValueError(f"{source}: {where}: {err}") from err


def load_grid(path: str | Path, *, max_runs: int = MAX_RUNS) -> Grid:
    """Read and validate a grid file (UTF-8 TOML)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"grid file {str(path)!r} is a directory; expected a TOML file "
                         f"(e.g. ablations/grids/smoke.toml)")
    if not path.is_file():
        if path.is_symlink():  # a link that loops, or points to nothing
            try:
                target = f"points to {str(path.resolve(strict=True))!r}, which is no file"
            except RuntimeError:
                target = "is a symbolic link that loops"
            except OSError:
                target = f"is a symbolic link to the missing {os.readlink(path)!r}"
            raise ValueError(f"grid file {str(path)!r} {target}; expected a TOML file")
        if path.exists():  # a device, a FIFO, a socket
            raise ValueError(f"grid file {str(path)!r} is not a regular file; expected a TOML "
                             f"file (e.g. ablations/grids/smoke.toml)")
        raise FileNotFoundError(f"grid file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a leading BOM (Windows editors) dropped
    except UnicodeDecodeError as err:
        raise ValueError(f"grid file {str(path)!r} is not UTF-8 text (byte {err.start}: "
                         f"{err.reason}); save it as UTF-8 TOML") from err
    except OSError as err:
        raise ValueError(f"grid file {str(path)!r} cannot be read ({err.strerror or err})") from err
    return parse_grid_text(text, source=str(path), max_runs=max_runs)


def dropped_keys(grid: Grid) -> dict[str, set[str]]:
    """Keys the grid file sets that some cells reset to their default (they cannot change
    those runs, ablations.config) -> the losses of those cells."""
    keys = list(grid.axes)
    dropped: dict[str, set[str]] = {}
    for values in itertools.product(*(grid.axes[k] for k in keys)):
        cell = {**grid.base, **dict(zip(keys, values))}
        # the last fold: fold 0 of rotated folds is the plain cut, where the folds' keys reset
        config = resolve_config({**cell, "fold": cell.get("class_folds", 1) - 1})
        for key, value in cell.items():
            if key in ("class_folds", "data_fingerprint", "dataset") or value == DEFAULTS[key]:
                continue
            if getattr(config, key) != value:
                dropped.setdefault(key, set()).add(config.loss)
    return dropped


def describe_dropped(dropped: dict[str, set[str]]) -> str:
    """dropped_keys(grid) -> one line naming each key and the losses it does not apply to."""
    return ("keys that do not apply to some runs were dropped from them (reset: they cannot change "
            "those runs): "
            + "; ".join(f"{key} (with loss = {', '.join(sorted(losses))}: "
                        f"{readers(key)})"
                        for key, losses in sorted(dropped.items())))


def expand(grid: Grid) -> list[RunConfig]:
    """Every cell of the grid as a resolved RunConfig, equivalent cells once, in grid order;
    a cell with class_folds = K gives K configs, fold 0..K-1 (fastest)."""
    return list(grid.configs)
