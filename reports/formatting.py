"""Tables as text: the leaderboard for reading (mean [low, high]) and a Markdown table writer.

A cell may hold several lines ("\\n"): the HTML page breaks them with <br> and never inside
a line (numeric cells are `white-space: nowrap`), Markdown joins them with a space.
"""

from __future__ import annotations

import math

import pandas as pd

from reports.leaderboard import TEST_METRICS

SHORT = {"test_precision_at_1": "test P@1", "test_r_precision": "test R-precision",
         "test_map_at_r": "test MAP@R"}
RECALLS = [m for m in TEST_METRICS if m.startswith("test_recall_at_")]


def number(value, digits: int = 3) -> str:
    """A float -> fixed digits, 'n/a' for NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def bounds(low, high) -> str:
    """'[0.790, 0.834]', or '[n/a]' when the interval is undefined (one unit)."""
    if isinstance(low, float) and math.isnan(low):
        return "[n/a]"
    return f"[{number(low)}, {number(high)}]"


def interval(mean, low, high, *, sep: str = " ") -> str:
    """'0.812 [0.790, 0.834]', or '0.812 [n/a]' when the interval is undefined (one unit);
    `sep` between the mean and the interval ("\\n": on two lines)."""
    return f"{number(mean)}{sep}{bounds(low, high)}"


def p_value(p) -> str:
    """A p-value, compactly: '0.012', '0.47', '6.6e-09' below 0.001, 'n/a' for NaN."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.2g}"


def _versus(row: dict, prefix: str, *, holm: bool) -> str:
    """'-0.031 [-0.052, -0.010]\\np=0.012 (Holm 0.036), n=6' or the note."""
    if row[f"{prefix}_note"]:
        return row[f"{prefix}_note"]
    text = (f"{row[f'{prefix}_diff']:+.3f} {bounds(row[f'{prefix}_low'], row[f'{prefix}_high'])}"
            f"\np={p_value(row[f'{prefix}_p'])}")
    if holm and not math.isnan(row["paired_p_holm"]):
        text += f" (Holm {p_value(row['paired_p_holm'])})"
    return text + f", n={row[f'{prefix}_n']}"


def display_leaderboard(board: pd.DataFrame) -> pd.DataFrame:
    """leaderboard -> strings: metrics as 'mean [95% CI]', paired tests as 'diff [CI] p (Holm)'."""
    rows = []
    for row in board.to_dict("records"):
        baseline = row["kind"] == "baseline"
        out = {"rank": "baseline" if baseline else str(int(row["rank"])),
               "variant": f"{row['variant']} (baseline)" if baseline else row["variant"],
               "selected config": row["config"], "units finished": row["units_finished"],
               "val MAP@R": interval(row["val_map_at_r_mean"], row["val_map_at_r_low"],
                                     row["val_map_at_r_high"], sep="\n")}
        for metric in SHORT:
            out[SHORT[metric]] = interval(row[f"{metric}_mean"], row[f"{metric}_low"],
                                          row[f"{metric}_high"], sep="\n")
        out["test Recall@1/2/4/8"] = " / ".join(number(row[f"{m}_mean"]) for m in RECALLS)
        out["vs best (test MAP@R)"] = _versus(row, "paired", holm=True)
        out["vs best baseline (test MAP@R)"] = _versus(row, "vs_baseline", holm=False)
        if "flags" in row:   # reports/flags.py: collapse, still rising
            out["flags"] = row["flags"] or ""
        rows.append(out)
    return pd.DataFrame(rows)


MAIN_COLUMNS = ("rank", "variant", "selected config", "units finished", "val MAP@R", "test MAP@R",
                "vs best (test MAP@R)", "vs best baseline (test MAP@R)")


def split_leaderboard(shown: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """display_leaderboard's frame -> (the comparison on MAP@R, the other test metrics), each
    narrow enough to read at 1400 px."""
    if shown.empty:
        return shown, shown
    main = [c for c in MAIN_COLUMNS if c in shown.columns]
    other = ["rank", "variant"] + [c for c in shown.columns if c not in main]
    return shown[main], shown[other]


def markdown_table(frame: pd.DataFrame) -> str:
    """A frame of strings/numbers -> a GitHub Markdown table."""
    if frame.empty:
        return "_(empty)_\n"

    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    cells = [[cell(c) for c in frame.columns]]
    cells += [[cell(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    lines.insert(1, "|" + "---|" * len(frame.columns))
    return "\n".join(lines) + "\n"
