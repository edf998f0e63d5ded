"""Model selection on validation and the leaderboard of test metrics over independent units.

Runs: a configuration's repeated runs, one per (fold, seed); the grid's runs are
every fold x seed seen in the store (folds only for the seed-free baselines).
Statistical units: seeds are nested in folds (the runs of one fold share its training
and validation classes), so with two or more class folds the unit is the *fold*: the
mean over the seeds of that fold, n = the number of folds. With a single class split
the units are the seeds (they measure training randomness only; the report says so).
Selection rule: a configuration is selectable only when all its runs finished;
for each variant, the selectable configuration with the highest mean validation
MAP@R over its units. Test metrics are never used to select; they are reported for
the selected configuration as mean and t-interval over its units. The baselines
are selected by the same rule and listed as marked rows below the ranked variants;
the *best baseline* is the one best on validation.

Comparisons, paired over matched units on test MAP@R (by seed on a single split, a
seed-free baseline's run is matched with every seed of its fold):
- every row against the best variant (rank 1): t-test, Holm-adjusted over the
  family of the other trained variants (baselines are outside that family);
- every row against the best baseline: the mean difference, its t-interval and p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports.stats import MeanCI, PairedResult, holm, mean_ci, paired_test
from reports.variants import (FOLD, SEED, SEED_FREE, baseline_choice, describe_config,
                              varying_columns)

SELECT_ON = "val_map_at_r"
TEST_METRICS = ("test_precision_at_1", "test_r_precision", "test_map_at_r", "test_recall_at_1",
                "test_recall_at_2", "test_recall_at_4", "test_recall_at_8")
PAIRED_ON = "test_map_at_r"
VARIANT_KEYS = ("loss", "baseline", "weighting", "id_variant")
BOARD_COLUMNS = (
    ["rank", "kind", "variant", "config", "units_finished",
     *[f"{SELECT_ON}_{s}" for s in ("mean", "low", "high", "n")],
     *[f"{m}_{s}" for m in TEST_METRICS for s in ("mean", "low", "high", "n")]]
    + [f"paired_{s}" for s in ("n", "diff", "low", "high", "p", "p_holm", "note")]
    + [f"vs_baseline_{s}" for s in ("n", "diff", "low", "high", "p", "note")])


@dataclass(frozen=True)
class Selection:
    """Per-configuration summary, the leaderboard, and the runs of each selected configuration."""

    configs: pd.DataFrame          # one row per (variant, configuration)
    leaderboard: pd.DataFrame      # ranked variants (best first), then the baselines
    selected_runs: dict            # variant -> runs rows (every status) of its selected config
    by_fold: bool = False          # statistical units: folds (seed means) if True, else seeds

    @property
    def unit_name(self) -> str:
        """'fold' or 'seed': what one unit (one value of n) is."""
        return "fold" if self.by_fold else "seed"


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """annotated runs -> the finished runs with a validation metric."""
    if runs.empty:
        return runs
    ok = (runs["status"] == "finished") & runs[SELECT_ON].notna()
    return runs[ok]


def unit_of(row, variant: str) -> tuple:
    """One runs row -> its unit (class_folds, fold, seed); seed None for a seed-free baseline."""
    seed = None if variant in SEED_FREE else int(row[SEED])
    return (int(row["class_folds"]), int(row[FOLD]), seed)


def describe_unit(unit: tuple) -> str:
    """(class_folds, fold, seed) -> 'fold 1 of 4, seed 2' / 'seed 2' / 'fold 0'."""
    k, fold, seed = unit
    parts = [f"fold {fold}" + (f" of {k}" if k > 1 else "")] if (k > 1 or fold) else []
    parts += [f"seed {seed}"] if seed is not None else ([] if parts else ["fold 0"])
    return ", ".join(parts)


def grid_units(runs: pd.DataFrame) -> dict[bool, set]:
    """annotated runs -> {seed_free: the units every configuration must have finished}."""
    if runs.empty:
        return {False: set(), True: set()}
    splits = {(int(k), int(f)) for k, f in zip(runs["class_folds"], runs[FOLD])}
    seeded = runs[~runs["variant"].isin(list(SEED_FREE))]
    seeds = {int(s) for s in (seeded if not seeded.empty else runs)[SEED].dropna()}
    return {False: {(k, f, s) for k, f in splits for s in seeds},
            True: {(k, f, None) for k, f in splits}}


def splits_of(runs: pd.DataFrame) -> set:
    """annotated runs -> the distinct class splits (class_folds, fold) among them."""
    if runs.empty:
        return set()
    return {(int(k), int(f)) for k, f in zip(runs["class_folds"], runs[FOLD])}


def fold_units(values: dict, *, by_fold: bool) -> dict:
    """run unit (k, fold, seed) -> value  ->  statistical unit -> value: with by_fold the mean
    over the seeds of each fold, keyed (k, fold, None); otherwise unchanged."""
    if not by_fold:
        return dict(values)
    groups: dict[tuple, list[float]] = {}
    for (k, fold, _), value in values.items():
        groups.setdefault((k, fold, None), []).append(value)
    return {unit: float(np.mean(v)) for unit, v in groups.items()}


def unit_ci(runs: pd.DataFrame, variant: str, metric: str, *, by_fold: bool,
            confidence: float) -> MeanCI:
    """finished runs of one configuration -> mean and t-interval of `metric` over its units."""
    if runs.empty or metric not in runs:
        return mean_ci([], confidence=confidence)
    values = fold_units(unit_values(runs[runs[metric].notna()], variant, metric), by_fold=by_fold)
    return mean_ci(list(values.values()), confidence=confidence)


def config_table(runs: pd.DataFrame, *, confidence: float, by_fold: bool | None = None) -> pd.DataFrame:
    """annotated runs -> one row per (variant, configuration): units finished, val MAP@R CI."""
    shown = [c for c in varying_columns(runs) if c not in VARIANT_KEYS] if not runs.empty else []
    units = grid_units(runs)
    if by_fold is None:  # the statistical units of these runs (see the module docstring)
        by_fold = len(splits_of(runs)) >= 2
    rows = []
    for variant, runs_of_variant in runs.groupby("variant", sort=True):
        # describe each configuration by the axes that vary within its variant
        own = [c for c in varying_columns(runs_of_variant) if c not in VARIANT_KEYS]
        for key, group in runs_of_variant.groupby("config_key", sort=True):
            rows.append(_config_row(variant, key, group, shown, own, by_fold=by_fold,
                                    expected=units[variant in SEED_FREE], confidence=confidence))
    columns = ["variant", "config_key", "config", "is_baseline", *shown, "n_runs", "n_finished",
               "n_units", "complete", "units_missing", f"{SELECT_ON}_mean", f"{SELECT_ON}_low",
               f"{SELECT_ON}_high"]
    return pd.DataFrame(rows, columns=columns).astype({"is_baseline": bool, "complete": bool})


def _config_row(variant: str, key: str, group: pd.DataFrame, shown: list[str], own: list[str], *,
                by_fold: bool, expected: set, confidence: float) -> dict:
    """The runs of one configuration -> its row of the configurations table."""
    done = finished(group)
    ci = unit_ci(done, variant, SELECT_ON, by_fold=by_fold, confidence=confidence)
    have = {unit_of(row, variant) for _, row in done.iterrows()}
    absent = sorted(expected - have, key=repr)
    first = group.iloc[0]
    config, choice = describe_config(first, own), baseline_choice(done)  # a classical baseline's
    if choice:
        config = choice if config == "(only configuration)" else f"{config}; {choice}"
    return {"variant": variant, "config_key": key, "config": config,
            "is_baseline": bool(first["is_baseline"]), **{c: first[c] for c in shown},
            "n_runs": len(group), "n_finished": len(done), "n_units": len(expected),
            "complete": bool(have) and not absent,
            "units_missing": "; ".join(describe_unit(u) for u in absent),
            f"{SELECT_ON}_mean": ci.mean, f"{SELECT_ON}_low": ci.low, f"{SELECT_ON}_high": ci.high}


def select(runs: pd.DataFrame, *, confidence: float) -> Selection:
    """annotated runs -> Selection (best complete configuration per variant on validation)."""
    by_fold = len(splits_of(runs)) >= 2
    configs = config_table(runs, confidence=confidence, by_fold=by_fold)
    usable = configs[configs["complete"]]
    # Highest validation mean; ties broken by the configuration's canonical key (stable).
    best = (usable.sort_values(["variant", f"{SELECT_ON}_mean", "config_key"],
                               ascending=[True, False, True])
            .groupby("variant", sort=False).head(1))
    selected_runs = {row.variant: runs[(runs["variant"] == row.variant)
                                       & (runs["config_key"] == row.config_key)]
                     for row in best.itertuples()}
    board = _leaderboard(best, selected_runs, by_fold=by_fold, confidence=confidence)
    return Selection(configs=configs, leaderboard=board, selected_runs=selected_runs,
                     by_fold=by_fold)


def unit_values(runs: pd.DataFrame, variant: str, metric: str) -> dict:
    """finished runs of one configuration -> unit -> metric."""
    return {unit_of(row, variant): float(row[metric]) for _, row in runs.iterrows()}


def matched(a: dict, b: dict) -> tuple[dict, dict]:
    """unit -> value dicts -> the same with each seed-free unit (seed None) repeated for every
    seed the other side has on that fold, so a `raw` run pairs with each seed of its fold."""
    def spread(x: dict, other: dict) -> dict:
        out = dict(x)
        for (k, fold, seed), value in x.items():
            if seed is None:
                out.update({u: value for u in other if u[:2] == (k, fold) and u[2] is not None})
        return out
    return spread(a, b), spread(b, a)


def compare(a: dict, b: dict, *, confidence: float) -> PairedResult:
    """unit -> value of two configurations -> paired test of a - b over matched units."""
    return paired_test(*matched(a, b), confidence=confidence)


def _leaderboard(best: pd.DataFrame, selected_runs: dict, *, by_fold: bool,
                 confidence: float) -> pd.DataFrame:
    """selected configurations -> ranked variants (best validation first), then the baselines."""
    order = [f"{SELECT_ON}_mean", "variant"]
    trained = best[~best["is_baseline"]].sort_values(order, ascending=[False, True])
    bases = best[best["is_baseline"]].sort_values(order, ascending=[False, True])
    values = {v: fold_units(unit_values(finished(r), v, PAIRED_ON), by_fold=by_fold)
              for v, r in selected_runs.items()}
    reference = trained["variant"].iloc[0] if not trained.empty else None
    best_base = bases["variant"].iloc[0] if not bases.empty else None
    rows = []
    for rank, row in [*enumerate(trained.itertuples(), start=1),
                      *((math.nan, r) for r in bases.itertuples())]:
        out = _board_row(row, rank, finished(selected_runs[row.variant]), by_fold=by_fold,
                         confidence=confidence)
        out.update(_versus("paired", row.variant, reference, values, confidence=confidence,
                           same="reference (best on validation)"))
        out.update(_versus("vs_baseline", row.variant, best_base, values, confidence=confidence,
                           same="reference (best baseline on validation)"))
        rows.append(out)
    board = pd.DataFrame(rows, columns=BOARD_COLUMNS)
    family = (board["kind"] == "variant") & (board["variant"] != reference)
    board["paired_p_holm"] = np.nan
    board.loc[family, "paired_p_holm"] = holm(board.loc[family, "paired_p"].to_numpy())
    return board


def _board_row(row, rank, done: pd.DataFrame, *, by_fold: bool, confidence: float) -> dict:
    """One selected configuration -> its leaderboard cells (validation and test CIs over units)."""
    val = unit_ci(done, row.variant, SELECT_ON, by_fold=by_fold, confidence=confidence)
    out = {"rank": rank, "kind": "baseline" if row.is_baseline else "variant",
           "variant": row.variant, "config": row.config,
           "units_finished": f"{row.n_finished}/{row.n_units}",
           f"{SELECT_ON}_mean": val.mean, f"{SELECT_ON}_low": val.low,
           f"{SELECT_ON}_high": val.high, f"{SELECT_ON}_n": val.n}
    for metric in TEST_METRICS:
        ci = unit_ci(done, row.variant, metric, by_fold=by_fold, confidence=confidence)
        out.update({f"{metric}_mean": ci.mean, f"{metric}_low": ci.low,
                    f"{metric}_high": ci.high, f"{metric}_n": ci.n})
    return out


def _versus(prefix: str, variant: str, reference: str | None, values: dict, *,
            confidence: float, same: str) -> dict:
    """Cells `<prefix>_*`: the paired comparison variant - reference on test MAP@R."""
    if reference is None:
        return {f"{prefix}_n": 0, f"{prefix}_diff": math.nan, f"{prefix}_low": math.nan,
                f"{prefix}_high": math.nan, f"{prefix}_p": math.nan, f"{prefix}_note": "n/a"}
    if variant == reference:
        n = len(values[variant])
        return {f"{prefix}_n": n, f"{prefix}_diff": 0.0, f"{prefix}_low": math.nan,
                f"{prefix}_high": math.nan, f"{prefix}_p": math.nan, f"{prefix}_note": same}
    test = compare(values[variant], values[reference], confidence=confidence)
    return {f"{prefix}_n": test.n, f"{prefix}_diff": test.mean_diff, f"{prefix}_low": test.low,
            f"{prefix}_high": test.high, f"{prefix}_p": test.p_value, f"{prefix}_note": test.note}
