"""The report's "Search" section: the equal-budget search of a grid's `[search]` section.

Reads only files of the results store written by ablations/search.py:
DIR/search/plan.json (the variants and the keys each searched) and
DIR/search/trials.parquet (one row per trial: variant keys, trial, state, value,
best_so_far, budget, run_ids, chosen, `param_<key>`). Shows the trials per variant,
the best validation score against the trial number (one figure, a line per
variant), the chosen values per variant and whether each variant reached its budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from reports.figures import Figure, missing, save
from reports.formatting import markdown_table, number
from reports.html import _figure, _table
from reports.variants import variant_label

SEARCH_DIR = "search"
FIGURE = "search_best_so_far"
TITLE = "Search: best validation MAP@R against trial number"


@dataclass(frozen=True)
class SearchData:
    """What the store holds of a search: the plan, the trials table, and problems reading them."""

    plan: dict
    trials: pd.DataFrame
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SearchReport:
    """The section's parts: the variants table, the figure, gaps, and both renderings."""

    table: pd.DataFrame
    figure: Figure
    gaps: list[str]
    html: str
    markdown: str


def read_search(store_dir: str | Path) -> SearchData | None:
    """store_dir -> SearchData, or None when the store holds no search."""
    folder = Path(store_dir) / SEARCH_DIR
    if not folder.is_dir():
        return None
    problems, plan, trials = [], {}, pd.DataFrame()
    try:
        plan = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        problems.append(f"Search plan {str(folder / 'plan.json')!r} not readable ({err}): the "
                        "variants without a trial are not listed")
    path = folder / "trials.parquet"
    if path.is_file():
        try:
            trials = pd.read_parquet(path)
        except (OSError, ValueError) as err:
            problems.append(f"Search trials {str(path)!r} not readable ({err}): run the same "
                            "`tripletlab run` again to rewrite it")
    if not trials.empty:
        trials = trials.assign(variant=[variant_label(row) for _, row in trials.iterrows()])
    return SearchData(plan=plan, trials=trials, problems=problems)


def trial_config_keys(data: SearchData | None, runs: pd.DataFrame) -> set[str]:
    """config_key of every configuration whose runs are all search-trial runs (annotated runs)."""
    if data is None or data.trials.empty or runs.empty:
        return set()
    ids = {rid for text in data.trials["run_ids"] for rid in str(text).split(",") if rid}
    by_key = runs.groupby("config_key")["run_id"].agg(set)
    return {key for key, rids in by_key.items() if rids <= ids}


def _variants(data: SearchData) -> list[str]:
    """Variant names in the plan's order, then any only in the trials table."""
    names = [variant_label(pd.Series(v)) for v in data.plan.get("variants", [])]
    extra = [v for v in (data.trials["variant"].unique() if not data.trials.empty else [])
             if v not in names]
    return names + list(extra)


def variants_table(data: SearchData) -> pd.DataFrame:
    """One row per variant: keys searched, trials told / budget, reached, best value, chosen values."""
    searched = {variant_label(pd.Series(v)): ", ".join(v.get("searched", []))
                for v in data.plan.get("variants", [])}
    rows = []
    for variant in _variants(data):
        part = data.trials[data.trials["variant"] == variant] if not data.trials.empty else data.trials
        budget = int(part["budget"].max()) if not part.empty else data.plan.get("trials")
        told = part[part["state"].isin(["complete", "failed"])] if not part.empty else part
        chosen = part[part["chosen"].astype(bool)] if not part.empty else part
        values = ""
        if not chosen.empty:
            row = chosen.iloc[0]
            values = ", ".join(f"{c.removeprefix('param_')}={_plain(row[c])}" for c in part.columns
                               if c.startswith("param_") and pd.notna(row[c]))
        n_failed = int((told["state"] == "failed").sum()) if not told.empty else 0
        reached = budget is not None and len(told) >= budget
        rows.append({"variant": variant, "searched": searched.get(variant, ""),
                     "trials": f"{len(told)}/{budget if budget is not None else '?'}",
                     "failed": n_failed, "reached_budget": "yes" if reached else "no",
                     "best_val_map_at_r": float(chosen["value"].iloc[0]) if not chosen.empty
                     else float("nan"),
                     "chosen_trial": int(chosen["trial"].iloc[0]) if not chosen.empty else None,
                     "chosen_values": values or "(none: no trial completed)"})
    return pd.DataFrame(rows, columns=["variant", "searched", "trials", "failed", "reached_budget",
                                       "best_val_map_at_r", "chosen_trial", "chosen_values"])


def _plain(value):
    return number(value, 4) if isinstance(value, float) else value


def best_so_far_figure(data: SearchData, *, out_dir: Path, palette: dict) -> Figure:
    """Best validation MAP@R so far against the trial number: one line per variant."""
    trials = data.trials
    if trials.empty or not trials["value"].notna().any():
        return missing(name=FIGURE, title=TITLE, reason="no search trial has completed yet")
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for variant, part in trials.sort_values("trial").groupby("variant", sort=True):
        color = palette.get(variant)
        ax.step(part["trial"] + 1, part["best_so_far"], where="post", label=variant, color=color)
        ax.scatter(part["trial"] + 1, part["value"], s=12, alpha=0.4, color=color)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("validation MAP@R (mean over folds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    budget = int(trials["budget"].max())
    return save(fig, name=FIGURE, title=TITLE, out_dir=out_dir,
                caption=f"Lines: best mean validation MAP@R over the class folds among the trials "
                        f"so far (budget {budget} per variant); dots: each trial's value. Test "
                        f"metrics are never used by the search.")


def search_report(data: SearchData, *, out_dir: Path, palette: dict) -> SearchReport:
    """SearchData -> the Search section (figure saved under out_dir)."""
    table = variants_table(data)
    figure = best_so_far_figure(data, out_dir=out_dir, palette=palette)
    gaps = list(data.problems) + [
        f"Search of {row.variant} stopped at {row.trials} trials: not at its budget (run the "
        f"same `tripletlab run` again to resume it)" for row in table.itertuples()
        if row.reached_budget != "yes"]
    plan = data.plan
    intro = (f"Every variant gets the same budget of {plan.get('trials', '?')} trials (TPE, seed "
             f"{plan.get('seed', '?')}, batches of {plan.get('parallel', '?')}, "
             f"{plan.get('startup_trials', '?')} random startup trials) over the keys of the "
             f"space that apply to it; a trial's score is its mean validation MAP@R over the "
             f"{plan.get('class_folds', '?')} class fold(s) at seed {plan.get('trial_seed', '?')}. "
             f"The chosen configuration (best trial) of each variant is re-run over every (fold, "
             f"seed) unit: those runs are the leaderboard's.")
    shown = table.assign(best_val_map_at_r=[number(v, 4) for v in table["best_val_map_at_r"]])
    html = "\n".join(["<h2 id='search'>Search</h2>", f"<p>{intro}</p>", _table(shown),
                      _figure(figure)])
    markdown = "\n".join(["## Search", "", intro, "", markdown_table(shown), "",
                          f"- [{figure.title}](figures/{figure.name}.png)" if figure.png
                          else f"- {figure.title}: not drawn ({figure.reason})", ""])
    return SearchReport(table=table, figure=figure, gaps=gaps, html=html, markdown=markdown)
