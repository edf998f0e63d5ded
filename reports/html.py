"""The self-contained HTML page: inline CSS, images as base64 PNG, no script, no external link."""

from __future__ import annotations

import base64
from html import escape

import pandas as pd

from reports.figures import Figure
from reports.verdict import Verdict

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; }
.warning { background: #fdecea; border: 2px solid #c62828; color: #b71c1c; padding: 0.6em 1em;
           font-weight: 600; }
.verdict { font-size: 1.05em; }
.missing { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.8em; }
"""


def render(*, title: str, verdict: Verdict, protocol: list[tuple[str, str]], gaps: list[str],
           leaderboard: pd.DataFrame, figures: list[Figure], configs: pd.DataFrame,
           grid_text: str, search: str = "") -> str:
    """The report's parts -> one HTML document (str) that needs no other file.

    search: the Search section's HTML (reports/search.py), placed after the leaderboard.
    """
    warning = ([f"<p class='warning' id='warning'>Warning: {escape(verdict.warning)}</p>"]
               if verdict.warning else [])
    parts = [f"<h1>{escape(title)}</h1>", *warning, "<h2 id='verdict'>Verdict</h2>",
             f"<p class='verdict'>{escape(verdict.text)}</p>",
             "<h2 id='protocol'>Protocol</h2>",
             _table(pd.DataFrame(protocol, columns=["", ""]), header=False),
             "<h2 id='missing'>What is missing</h2>",
             ("<ul>" + "".join(f"<li>{escape(g)}</li>" for g in gaps) + "</ul>") if gaps
             else "<p>Nothing: every stored run finished and every figure was drawn.</p>",
             "<h2 id='leaderboard'>Leaderboard</h2>",
             "<p>Best configuration per variant on mean validation MAP@R over its (fold, seed) "
             "units (selectable only when every unit finished); validation and test metrics as "
             "mean [95% t-interval] over the units; paired tests on test MAP@R over matched "
             "units, as difference [95% t-interval] p, against the best variant (Holm-adjusted "
             "p beside the unadjusted one) and against the best baseline. Baselines (raw "
             "features, untrained encoder) are the marked rows below the ranked variants.</p>",
             *([f"<p class='missing'>{escape(verdict.power)}</p>"] if verdict.power else []),
             _table(leaderboard) if not leaderboard.empty
             else "<p class='missing'>No variant has a finished run.</p>",
             *([search] if search else []),
             "<h2 id='figures'>Figures</h2>", *[_figure(f) for f in figures],
             "<h2 id='configurations'>All configurations (validation MAP@R)</h2>",
             _table(configs), "<h2 id='grid'>Grid file</h2>",
             f"<pre>{escape(grid_text or '(no grid file in the store)')}</pre>"]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _table(frame: pd.DataFrame, *, header: bool = True) -> str:
    return frame.to_html(index=False, header=header, escape=True, na_rep="n/a", border=0,
                         float_format=lambda v: f"{v:.4g}")


def _figure(fig: Figure) -> str:
    heading = f"<h3 id='{escape(fig.name)}'>{escape(fig.title)}</h3>"
    if fig.png is None:
        return f"{heading}<p class='missing'>Not drawn: {escape(fig.reason)}</p>"
    data = base64.b64encode(fig.png).decode("ascii")
    return (f"{heading}<figure><img alt='{escape(fig.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{escape(fig.caption)}</figcaption></figure>")
