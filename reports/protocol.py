"""The report's header (the protocol) and its list of what is missing from the grid."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.leaderboard import SELECT_ON, describe_unit, finished, splits_of, unit_of
from reports.stats import CI_METHOD, HOLM, LOW_POWER_N, PAIRED_TEST
from ablations.results import GridInfo
from reports.variants import FOLD, SEED, SEED_FREE

STATUSES = ("finished", "diverged", "failed")
SPLIT_RULE = ("class-disjoint: classes sorted and cut in order into train / validation / test "
              "(no test class is seen in training; rule and per-dataset split in ablations/data.py)")
FOLD_RULES = {
    "fixed_test": ("; {k} class folds, fixed test classes (split_protocol = fixed_test, as "
                   "Musgrave et al. 2020): the last 30% of the sorted classes are the test classes "
                   "of every fold and never take part in selection; the other classes are cut "
                   "into {k} blocks, fold f validates on block f and trains on the rest"),
    "rotated": ("; {k} class folds, ROTATED (split_protocol = rotated, the protocol of stores "
                "made before fixed test classes): fold f rotates the sorted classes by "
                "round(f * C / {k}) before the cut, so the validation classes of one fold are "
                "test classes of another and selection over folds sees test classes"),
}
BASELINE_RULE = ("raw = the standardised input features, untrained = the encoder at its "
                 "initialisation for each seed (no training step); lda, nca, pca_whiten = "
                 "classical linear metrics (scikit-learn) fitted on the training classes only, "
                 "their number of components chosen on validation MAP@R (shown in the "
                 "leaderboard's config; ablations/classical.py); same split, metrics and "
                 "distance as the runs; selected on validation like the variants, never ranked; "
                 "a grid chooses them with [baselines] include")


def protocol_items(runs: pd.DataFrame, picked: dict) -> list[tuple[str, str]]:
    """annotated runs, picked embeddings -> [(field, text)] for the report header."""
    counts = runs["status"].value_counts() if not runs.empty else pd.Series(dtype=int)
    status = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in STATUSES)
    seeds = sorted(int(s) for s in runs[SEED].dropna().unique()) if SEED in runs else []
    datasets = sorted(str(d) for d in runs["dataset"].dropna().unique()) if "dataset" in runs else []
    folds = int(runs["class_folds"].max()) if "class_folds" in runs and not runs.empty else 1
    n_folds = len(splits_of(runs)) or 1
    protocols = sorted(set(runs.loc[runs["class_folds"] > 1, "split_protocol"])) if (
        folds > 1 and "split_protocol" in runs) else []
    return [
        ("Dataset", ", ".join(datasets) or "unknown (no run stored)"),
        ("Data files", _data_files(runs)),
        ("Class split", SPLIT_RULE + "".join(FOLD_RULES[p].format(k=folds) for p in protocols)
         + ("; THE STORE MIXES BOTH PROTOCOLS: their runs are separate configurations"
            if len(protocols) > 1 else "")
         + (_test_classes(picked) if n_folds == 1 or protocols == ["fixed_test"]
            else "; the test classes differ by fold")),
        ("Baselines", BASELINE_RULE),
        ("Selection rule", f"per variant, among the configurations whose (fold, seed) runs all "
                           f"finished, the one with the highest mean validation MAP@R "
                           f"({SELECT_ON}) over its units; test metrics are never used to select"),
        ("Units", f"{n_folds} fold(s) x {len(seeds)} seed(s) per configuration (seeds "
                  f"{', '.join(map(str, seeds)) or 'none'}); "
                  + (f"the statistical unit is the fold (the mean over its seeds): n = {n_folds}"
                     if n_folds >= 2 else
                     "one class split: the units are the seeds, which measure training "
                     "randomness only, not the choice of classes")
                  + f"; each seed-free baseline ({', '.join(SEED_FREE)}) has one run per fold"),
        ("Runs", f"{len(runs)} stored: {status}"),
        ("Variants", f"{runs['variant'].nunique() if not runs.empty else 0} "
                     f"({finished(runs)['variant'].nunique() if not runs.empty else 0} with a "
                     "finished run), baselines included"),
        ("Confidence intervals", CI_METHOD),
        ("Paired test", PAIRED_TEST + " on test MAP@R against the best variant and against "
                        f"the best baseline; n/a with fewer than 2 matched units; below "
                        f"{LOW_POWER_N} units it has little power"),
        ("Multiple comparisons", HOLM),
    ]


def _test_classes(picked: dict) -> str:
    """'; test classes 7, 8, 9 (533 points, from the stored test embeddings)' or ''."""
    if not picked:
        return ""
    y = next(iter(picked.values()))[-1]
    classes = ", ".join(str(int(c)) for c in np.unique(y))
    return f"; test classes {classes} ({len(y)} points, from the stored test embeddings)"


def gaps(runs: pd.DataFrame, *, configs: pd.DataFrame, describe: dict,
         notes: list[str]) -> list[str]:
    """annotated runs, the configurations table, config_key -> description, extra notes ->
    sentences on what is missing."""
    out = []
    if runs.empty:
        return ["The store holds no run yet: nothing to compare."] + notes
    for row in runs[runs["status"] == "failed"].itertuples():
        out.append(f"Run {row.run_id} ({row.variant}, {describe_unit(unit_of(row._asdict(), row.variant))}) failed: {row.error}")
    for row in runs[runs["status"] == "diverged"].itertuples():
        out.append(f"Run {row.run_id} ({row.variant}, {describe_unit(unit_of(row._asdict(), row.variant))}) diverged at step "
                   f"{row.diverged_step} (component {row.diverged_component}); left out of the "
                   "statistics")
    done = finished(runs)
    for variant in sorted(set(runs["variant"]) - set(done["variant"])):
        out.append(f"Variant {variant} has no finished run: not in the leaderboard")
    for row in configs[~configs["complete"]].itertuples():
        config = describe.get(row.config_key, row.config_key)
        out.append(f"Configuration of {row.variant} ({config}) is not selectable: no finished "
                   f"run for {row.units_missing} ({row.n_finished}/{row.n_units} units; failed, "
                   "diverged or not run)")
    complete = set(configs.loc[configs["complete"], "variant"])
    for variant in sorted(set(done["variant"]) - complete):
        out.append(f"Variant {variant} has no configuration with every (fold, seed) unit "
                   "finished: not in the leaderboard")
    return out + notes


def _data_files(runs: pd.DataFrame) -> str:
    """The data files of file-backed runs with their sha256 fingerprint, or a note when none."""
    files = set()
    for key in ("npz_path", "idx_images", "idx_labels"):
        if key not in runs or "data_fingerprint" not in runs:
            continue
        for path, digest in zip(runs[key], runs["data_fingerprint"]):
            if isinstance(path, str) and path and isinstance(digest, str) and digest:
                files.add(f"{path} (sha256 {digest[:16]}...)")
    return ", ".join(sorted(files)) or "none (built-in datasets)"


def absent_runs(grid: GridInfo, runs: pd.DataFrame) -> list[str]:
    """The store's grid.toml as read (`read_grid`) and its runs -> a sentence on the grid's runs
    that are not stored, or on why they cannot be listed."""
    if grid.expand_error is not None:
        return [f"The store's grid.toml cannot be expanded here ({grid.expand_error}): absent "
                "runs not listed"]
    expected = grid.run_ids
    if expected is None:  # no grid.toml, or a search: the Search section says which variants have not reached their budget
        return []
    stored = set(runs["run_id"]) if not runs.empty else set()
    absent = [rid for rid in expected if rid not in stored]
    if not absent:
        return []
    shown = ", ".join(absent[:20]) + (f" and {len(absent) - 20} more" if len(absent) > 20 else "")
    return [f"{len(absent)} of the {len(expected)} runs of the store's grid.toml are not in the "
            f"store (never run, or deleted): {shown}; run the same grid again to run them"]
