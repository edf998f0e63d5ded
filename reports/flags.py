"""Collapse and under-training, named: flags on runs and on the selected configurations.

Reads only the store's tables (runs, steps, epochs) and test embeddings. A finished
run is flagged

- `collapse` when its training monitors show it over the last TAIL_FRACTION of its
  steps (mean active_fraction and violation_rate both >= COLLAPSE_SHARE, and the
  triplet loss within MARGIN_RTOL of the margin: every triplet violates it with
  d_ap ~ d_an, the signature of embeddings that stopped separating anything), or when
  its test embeddings have near-zero spread (RMS distance to their centroid <=
  SPREAD_RATIO x their RMS norm: the points sit on one spot, wherever it is);
- `still_rising` when its validation MAP@R at the last evaluation exceeds the previous
  evaluation's by more than RISE_TOLERANCE: training stopped while it still improved.

A selected configuration is flagged `collapse` when any of its units collapsed (one
collapsed unit is a failure of the recipe, not noise), and `still_rising` when the mean
over its units of (last - previous validation MAP@R) exceeds RISE_TOLERANCE (the mean
validation curve of the figure still rises; a single unit's step is noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

TAIL_FRACTION = 0.2     # the last part of training the monitors are averaged over (share of steps)
COLLAPSE_SHARE = 0.9    # active_fraction and violation_rate at least this: (almost) every item violates
MARGIN_RTOL = 0.1       # |mean loss - mean margin| <= MARGIN_RTOL * margin: the loss is stuck at the margin
SPREAD_RATIO = 0.01     # RMS distance to the centroid <= this x RMS norm: near-zero spread
RISE_TOLERANCE = 0.005  # last - previous validation MAP@R above this: still rising (absolute MAP@R)
FLAG_COLUMNS = ["run_id", "flag", "evidence", "rise"]


def monitor_collapse(steps: pd.DataFrame) -> str | None:
    """One run's steps rows -> the evidence of a collapse in its monitors over the tail, or None."""
    needed = {"step", "active_fraction", "violation_rate", "margin"}
    loss = "loss_triplet" if "loss_triplet" in steps else "loss"
    if steps.empty or not needed <= set(steps.columns) or loss not in steps:
        return None
    rows = steps.sort_values("step")
    tail = rows.iloc[-max(1, math.ceil(TAIL_FRACTION * len(rows))):]
    active, violation = tail["active_fraction"].mean(), tail["violation_rate"].mean()
    value, margin = tail[loss].mean(), tail["margin"].mean()
    if not all(np.isfinite([active, violation, value, margin])) or margin <= 0:
        return None
    if active >= COLLAPSE_SHARE and violation >= COLLAPSE_SHARE and \
            abs(value - margin) <= MARGIN_RTOL * margin:
        return (f"over the last {len(tail)} of {len(rows)} steps active_fraction {active:.2f}, "
                f"violation_rate {violation:.2f}, {loss} {value:.3f} at margin {margin:.3f}")
    return None


