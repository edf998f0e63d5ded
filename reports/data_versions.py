"""Which of a store's runs are on the data its grid file reads now.

A store can hold runs on several data sources: runs of an earlier version of a data
file (the file changed, so its sha256, the run's `data_fingerprint`, changed and new
runs were made beside the old ones), or runs of another dataset added with --extend.
Pooling them would compare variants trained on different data, so the report keeps
the runs on the data of the store's grid.toml, as it reads now, and lists the others
once with why. The runs stay in the store; a later `tripletlab run` never retries an
old version's failed run (its run id names the old data), it runs the cell on the
current data instead.
"""

from __future__ import annotations

import pandas as pd

from ablations.results import SOURCE_KEYS, runs_on_data, source_of

SHOWN_IDS = 20  # run ids listed in a sentence before "and N more"


def data_sources(runs: pd.DataFrame) -> list[str]:
    """The distinct data sources of `runs`, sorted."""
    if runs.empty:
        return []
    keys = [k for k in SOURCE_KEYS if k in runs]
    return sorted({source_of(dict(zip(keys, values)))
                   for values in runs[keys].drop_duplicates().itertuples(index=False)})


def split_by_data(runs: pd.DataFrame, current: set[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """runs, the data sources the store's grid.toml reads now (`GridInfo.sources`) -> (the runs
    on that data, sentences naming the others once, with why). Every run is kept when the
    grid's data cannot be read (`current` None: no grid, or it cannot be expanded here, e.g. a
    data file moved away: absent_runs says so)."""
    if current is None:
        return runs, []  # mixed_data_warning says so when the runs mix data
    keep, other = runs_on_data(runs, current)
    if keep.all():
        return runs, []
    old = runs[~keep]
    names = {_name_of(s) for s in current}
    parts = []
    for source, n in sorted(other.items()):
        reason = ("an earlier version of the same data: it has changed since"
                  if _name_of(source) in names else
                  "not the data of the store's grid.toml (e.g. runs of another grid added "
                  "with --extend)")
        parts.append(f"{n} on {source}: {reason}")
    ids = sorted(old["run_id"])
    shown = ", ".join(ids[:SHOWN_IDS]) + (f" and {len(ids) - SHOWN_IDS} more"
                                          if len(ids) > SHOWN_IDS else "")
    none_left = "" if keep.any() else (" No run is on the current data yet: run the grid again "
                                       "to train on it.")
    return runs[keep], [
        f"{len(old)} of the store's {len(runs)} runs are on other data than the store's grid "
        f"reads now ({'; '.join(sorted(current))}) and are left out of the leaderboard, the "
        f"verdict and the figures ({'; '.join(parts)}); they stay in the store: {shown}; "
        f"compare datasets or data versions in separate stores (one --out each).{none_left}"]


def _name_of(source: str) -> str:
    """A data source -> its dataset and path without the fingerprint ("npz d.npz")."""
    return source.split(" (sha256 ")[0]


def mixed_data_warning(runs: pd.DataFrame) -> str | None:
    """A warning when the runs pooled in one leaderboard come from several datasets or data
    versions (a grid with a dataset axis, or a store whose grid cannot be read), else None."""
    sources = data_sources(runs)
    if len(sources) < 2:
        return None
    return (f"this store mixes runs on {len(sources)} different data sources ("
            + "; ".join(sources) + "): the leaderboard and the verdict pool them as one; "
            "compare them in separate stores (one --out per dataset or data version).")
