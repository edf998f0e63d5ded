"""The read side of ablations that reports use, and the only module of ablations they import.

Reports read a results store (`open_store`: a `ResultsStore`, migrated first when it is of an
older format), the schema of run configs (defaults, the data keys, the baseline names, the rule
that names the keys a config does not use), what a store's grid.toml says (`read_grid`: its data
sources, expected run ids and baselines, from one parse) and which stored runs are on other data
than it reads (`runs_on_data`, which the runner uses too). Training, data loading and executors
stay behind this module.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ablations.baselines import with_baselines
from ablations.config import (BASELINES, CLASSICAL_BASELINES, DATA_KEYS, DEFAULTS, LEGACY_SPLIT_PROTOCOL,
                              SEED_FREE_BASELINES, _keys_to_reset, config_hash, config_to_dict)
from ablations.data import SOURCE_KEYS, source_of
from ablations.grid import expand, parse_baselines, parse_grid_text
from ablations.migrate import open_store
from ablations.store import is_store
from ablations.store import ResultsStore

__all__ = ["BASELINES", "CLASSICAL_BASELINES", "DATA_KEYS", "DEFAULTS", "LEGACY_SPLIT_PROTOCOL",
           "SEED_FREE_BASELINES", "SOURCE_KEYS", "GridInfo", "ResultsStore", "is_store", "keys_not_used",
           "open_store", "read_grid", "runs_on_data", "source_of"]


def keys_not_used(config: dict[str, Any]) -> list[str]:
    """A full config dict (every key of DEFAULTS) -> the keys that cannot change what it trains."""
    return _keys_to_reset(config)


@dataclass(frozen=True)
class GridInfo:
    """What a store's grid.toml says, as `read_grid` reads it here."""
    sources: set[str] | None  # the data sources (`source_of`) its runs read now; None: no grid, or
                              # it cannot be parsed or expanded here (e.g. a data file moved away)
    run_ids: list[str] | None  # its runs' ids (baselines included), in grid order; None: no grid,
                               # a grid with a search section (its runs depend on the search), or
                               # one that cannot be expanded here
    expand_error: str | None  # why it cannot be parsed or expanded here (the ValueError or
                              # OSError), else None
    baselines: tuple[str, ...] | None  # [baselines] include; None: no grid, or that table (read
                                       # alone when the rest of the grid fails) cannot be read


def read_grid(grid_text: str | None) -> GridInfo:
    """The text of a store's grid.toml ('' or None: the store has none) -> its GridInfo, from
    one parse; a grid that cannot be parsed or expanded gives `expand_error` (messages name
    "grid.toml"), never an exception of either kind."""
    if not grid_text:
        return GridInfo(sources=None, run_ids=None, expand_error=None, baselines=None)
    try:
        grid = parse_grid_text(grid_text, source="grid.toml")
    except (ValueError, OSError) as err:
        return GridInfo(sources=None, run_ids=None, expand_error=str(err),
                        baselines=_baselines_alone(grid_text))
    sources = {source_of(config_to_dict(c)) for c in grid.configs}
    if grid.search is not None:
        return GridInfo(sources=sources, run_ids=None, expand_error=None, baselines=grid.baselines)
    try:
        run_ids = [config_hash(c) for c in with_baselines(expand(grid), include=grid.baselines)]
    except (ValueError, OSError) as err:
        return GridInfo(sources=sources, run_ids=None, expand_error=str(err), baselines=grid.baselines)
    return GridInfo(sources=sources, run_ids=run_ids, expand_error=None, baselines=grid.baselines)


def _baselines_alone(grid_text: str) -> tuple[str, ...] | None:
    """A grid's text whose grid cannot be parsed or expanded -> its [baselines] include, read
    without the other sections; None when the TOML or that table is invalid."""
    try:
        return parse_baselines(tomllib.loads(grid_text).get("baselines", {}))
    except ValueError:  # tomllib.TOMLDecodeError is one
        return None


def runs_on_data(runs: pd.DataFrame, sources: Collection[str]) -> tuple[pd.Series, Counter[str]]:
    """A store's runs table, data sources (`source_of`) -> (bool per run, indexed as `runs`: it is
    on one of `sources`; {each other data source: its number of runs}). Every run counts as on
    `sources` when the table is empty or has no dataset column."""
    if runs.empty or "dataset" not in runs:
        return pd.Series(True, index=runs.index), Counter()
    of_run = pd.Series([source_of(row) for row in runs.to_dict("records")], index=runs.index)
    on = of_run.isin(sources)
    return on, Counter(of_run[~on])
