"""Runs -> variants, configurations and units (what the leaderboard compares).

A *variant* is the loss, plus for combined objectives the weighting method (and,
for `triplet_ce`, the batch variant beside the class CE); a baseline run (its config's
`baseline` key set: `raw`, `untrained`, the classical `lda`, `nca`, `pca_whiten`, see
ablations/baseline_specs.py) is the variant of that name, marked `baseline`, never selected
as the best variant. A
*configuration* is every config key except the unit keys; its *units* are its
(fold, seed) runs, the repeated runs that confidence intervals and paired tests are
taken over. A config key missing from older runs (a store made before the key existed)
reads as its default: a store made before class folds is fold 0 of 1.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ablations.results import (CLASSICAL_BASELINES, DEFAULTS, LEGACY_SPLIT_PROTOCOL, SEED_FREE_BASELINES,
                               keys_not_used)

# runs.parquet columns that are results, not config keys (ARCHITECTURE.md).
RESULT_COLUMNS = ("run_id", "status", "error", "diverged_step", "diverged_component",
                  "wall_time_s", "train_time_s", "baseline_params", "baseline_candidates")
RESULT_PREFIXES = ("val_", "test_")
# Further result columns a store may add are timings in seconds ("cpu_time_s"); no config key
# ends in "_s". A new non-timing result column must be listed in RESULT_COLUMNS.
RESULT_SUFFIXES = ("_s",)
ANNOTATIONS = ("variant", "config_key", "is_baseline")   # added by `annotate`
SEED = "seed"
FOLD = "fold"
# A configuration's repeated runs differ only in these (class_folds is 1 on every fold-0 run).
UNIT_COLUMNS = (SEED, FOLD, "class_folds")
# Baselines whose runs do not depend on the seed: one run per fold, paired with every seed.
SEED_FREE = SEED_FREE_BASELINES
# Losses with several components; their variant name includes the weighting.
COMBINED_LOSSES = ("combined", "triplet_ce")


def config_columns(runs: pd.DataFrame) -> list[str]:
    """runs table -> the config-key columns (every column that is not a result), seed included."""
    return [c for c in runs.columns
            if c not in RESULT_COLUMNS + ANNOTATIONS and not c.startswith(RESULT_PREFIXES)
            and not c.endswith(RESULT_SUFFIXES)]


def varying_columns(runs: pd.DataFrame) -> list[str]:
    """runs table -> config columns (unit columns excluded) taking more than one value."""
    keys = [c for c in config_columns(runs) if c not in UNIT_COLUMNS]
    return [c for c in keys if runs[c].astype(str).nunique(dropna=False) > 1]


def baseline_of(row) -> str:
    """One runs row -> the name of its baseline, "" for a trained run."""
    name = row.get("baseline", "")
    return name if isinstance(name, str) else ""


def variant_label(row: pd.Series) -> str:
    """One runs row -> its variant name, e.g. 'batch_hard', 'combined [uncertainty]' or, for a
    baseline run, the baseline's name ('raw')."""
    if name := baseline_of(row):
        return name
    loss = str(row.get("loss", row.get("variant", "?")))
    if loss not in COMBINED_LOSSES:
        return loss
    base = f"{loss}({row['id_variant']})" if loss == "triplet_ce" and "id_variant" in row else loss
    weighting = row.get("weighting")
    return f"{base} [{weighting}]" if isinstance(weighting, str) and weighting else base


def is_combined(label: str) -> bool:
    """Whether a variant name is a combined objective (several loss components)."""
    return label.split("(")[0].split(" ")[0] in COMBINED_LOSSES


def is_classical(label: str) -> bool:
    """Whether a baseline's variant name is a classical linear metric fitted on the training
    classes (its BaselineSpec says so: lda, nca, pca_whiten)."""
    return label in CLASSICAL_BASELINES


def baseline_choice(runs: pd.DataFrame) -> str:
    """runs of one configuration -> the hyper-parameters its classical baseline chose on
    validation per unit, e.g. 'chosen on validation: n_components=8' or
    'chosen on validation: n_components=8 (2 units), n_components=16 (1 unit)'; '' for others."""
    if "baseline_params" not in runs:
        return ""
    texts = []
    for value in runs["baseline_params"].dropna():
        params = json.loads(value)
        texts.append(", ".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "n_iter"))
    if not texts:
        return ""
    counts = pd.Series(texts).value_counts(sort=False)
    if len(counts) == 1:
        return f"chosen on validation: {counts.index[0]}"
    return "chosen on validation: " + ", ".join(
        f"{text} ({n} unit{'s' if n > 1 else ''})" for text, n in counts.items())


def annotate(runs: pd.DataFrame) -> pd.DataFrame:
    """runs -> a copy with `variant` (name), `config_key` (canonical JSON of the config
    without the unit columns) and `baseline` (bool) columns, and `fold` (0 when absent)."""
    out = runs.copy()
    if out.empty:
        out["variant"] = pd.Series(dtype=str)
        out["config_key"] = pd.Series(dtype=str)
        out["is_baseline"] = pd.Series(dtype=bool)
        return out
    if "split_protocol" not in out.columns or out["split_protocol"].isna().any():
        # stored before the key: every such run's folds were rotated (one split: the same cut)
        folds = out["class_folds"].fillna(1) if "class_folds" in out.columns else 1
        legacy = np.where(np.asarray(folds) > 1, LEGACY_SPLIT_PROTOCOL, DEFAULTS["split_protocol"])
        known = out["split_protocol"] if "split_protocol" in out.columns else pd.Series(
            [None] * len(out), index=out.index)
        out["split_protocol"] = known.where(known.notna(), pd.Series(legacy, index=out.index))
    for key, default in DEFAULTS.items():   # a key added after the run was stored: its default
        if key in out.columns or key in UNIT_COLUMNS:
            out[key] = out[key].fillna(default) if key in out.columns else default
    keys = [c for c in config_columns(runs) if c not in UNIT_COLUMNS]
    out["variant"] = [variant_label(row) for _, row in runs.iterrows()]
    out["is_baseline"] = pd.Series([bool(baseline_of(row)) for _, row in runs.iterrows()], index=out.index, dtype=bool)
    out["config_key"] = [json.dumps({k: _plain(row[k]) for k in keys}, sort_keys=True, default=str)
                         for _, row in runs.iterrows()]
    return out


def unused_keys(row) -> frozenset[str]:
    """One runs row (a mapping of config keys; missing ones read as their default) -> the keys
    that cannot change what it trains, by the rule run ids are made with (ablations/config.py:
    the margin of batch_hard_soft, the training keys of a baseline, ...); empty when the rule
    cannot be evaluated (a user's loss that no longer imports)."""
    cfg = {}
    for key, default in DEFAULTS.items():
        value = row[key] if key in row else default
        cfg[key] = default if value is None or (isinstance(value, float) and np.isnan(value)) \
            else _plain(value)
    try:
        return frozenset(keys_not_used(cfg))
    except Exception:  # noqa: BLE001 - a report must not fail on an unimportable plugin
        return frozenset()


def describe_config(row: pd.Series, columns: list[str]) -> str:
    """One row, the columns to show -> 'margin=0.2, lr=0.001'."""
    return ", ".join(f"{c}={_shown(_plain(row[c]))}" for c in columns
                     if c in row.index) or "(only configuration)"


def _shown(value):
    """A config value as the report shows it: floats to 4 significant digits (a searched
    lr of 0.0016007371962480652 reads 0.001601; the stored value is exact)."""
    return f"{value:.4g}" if isinstance(value, float) else value


def _plain(value):
    """numpy scalars and NaN -> plain JSON-able Python values."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
