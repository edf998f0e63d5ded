"""summary.md: the protocol, the leaderboard and what is missing, in Markdown."""

from __future__ import annotations

import pandas as pd

from reports.figures import Figure
from reports.formatting import markdown_table, split_leaderboard
from reports.verdict import Verdict


def render_summary(*, verdict: Verdict, protocol: list[tuple[str, str]], gaps: list[str],
                   leaderboard: pd.DataFrame, figures: list[Figure], search: str = "") -> str:
    """The report's parts -> Markdown text (figures linked as files under figures/); search:
    the Search section's Markdown (reports/search.py), after the leaderboard."""
    lines = ["# tripletlab comparison report", ""]
    if verdict.warning:
        lines += [f"> **WARNING:** {verdict.warning}", ""]
    lines += ["## Verdict", "", *[f"**{s}**" for s in verdict.headline[:1]],
              *verdict.headline[1:], "", verdict.text, "", "## Protocol", ""]
    lines += [f"- **{field}**: {text}" for field, text in protocol]
    lines += ["", "## Leaderboard", "",
              "Metrics: mean [95% t-interval] over units (folds: the mean over their seeds; seeds on a single class split); selection on mean validation "
              "MAP@R among configurations whose units all finished; paired differences on test "
              "MAP@R over matched units (Holm-adjusted p against the best variant). Baselines are "
              "the rows marked (baseline).",
              "", *([verdict.power, ""] if verdict.power else []),
              *[markdown_table(part) for part in split_leaderboard(leaderboard)],
              *([search] if search else []), "## What is missing", ""]
    lines += [f"- {g}" for g in gaps] or ["Nothing."]
    lines += ["", "## Figures", ""]
    for fig in figures:
        lines.append(f"- [{fig.title}](figures/{fig.name}.png)" if fig.png is not None
                     else f"- {fig.title}: not drawn ({fig.reason})")
    return "\n".join(lines) + "\n"
