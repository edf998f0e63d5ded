"""Runs -> variants and configurations (the units the leaderboard compares).

A *variant* is the loss, plus for combined objectives the weighting method (and,
for `triplet_ce`, the batch variant beside the class CE). A *configuration* is
every config key except the seed: its seeds are the repeated runs that the
confidence intervals are taken over.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

# runs.parquet columns that are results, not config keys (ARCHITECTURE.md).
RESULT_COLUMNS = ("run_id", "status", "error", "diverged_step", "diverged_component",
                  "wall_time_s", "train_time_s")
RESULT_PREFIXES = ("val_", "test_")
# Further result columns a store may add are timings in seconds ("cpu_time_s"); no config key
# ends in "_s". A new non-timing result column must be listed in RESULT_COLUMNS.
RESULT_SUFFIXES = ("_s",)
ANNOTATIONS = ("variant", "config_key")   # added by `annotate`
SEED = "seed"
# Losses with several components; their variant name includes the weighting.
COMBINED_LOSSES = ("combined", "triplet_ce")


def config_columns(runs: pd.DataFrame) -> list[str]:
    """runs table -> the config-key columns (every column that is not a result), seed included."""
    return [c for c in runs.columns
            if c not in RESULT_COLUMNS + ANNOTATIONS and not c.startswith(RESULT_PREFIXES)
            and not c.endswith(RESULT_SUFFIXES)]


def varying_columns(runs: pd.DataFrame) -> list[str]:
    """runs table -> config columns (seed excluded) taking more than one value in the grid."""
    keys = [c for c in config_columns(runs) if c != SEED]
    return [c for c in keys if runs[c].astype(str).nunique(dropna=False) > 1]


def variant_label(row: pd.Series) -> str:
    """One runs row -> its variant name, e.g. 'batch_hard' or 'combined [uncertainty]'."""
    loss = str(row.get("loss", row.get("variant", "?")))
    if loss not in COMBINED_LOSSES:
        return loss
    base = f"{loss}({row['id_variant']})" if loss == "triplet_ce" and "id_variant" in row else loss
    weighting = row.get("weighting")
    return f"{base} [{weighting}]" if isinstance(weighting, str) and weighting else base


def is_combined(label: str) -> bool:
    """Whether a variant name is a combined objective (several loss components)."""
    return label.split("(")[0].split(" ")[0] in COMBINED_LOSSES


def annotate(runs: pd.DataFrame) -> pd.DataFrame:
    """runs -> a copy with `variant` (name) and `config_key` (canonical JSON of the config
    without the seed) columns."""
    out = runs.copy()
    if out.empty:
        out["variant"] = pd.Series(dtype=str)
        out["config_key"] = pd.Series(dtype=str)
        return out
    keys = [c for c in config_columns(runs) if c != SEED]
    out["variant"] = [variant_label(row) for _, row in runs.iterrows()]
    out["config_key"] = [json.dumps({k: _plain(row[k]) for k in keys}, sort_keys=True, default=str)
                         for _, row in runs.iterrows()]
    return out


def describe_config(row: pd.Series, columns: list[str]) -> str:
    """One row, the columns to show -> 'margin=0.2, lr=0.001'."""
    return ", ".join(f"{c}={_plain(row[c])}" for c in columns if c in row.index) or "(only configuration)"


def _plain(value):
    """numpy scalars and NaN -> plain JSON-able Python values."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
