"""The report's answer first: does the best variant beat the best baseline, and who differs.

`verdict(board)` reads the leaderboard (reports/leaderboard.py) and gives one short
paragraph, the warning when no trained variant beats the best baseline on test
(paired mean difference of test MAP@R over matched units <= 0 for every selected
variant), and one table row
(tables/verdict.csv, which `read_warning` reads back for the command line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports.formatting import bounds, interval, number
from reports.stats import LOW_POWER_N

ALPHA = 0.05
VERDICT_CSV = "verdict.csv"


@dataclass(frozen=True)
class Verdict:
    text: str              # one paragraph
    warning: str | None    # set when no trained variant beats the best baseline on test
    table: pd.DataFrame    # one row: the numbers behind the text
    power: str = ""        # a note for the leaderboard when the tests have few units


def _power_note(n: int) -> str:
    return (f" Only n = {n} matched (fold, seed) units: below {LOW_POWER_N} a paired test has "
            "little power (a difference that is not significant is no evidence of no difference)."
            if n < LOW_POWER_N else "")


def _outcome(row: dict) -> str:
    """The verdict row's paired difference to the baseline -> 'its paired difference is ...'."""
    n, diff, low, high, p = row["n_units"], row["diff"], row["low"], row["high"], row["p"]
    if n == 0 or math.isnan(diff):
        return "no (fold, seed) unit of the best variant matches one of the baseline's"
    sig = not math.isnan(low) and (low > 0 or high < 0)
    outcome = ("beats the baseline significantly" if sig and diff > 0 else
               "is significantly worse than the baseline" if sig else
               ("beats" if diff > 0 else "does not beat") + " the baseline on average"
               + (", not significantly" if not math.isnan(low) else ""))
    p_text = "n/a" if math.isnan(p) else f"{p:.3g}"
    return (f"its paired difference is {diff:+.3f} (95% t-interval {bounds(low, high)}, "
            f"p = {p_text}, n = {n}): it {outcome}")


def verdict(board: pd.DataFrame) -> Verdict:
    """leaderboard -> Verdict (text, warning or None, one-row table)."""
    trained = board[board["kind"] == "variant"] if not board.empty else board
    bases = board[board["kind"] == "baseline"] if not board.empty else board
    row = {"best_variant": None, "best_baseline": None, "n_units": 0, "diff": math.nan,
           "low": math.nan, "high": math.nan, "p": math.nan, "beats_baseline": None,
           "significantly_different_after_holm": "", "warning": ""}
    if trained.empty:
        text = ("No trained variant has a configuration whose (fold, seed) units all finished: "
                "there is nothing to select yet (see What is missing).")
        return Verdict(text, None, pd.DataFrame([row]))
    best = trained.iloc[0]
    row["best_variant"] = best["variant"]
    config = "" if best["config"] == "(only configuration)" else f" ({best['config']})"
    test = interval(best["test_map_at_r_mean"], best["test_map_at_r_low"],
                    best["test_map_at_r_high"])
    lines = [f"Best variant on validation: {best['variant']}{config}, test MAP@R {test} over "
             f"{best['test_map_at_r_n']} units."]
    warning = None
    if bases.empty:
        lines.append("This store has no finished baseline run (raw, untrained: failed, deleted, "
                     "or the store predates them): run the same grid again to add them; only "
                     "they will run.")
    else:
        base = bases.iloc[0]
        n, diff = int(best["vs_baseline_n"]), float(best["vs_baseline_diff"])
        row.update(best_baseline=base["variant"], n_units=n, diff=diff,
                   low=float(best["vs_baseline_low"]), high=float(best["vs_baseline_high"]),
                   p=float(best["vs_baseline_p"]), beats_baseline=bool(diff > 0))
        lines.append(f"Against the best baseline, {base['variant']} (test MAP@R "
                     f"{number(base['test_map_at_r_mean'])}), " + _outcome(row) + ".")
        beaten_by = trained[trained["vs_baseline_diff"] > 0]["variant"].tolist()
        if beaten_by and not diff > 0:
            lines[-1] += (" Trained variants above it on test on average: "
                          + ", ".join(beaten_by) + ".")
        if not beaten_by and trained["vs_baseline_diff"].notna().any():
            warning = (f"No trained variant beats the best baseline ({base['variant']}, test MAP@R "
                       f"{number(base['test_map_at_r_mean'])}) on test: training did not improve "
                       "on it for the held-out classes, so the leaderboard ranks how much each "
                       "loss changes the features, not how much it improves them.")
            row["warning"] = warning
        lines[-1] += _power_note(n)
    others = trained.iloc[1:]
    if others.empty:
        lines.append("No other variant to compare with.")
    else:
        differ = others[others["paired_p_holm"] < ALPHA]["variant"].tolist()
        row["significantly_different_after_holm"] = "; ".join(differ)
        lines.append(f"Significantly different from {best['variant']} on test MAP@R after Holm "
                     f"correction over {len(others)} comparison(s) (5% family-wise): "
                     + (", ".join(differ) if differ else "none") + ".")
    n_best = int(best["test_map_at_r_n"])
    power = (f"Note: the best variant has n = {n_best} (fold, seed) units; below {LOW_POWER_N} the "
             "paired tests have little power." if n_best < LOW_POWER_N else "")
    return Verdict(" ".join(lines), warning, pd.DataFrame([row]), power)


def read_warning(report_dir: str | Path) -> str | None:
    """A written report's directory -> its warning (tables/verdict.csv), or None."""
    path = Path(report_dir) / "tables" / VERDICT_CSV
    if not path.is_file():
        return None
    value = pd.read_csv(path, keep_default_na=False)["warning"].iloc[0]
    return str(value) or None
