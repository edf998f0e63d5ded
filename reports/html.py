"""The self-contained HTML page: inline CSS, images as base64 PNG, no script, no external link.

Readable at 1400 px: every table sits in its own horizontally scrolling box, a number
never breaks inside a line (each line of a cell is `white-space: nowrap`; only the
text columns wrap), and the leaderboard is split into the MAP@R comparison and the
other test metrics.
"""

from __future__ import annotations

import base64
import math
from html import escape

import pandas as pd

from reports.figures import Figure
from reports.formatting import split_leaderboard
from reports.verdict import Verdict

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em;
       color: #222; }
.scroll { overflow-x: auto; max-width: 100%; margin: 0.5em 0 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top;
         white-space: nowrap; }
td.text, th.text { white-space: normal; min-width: 10em; max-width: 48em; }
td .line { display: block; white-space: nowrap; }
th { background: #f3f3f3; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; max-width: 60em; }
.warning { background: #fdecea; border: 2px solid #c62828; color: #b71c1c; padding: 0.6em 1em;
           font-weight: 600; }
.answer { font-size: 1.08em; background: #eef5ec; border-left: 4px solid #2e7d32;
          padding: 0.4em 1em; }
.answer p { margin: 0.4em 0; }
.verdict { font-size: 0.95em; }
.missing { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.8em; }
"""
TEXT_COLUMNS = ("selected config", "config", "units_missing", "missing")


def render(*, title: str, verdict: Verdict, protocol: list[tuple[str, str]], gaps: list[str],
           leaderboard: pd.DataFrame, figures: list[Figure], configs: pd.DataFrame,
           grid_text: str, search: str = "") -> str:
    """The report's parts -> one HTML document (str) that needs no other file.

    search: the Search section's HTML (reports/search.py), placed after the leaderboard.
    """
    warning = ([f"<p class='warning' id='warning'>Warning: {escape(verdict.warning)}</p>"]
               if verdict.warning else [])
    headline = "".join(f"<p>{escape(s)}</p>" for s in verdict.headline)
    main, other = split_leaderboard(leaderboard)
    parts = [f"<h1>{escape(title)}</h1>", *warning, "<h2 id='verdict'>Verdict</h2>",
             *([f"<div class='answer' id='answer'>{headline}</div>"] if headline else []),
             f"<p class='verdict'>{escape(verdict.text)}</p>",
             "<h2 id='protocol'>Protocol</h2>",
             _table(pd.DataFrame(protocol, columns=["field", "text"]), header=False,
                    text_columns=("text",)),
             "<h2 id='missing'>What is missing</h2>",
             ("<ul>" + "".join(f"<li>{escape(g)}</li>" for g in gaps) + "</ul>") if gaps
             else "<p>Nothing: every stored run finished and every figure was drawn.</p>",
             "<h2 id='leaderboard'>Leaderboard</h2>",
             "<p>Best configuration per variant on mean validation MAP@R over its units "
             "(selectable only when every unit finished); validation and test metrics as "
             "mean [95% t-interval] over the units; paired tests on test MAP@R over matched "
             "units, as difference [95% t-interval] p, against the best variant (Holm-adjusted "
             "p beside the unadjusted one) and against the best baseline. Baselines are the "
             "marked rows below the ranked variants.</p>",
             *([f"<p class='missing'>{escape(verdict.power)}</p>"] if verdict.power else []),
             (_table(main) + "<h4 id='other_metrics'>Other test metrics of the selected "
              "configurations</h4>" + _table(other)) if not leaderboard.empty
             else "<p class='missing'>No variant has a finished run.</p>",
             *([search] if search else []),
             "<h2 id='figures'>Figures</h2>", *[_figure(f) for f in figures],
             "<h2 id='configurations'>All configurations (validation MAP@R)</h2>",
             "<p>Blank: a key the configuration does not use (a baseline trains nothing; "
             "batch_hard_soft has no margin).</p>",
             _table(configs), "<h2 id='grid'>Grid file</h2>",
             f"<pre>{escape(grid_text or '(no grid file in the store)')}</pre>"]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _cell(value) -> str:
    """One value -> cell HTML: floats to 4 significant digits, NaN 'n/a', each line unbroken."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    lines = text.split("\n")
    if len(lines) == 1:
        return escape(text)
    return "".join(f"<span class='line'>{escape(line)}</span>" for line in lines)


def _table(frame: pd.DataFrame, *, header: bool = True, text_columns=TEXT_COLUMNS) -> str:
    """A frame -> an HTML table in its own scroll box (text columns wrap, other cells do not)."""
    text = [c in text_columns for c in frame.columns]
    cls = [" class='text'" if t else "" for t in text]
    head = ("<thead><tr>" + "".join(f"<th{c}>{escape(str(name))}</th>"
                                    for c, name in zip(cls, frame.columns)) + "</tr></thead>"
            if header else "")
    body = "".join("<tr>" + "".join(f"<td{c}>{_cell(v)}</td>" for c, v in zip(cls, row)) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<div class='scroll'><table>{head}<tbody>{body}</tbody></table></div>"


def _figure(fig: Figure) -> str:
    heading = f"<h3 id='{escape(fig.name)}'>{escape(fig.title)}</h3>"
    if fig.png is None:
        return f"{heading}<p class='missing'>Not drawn: {escape(fig.reason)}</p>"
    data = base64.b64encode(fig.png).decode("ascii")
    width, height = fig.size_px
    size = f" width='{width}' height='{height}'" if width and height else ""
    return (f"{heading}<figure><img alt='{escape(fig.alt or fig.title)}'{size} "
            f"src='data:image/png;base64,{data}'>"
            f"<figcaption>{escape(fig.caption)}</figcaption></figure>")
