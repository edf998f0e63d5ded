"""Tables as text: the leaderboard for reading (mean [low, high]) and a Markdown table writer."""

from __future__ import annotations

import math

import pandas as pd

from reports.leaderboard import TEST_METRICS

SHORT = {"test_precision_at_1": "test P@1", "test_r_precision": "test R-precision",
         "test_map_at_r": "test MAP@R"}


def number(value, digits: int = 3) -> str:
    """A float -> fixed digits, 'n/a' for NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def interval(mean, low, high) -> str:
    """'0.812 [0.790, 0.834]', or the mean alone when the interval is undefined (one seed)."""
    if isinstance(low, float) and math.isnan(low):
        return f"{number(mean)} [n/a]"
    return f"{number(mean)} [{number(low)}, {number(high)}]"


def display_leaderboard(board: pd.DataFrame) -> pd.DataFrame:
    """leaderboard -> strings: metrics as 'mean [95% CI]', the paired test as 'diff (p=...)'."""
    rows = []
    for row in board.to_dict("records"):
        out = {"rank": row["rank"], "variant": row["variant"], "selected config": row["config"],
               "seeds finished": row["seeds_finished"], "val MAP@R": number(row["val_map_at_r_mean"])}
        for metric in TEST_METRICS:
            out[SHORT[metric]] = interval(row[f"{metric}_mean"], row[f"{metric}_low"],
                                          row[f"{metric}_high"])
        if row["paired_note"]:
            out["vs best (test MAP@R)"] = row["paired_note"]
        else:
            out["vs best (test MAP@R)"] = (f"{row['paired_diff']:+.3f} (p={row['paired_p']:.3g}, "
                                           f"n={row['paired_n']})")
        rows.append(out)
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame) -> str:
    """A frame of strings/numbers -> a GitHub Markdown table."""
    if frame.empty:
        return "_(empty)_\n"
    cells = [[str(c).replace("|", "\\|") for c in frame.columns]]
    cells += [[str(v).replace("|", "\\|") for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    lines.insert(1, "|" + "---|" * len(frame.columns))
    return "\n".join(lines) + "\n"