def spread_collapse(x: np.ndarray) -> str | None:
    """Test embeddings (N, E) -> the evidence of near-zero spread, or None."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
        return None
    spread = math.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean())
    scale = math.sqrt((x ** 2).sum(axis=1).mean())
    if spread <= SPREAD_RATIO * scale:
        return (f"test embeddings of near-zero spread: RMS distance to their centroid "
                f"{spread:.3g}, RMS norm {scale:.3g}")
    return None


def rise(epochs: pd.DataFrame) -> tuple[float, int, int] | None:
    """One run's epochs rows -> (last - previous val MAP@R, previous epoch, last epoch), or None
    with fewer than two finite evaluations."""
    if epochs.empty or "val_map_at_r" not in epochs:
        return None
    rows = epochs.dropna(subset=["val_map_at_r"]).sort_values("epoch")
    if len(rows) < 2:
        return None
    prev, last = rows.iloc[-2], rows.iloc[-1]
    return float(last["val_map_at_r"] - prev["val_map_at_r"]), int(prev["epoch"]), int(last["epoch"])


def run_flags(runs: pd.DataFrame, steps: pd.DataFrame, epochs: pd.DataFrame,
              embeddings: Callable[[str], tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """runs, steps, epochs tables and the test-embedding reader -> one row per flag of a finished
    run: run_id, flag ("collapse" | "still_rising"), evidence (numbers), rise (NaN for collapse)."""
    rows = []
    done = runs[runs["status"] == "finished"]["run_id"] if not runs.empty else []
    step_groups = dict(tuple(steps.groupby("run_id"))) if "run_id" in steps else {}
    epoch_groups = dict(tuple(epochs.groupby("run_id"))) if "run_id" in epochs else {}
    for run_id in done:
        evidence = monitor_collapse(step_groups.get(run_id, pd.DataFrame()))
        if evidence is None:
            try:
                evidence = spread_collapse(embeddings(run_id)[0])
            except ValueError:   # no stored embeddings
                evidence = None
        if evidence is not None:
            rows.append({"run_id": run_id, "flag": "collapse", "evidence": evidence,
                         "rise": math.nan})
        up = rise(epoch_groups.get(run_id, pd.DataFrame()))
        if up is not None and up[0] > RISE_TOLERANCE:
            rows.append({"run_id": run_id, "flag": "still_rising", "rise": up[0],
                         "evidence": f"validation MAP@R {up[0]:+.3f} from epoch {up[1]} to {up[2]}"})
    return pd.DataFrame(rows, columns=FLAG_COLUMNS)


def config_flags(runs: pd.DataFrame, epochs: pd.DataFrame,
                 flags: pd.DataFrame) -> tuple[str, str]:
    """The runs of one selected configuration, the epochs table, run_flags -> (the leaderboard's
    flags cell, the evidence sentence), both '' when it is not flagged."""
    ids = list(runs.loc[runs["status"] == "finished", "run_id"])
    if not ids:
        return "", ""
    cells, evidence = [], []
    collapsed = flags[(flags["flag"] == "collapse") & flags["run_id"].isin(ids)]
    if not collapsed.empty:
        cells.append(f"collapse ({len(collapsed)}/{len(ids)} units)")
        first = collapsed.iloc[0]
        evidence.append(f"collapsed in {len(collapsed)}/{len(ids)} units (run {first['run_id']}: "
                        f"{first['evidence']})")
    groups = dict(tuple(epochs.groupby("run_id"))) if "run_id" in epochs else {}
    rises = [r for r in (rise(groups[i]) for i in ids if i in groups) if r is not None]
    mean_rise = float(np.mean([r[0] for r in rises])) if rises else math.nan
    if rises and mean_rise > RISE_TOLERANCE:
        rising = int(sum(r[0] > RISE_TOLERANCE for r in rises))
        epochs_text = ", ".join(sorted({f"epoch {r[1]} to {r[2]}" for r in rises}))
        cells.append(f"still rising ({mean_rise:+.3f})")
        evidence.append(f"validation MAP@R still rises at the last evaluation: {mean_rise:+.3f} on "
                        f"average over {len(rises)} units ({epochs_text}; {rising}/{len(rises)} "
                        f"units rise by more than {RISE_TOLERANCE}): it was stopped while improving")
    return "; ".join(cells), "; ".join(evidence)


def selection_flags(selected_runs: dict, epochs: pd.DataFrame, flags: pd.DataFrame,
                    describe: dict) -> tuple[dict, list[str]]:
    """variant -> runs of its selected configuration, the epochs table, run_flags, config_key ->
    description -> (variant -> flags cell, the "What is missing" sentences)."""
    cells, lines = {}, []
    for variant, runs in sorted(selected_runs.items()):
        cell, evidence = config_flags(runs, epochs, flags)
        cells[variant] = cell
        if evidence:
            key = runs["config_key"].iloc[0] if "config_key" in runs and len(runs) else ""
            config = describe.get(key, "")
            where = f" ({config})" if config and config != "(only configuration)" else ""
            lines.append(f"Selected configuration of {variant}{where}: {evidence}")
    return cells, lines
