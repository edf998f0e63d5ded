"""Model selection on validation and the leaderboard of test metrics over seeds.

Selection rule: for each variant, the configuration with the highest mean
validation MAP@R over its finished seeds. Test metrics are never used to select;
they are reported for the selected configuration as mean and t-interval over the
seeds that finished, with a paired test against the best variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports.stats import mean_ci, paired_test
from reports.variants import SEED, describe_config, varying_columns

SELECT_ON = "val_map_at_r"
TEST_METRICS = ("test_precision_at_1", "test_r_precision", "test_map_at_r")
PAIRED_ON = "test_map_at_r"
VARIANT_KEYS = ("loss", "weighting", "id_variant")


@dataclass(frozen=True)
class Selection:
    """Per-configuration summary, the leaderboard, and the runs of each selected configuration."""

    configs: pd.DataFrame          # one row per (variant, configuration)
    leaderboard: pd.DataFrame      # one row per variant with a finished run, best first
    selected_runs: dict            # variant -> runs rows (every status) of its selected config


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """annotated runs -> the finished runs with a validation metric."""
    if runs.empty:
        return runs
    ok = (runs["status"] == "finished") & runs[SELECT_ON].notna()
    return runs[ok]


def config_table(runs: pd.DataFrame, *, confidence: float) -> pd.DataFrame:
    """annotated runs -> one row per (variant, configuration): seeds, val MAP@R mean and CI."""
    shown = [c for c in varying_columns(runs) if c not in VARIANT_KEYS] if not runs.empty else []
    rows = []
    for variant, runs_of_variant in runs.groupby("variant", sort=True):
        # describe each configuration by the axes that vary within its variant
        own = [c for c in varying_columns(runs_of_variant) if c not in VARIANT_KEYS]
        for key, group in runs_of_variant.groupby("config_key", sort=True):
            rows.append(_config_row(variant, key, group, shown, own, confidence=confidence))
    columns = ["variant", "config_key", "config", *shown, "n_runs", "n_finished",
               "seeds_finished", f"{SELECT_ON}_mean", f"{SELECT_ON}_low", f"{SELECT_ON}_high"]
    return pd.DataFrame(rows, columns=columns)


def _config_row(variant: str, key: str, group: pd.DataFrame, shown: list[str], own: list[str], *,
                confidence: float) -> dict:
    """The runs of one configuration -> its row of the configurations table."""
    done = finished(group)
    ci = mean_ci(done[SELECT_ON], confidence=confidence)
    first = group.iloc[0]
    return {"variant": variant, "config_key": key, "config": describe_config(first, own),
            **{c: first[c] for c in shown},
            "n_runs": len(group), "n_finished": len(done),
            "seeds_finished": " ".join(str(s) for s in sorted(done[SEED].tolist())),
            f"{SELECT_ON}_mean": ci.mean, f"{SELECT_ON}_low": ci.low, f"{SELECT_ON}_high": ci.high}


def select(runs: pd.DataFrame, *, confidence: float) -> Selection:
    """annotated runs -> Selection (best configuration per variant on validation MAP@R)."""
    configs = config_table(runs, confidence=confidence)
    usable = configs[configs["n_finished"] > 0]
    # Highest validation mean; ties broken by the configuration's canonical key (stable).
    best = (usable.sort_values(["variant", f"{SELECT_ON}_mean", "config_key"],
                               ascending=[True, False, True])
            .groupby("variant", sort=False).head(1))
    selected_runs = {row.variant: runs[(runs["variant"] == row.variant)
                                       & (runs["config_key"] == row.config_key)]
                     for row in best.itertuples()}
    board = _leaderboard(best, selected_runs, confidence=confidence)
    return Selection(configs=configs, leaderboard=board, selected_runs=selected_runs)


def _leaderboard(best: pd.DataFrame, selected_runs: dict, *, confidence: float) -> pd.DataFrame:
    """selected configurations -> leaderboard rows, best validation first, with test CIs."""
    best = best.sort_values([f"{SELECT_ON}_mean", "variant"], ascending=[False, True])
    by_seed = {v: _metric_by_seed(finished(r), PAIRED_ON) for v, r in selected_runs.items()}
    rows = []
    for rank, row in enumerate(best.itertuples(), start=1):
        done = finished(selected_runs[row.variant])
        out = {"rank": rank, "variant": row.variant, "config": row.config,
               "seeds_finished": f"{row.n_finished}/{row.n_runs}",
               "val_map_at_r_mean": getattr(row, f"{SELECT_ON}_mean")}
        for metric in TEST_METRICS:
            ci = mean_ci(done[metric], confidence=confidence)
            out.update({f"{metric}_mean": ci.mean, f"{metric}_low": ci.low,
                        f"{metric}_high": ci.high, f"{metric}_n": ci.n})
        if rank == 1:
            reference = row.variant
            out.update({"paired_n": len(by_seed[reference]), "paired_diff": 0.0,
                        "paired_p": np.nan, "paired_note": "reference (best on validation)"})
        else:
            test = paired_test(by_seed[row.variant], by_seed[reference])
            out.update({"paired_n": test.n, "paired_diff": test.mean_diff,
                        "paired_p": test.p_value, "paired_note": test.note})
        rows.append(out)
    columns = ["rank", "variant", "config", "seeds_finished", "val_map_at_r_mean",
               *[f"{m}_{s}" for m in TEST_METRICS for s in ("mean", "low", "high", "n")],
               "paired_n", "paired_diff", "paired_p", "paired_note"]
    return pd.DataFrame(rows, columns=columns)


def _metric_by_seed(runs: pd.DataFrame, metric: str) -> dict:
    """finished runs of one configuration -> seed -> metric."""
    return {int(s): float(m) for s, m in zip(runs[SEED], runs[metric])}
