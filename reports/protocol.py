"""The report's header (the protocol) and its list of what is missing from the grid."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.leaderboard import SELECT_ON, finished
from reports.stats import CI_METHOD, PAIRED_TEST
from reports.variants import SEED

STATUSES = ("finished", "diverged", "failed")
SPLIT_RULE = ("class-disjoint: classes sorted and cut in order into train / validation / test "
              "(no test class is seen in training; rule and per-dataset split in ablations/data.py)")


def protocol_items(runs: pd.DataFrame, picked: dict) -> list[tuple[str, str]]:
    """annotated runs, picked embeddings -> [(field, text)] for the report header."""
    counts = runs["status"].value_counts() if not runs.empty else pd.Series(dtype=int)
    status = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in STATUSES)
    seeds = sorted(int(s) for s in runs[SEED].dropna().unique()) if SEED in runs else []
    datasets = sorted(str(d) for d in runs["dataset"].dropna().unique()) if "dataset" in runs else []
    return [
        ("Dataset", ", ".join(datasets) or "unknown (no run stored)"),
        ("Data files", ", ".join(sorted({f"{p} (sha256 {f[:16]}...)" for p, f in zip(runs.get("npz_path", ()), runs.get("data_fingerprint", ())) if isinstance(f, str) and f})) or "none (built-in datasets)"),
        ("Class split", SPLIT_RULE + _test_classes(picked)),
        ("Selection rule", f"per variant, the configuration with the highest mean validation MAP@R "
                           f"({SELECT_ON}) over its finished seeds; test metrics are never used to "
                           "select"),
        ("Seeds", ", ".join(map(str, seeds)) or "none"),
        ("Runs", f"{len(runs)} stored: {status}"),
        ("Variants", f"{runs['variant'].nunique() if not runs.empty else 0} "
                     f"({finished(runs)['variant'].nunique() if not runs.empty else 0} with a "
                     "finished run)"),
        ("Confidence intervals", CI_METHOD + ", over the seeds that finished"),
        ("Paired test", PAIRED_TEST + " on test MAP@R against the best variant; n/a with fewer "
                        "than 2 common seeds"),
    ]


def _test_classes(picked: dict) -> str:
    """'; test classes 7, 8, 9 (533 points, from the stored test embeddings)' or ''."""
    if not picked:
        return ""
    _, _, _, y = next(iter(picked.values()))
    classes = ", ".join(str(int(c)) for c in np.unique(y))
    return f"; test classes {classes} ({len(y)} points, from the stored test embeddings)"


def gaps(runs: pd.DataFrame, *, describe: dict, notes: list[str]) -> list[str]:
    """annotated runs, config_key -> description, extra notes -> sentences on what is missing."""
    out = []
    if runs.empty:
        return ["The store holds no run yet: nothing to compare."] + notes
    for row in runs[runs["status"] == "failed"].itertuples():
        out.append(f"Run {row.run_id} ({row.variant}, seed {getattr(row, SEED)}) failed: {row.error}")
    for row in runs[runs["status"] == "diverged"].itertuples():
        out.append(f"Run {row.run_id} ({row.variant}, seed {getattr(row, SEED)}) diverged at step "
                   f"{row.diverged_step} (component {row.diverged_component}); left out of the "
                   "statistics")
    done = finished(runs)
    for variant in sorted(set(runs["variant"]) - set(done["variant"])):
        out.append(f"Variant {variant} has no finished run: not in the leaderboard")
    all_seeds = set(runs[SEED].dropna())
    for key, group in runs.groupby("config_key"):
        absent = sorted(all_seeds - set(group[SEED]))
        if absent:
            out.append(f"Configuration of {group['variant'].iloc[0]} ({describe.get(key, key)}) has no stored "
                       f"run for seed(s) {', '.join(map(str, absent))} (grid partial?)")
    return out + notes

