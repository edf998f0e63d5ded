"""The read side of ablations that reports use, and the only module of ablations they import.

Reports read a results store (`open_store`: a `ResultsStore`, migrated first when it is of an
older format), the schema of run configs (defaults, the data keys, the baseline names, the rule
that names the keys a config does not use) and the run ids a store's grid.toml expects. Training, data loading and executors stay behind this module.
"""

from __future__ import annotations

from typing import Any

from ablations.baselines import with_baselines
from ablations.config import (BASELINES, CLASSICAL_BASELINES, DATA_KEYS, DEFAULTS, LEGACY_SPLIT_PROTOCOL,
                              SEED_FREE_BASELINES, _keys_to_reset, config_hash, config_to_dict)
from ablations.data import SOURCE_KEYS, source_of
from ablations.grid import expand, parse_baselines, parse_grid_text
from ablations.migrate import open_store
from ablations.store import is_store
from ablations.store import ResultsStore

__all__ = ["BASELINES", "CLASSICAL_BASELINES", "DATA_KEYS", "DEFAULTS", "LEGACY_SPLIT_PROTOCOL",
           "SEED_FREE_BASELINES", "SOURCE_KEYS", "ResultsStore", "expected_run_ids", "grid_data_sources",
           "is_store", "keys_not_used", "open_store", "parse_baselines", "source_of"]


def keys_not_used(config: dict[str, Any]) -> list[str]:
    """A full config dict (every key of DEFAULTS) -> the keys that cannot change what it trains."""
    return _keys_to_reset(config)


def expected_run_ids(grid_text: str, *, source: str = "grid.toml") -> list[str] | None:
    """The text of a grid file -> the run ids of its runs (baselines included), in grid order;
    None for a grid with a search section (its runs depend on the search). Raises ValueError or
    OSError when the grid cannot be parsed or expanded here."""
    grid = parse_grid_text(grid_text, source=source)
    if grid.search is not None:
        return None
    return [config_hash(c) for c in with_baselines(expand(grid), include=grid.baselines)]


def grid_data_sources(grid_text: str) -> set[str] | None:
    """The text of a grid file -> the data sources (`source_of`) its runs read now; None when
    it cannot be parsed or expanded here (e.g. a data file moved away)."""
    try:
        grid = parse_grid_text(grid_text, source="grid.toml")
    except (ValueError, OSError):
        return None
    return {source_of(config_to_dict(c)) for c in grid.configs}
