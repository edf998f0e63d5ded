"""`build_report(store_dir, out_dir=None) -> Path`: a results store -> the comparison report.

Writes into out_dir (default store_dir/report): report.html (self-contained),
summary.md, figures/*.png and *.svg, tables/*.csv. Both documents open with the
verdict (reports/verdict.py) and, when no trained variant beats the best baseline,
a warning; `reports.verdict.read_warning(out_dir)` reads it back. One line per
section on stderr while it is built ("report: UMAP (4 panels)..."), unless `progress`
is given (a callable taking the line, or None for silence).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ablations.results import read_grid
from reports import html
from reports.curves import curve_figures, validation_figure
from reports.figures import variant_styles
from reports.flags import run_flags, selection_flags
from reports.formatting import display_leaderboard, interval
from reports.leaderboard import select
from reports.data_versions import mixed_data_warning, split_by_data
from reports.protocol import absent_runs, gaps, protocol_items
from reports.search import read_search, search_report, trial_config_keys
from reports.sensitivity import margin_lr_table, sensitivity_figures, sensitivity_table, swept_axes
from reports.store_view import StoreView, read_store
from reports.summary import render_summary
from reports.umap_panel import panel_order, pick_embeddings, selected_table, umap_figure
from reports.variants import annotate, unused_keys
from reports.verdict import VERDICT_CSV, verdict

CONFIDENCE = 0.95
# Where a store gives the ideal metric's score (the ceiling the verdict shows): a runs column,
# else ideal.json beside runs.parquet ({"test_map_at_r": value}, read by reports/store_view.py).
IDEAL_COLUMN = "ideal_test_map_at_r"
# Class counts per split, when the runs table carries them (the verdict explains val vs test).
CLASS_COLUMNS = {"validation": "n_val_classes", "test": "n_test_classes"}
STATUS_COLUMNS = ["run_id", "variant", "fold", "seed", "status", "error", "diverged_step",
                  "diverged_component", "wall_time_s"]


def build_report(store_dir: str | Path, out_dir: str | Path | None = None, *,
                 umap_epochs: int = 200, umap_max_points: int = 1000, random_state: int = 0,
                 max_curve_points: int = 200, progress="stderr") -> Path:
    """store_dir -> path of report.html written in out_dir (default store_dir/report).

    umap_epochs, umap_max_points, random_state: UMAP settings (fixed seed); max_curve_points:
    curves are averaged into at most this many step bins. A partial or failing grid still
    gives a report that says what is missing. progress: "stderr" (a line per section), a
    callable taking each line, or None.
    """
    view = read_store(store_dir)
    out = Path(store_dir) / "report" if out_dir is None else Path(out_dir)
    return write_report(view, out, umap_epochs=umap_epochs, umap_max_points=umap_max_points,
                        random_state=random_state, max_curve_points=max_curve_points,
                        progress=progress, search=read_search(store_dir))


def _say(progress):
    """progress setting -> a function of one line (prefixed 'report: ')."""
    if progress == "stderr":
        return lambda text: print(f"report: {text}...", file=sys.stderr, flush=True)
    if progress is None:
        return lambda text: None
    return lambda text: progress(f"report: {text}...")


def write_report(view: StoreView, out: Path, *, umap_epochs: int, umap_max_points: int,
                 random_state: int, max_curve_points: int, progress=None,
                 umap_project=None, search=None) -> Path:
    """A StoreView -> the report files under `out`; returns out/report.html. progress: as
    build_report's (default here: silent); umap_project: a fast stand-in for UMAP in tests
    (x (N, E) -> (N, 2)); search: the store's search (reports.search.read_search), or None:
    no Search section."""
    say = _say(progress)
    for name, value in (("umap_epochs", umap_epochs), ("umap_max_points", umap_max_points),
                        ("max_curve_points", max_curve_points)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for folder, patterns in (("figures", ("*.png", "*.svg")), ("tables", ("*.csv",))):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for stale in (p for pattern in patterns for p in (out / folder).glob(pattern)):
            stale.unlink()   # a figure not drawn this time must not survive from an earlier build
    say("statistics")
    stored_runs = view.runs
    grid = read_grid(view.grid_text)   # the store's grid.toml, parsed once for what follows
    current, other_data = split_by_data(stored_runs, grid.sources)
    if len(current) < len(stored_runs):  # only the runs on the grid's current data are compared
        ids = set(current["run_id"])
        view = dataclasses.replace(view, runs=current, **{
            name: table[table["run_id"].isin(ids)] if "run_id" in table else table
            for name, table in (("steps", view.steps), ("epochs", view.epochs))})
    runs = annotate(view.runs)
    trained_runs = runs[~runs["is_baseline"]] if not runs.empty else runs
    selection = select(runs, confidence=CONFIDENCE)
    board = selection.leaderboard
    describe = dict(zip(selection.configs["config_key"], selection.configs["config"]))
    flagged = run_flags(runs, view.steps, view.epochs, view.embeddings)
    cells, flag_lines = selection_flags(selection.selected_runs, view.epochs, flagged, describe)
    board["flags"] = board["variant"].map(cells).fillna("")   # collapse / under-training
    baselines = sorted(runs.loc[runs["is_baseline"], "variant"].unique()) if not runs.empty else []
    styles = variant_styles(runs["variant"].unique() if not runs.empty else [], baselines)
    trained = {v: r for v, r in selection.selected_runs.items() if not r["is_baseline"].any()}
    bases = board[board["kind"] == "baseline"]
    references = dict(zip(bases["variant"], bases["val_map_at_r_mean"]))
    picked, notes = pick_embeddings(selection.selected_runs, view.embeddings)
    order = panel_order(picked, ranked=board.loc[board["kind"] == "variant", "variant"].tolist(),
                        baselines=bases["variant"].tolist())
    answer = verdict(board, runs, ideal=ideal_score(runs, view.ideal),
                     class_counts=class_counts(runs, picked),
                     grid_baselines=grid.baselines)
    figures = [*curve_figures(_selected(view.steps, trained, needs=("step", "loss")),
                              out_dir=out / "figures", styles=styles, confidence=CONFIDENCE,
                              max_points=max_curve_points, progress=say),
               validation_figure(_selected(view.epochs, trained, needs=("epoch", "val_map_at_r")),
                                 out_dir=out / "figures", styles=styles, confidence=CONFIDENCE,
                                 references=references),
               *sensitivity_figures(trained_runs, out_dir=out / "figures", styles=styles,
                                    confidence=CONFIDENCE, references=references, progress=say),
               umap_figure(picked, order=order, baselines=baselines, out_dir=out / "figures",
                           random_state=random_state, n_epochs=umap_epochs,
                           max_points=umap_max_points, progress=say, project=umap_project)]
    palette = {v: style["color"] for v, style in styles.items()}
    found = (search_report(search, out_dir=out / "figures", palette=palette)
             if search is not None else None)
    say("tables and pages")
    # search trials not chosen are run at one seed by design: not listed as missing units
    trials = (selection.configs["config_key"].isin(trial_config_keys(search, runs))
              & ~selection.configs["complete"])
    missing = other_data + gaps(runs, configs=selection.configs[~trials], describe=describe,
                   notes=notes) + flag_lines + (found.gaps if found else []) + [
        f"Figure '{f.title}' not drawn: {f.reason}" for f in figures if f.png is None] + (
        absent_runs(grid, stored_runs))
    mixed = mixed_data_warning(runs)
    if mixed:  # loudly: before any other warning, in the verdict table the CLI prints from
        joined = mixed[0].upper() + mixed[1:] + (f" {answer.warning}" if answer.warning else "")
        answer = dataclasses.replace(answer, warning=joined,
                                     table=answer.table.assign(warning=joined))
        missing.insert(0, joined)
    protocol = protocol_items(runs, picked)
    _write_tables(out / "tables", runs=runs, trained_runs=trained_runs, selection=selection,
                  picked=picked, missing=missing, max_points=umap_max_points,
                  random_state=random_state, order=order)
    figure_table(figures).to_csv(out / "tables" / "figures.csv", index=False)
    flagged.to_csv(out / "tables" / "flags.csv", index=False)
    if found is not None:
        found.table.to_csv(out / "tables" / "search_variants.csv", index=False)
        search.trials.to_csv(out / "tables" / "search_trials.csv", index=False)
    answer.table.to_csv(out / "tables" / VERDICT_CSV, index=False)
    shown = display_leaderboard(board)
    (out / "summary.md").write_text(render_summary(verdict=answer, protocol=protocol,
                                                   gaps=missing, leaderboard=shown,
                                                   figures=figures,
                                                   search=found.markdown if found else ""),
                                    encoding="utf-8")
    page = html.render(title="tripletlab comparison report", verdict=answer, protocol=protocol,
                       gaps=missing, leaderboard=shown, figures=figures,
                       configs=readable_configs(selection.configs, runs),
                       grid_text=view.grid_text, search=found.html if found else "")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _selected(table: pd.DataFrame, selected_runs: dict, *, needs: tuple[str, ...]) -> pd.DataFrame:
    """steps or epochs -> the rows of the finished runs of each selected configuration, with
    `variant`; empty when the table lacks a column in `needs`."""
    ids = {rid: v for v, runs in selected_runs.items()
           for rid in runs.loc[runs["status"] == "finished", "run_id"]}
    if table.empty or not set(needs) <= set(table.columns) or not ids:
        return pd.DataFrame()
    part = table[table["run_id"].isin(ids)]
    return part.assign(variant=part["run_id"].map(ids))


def figure_table(figures) -> pd.DataFrame:
    """Figures -> name, drawn, width_px, height_px, colorbars, layout_problems, reason."""
    return pd.DataFrame([{"name": f.name, "drawn": f.png is not None, "width_px": f.size_px[0],
                          "height_px": f.size_px[1], "colorbars": f.colorbars,
                          "layout_problems": "; ".join(f.problems), "reason": f.reason}
                         for f in figures],
                        columns=["name", "drawn", "width_px", "height_px", "colorbars",
                                 "layout_problems", "reason"])


def ideal_score(runs: pd.DataFrame, stored: float | None) -> float | None:
    """The ideal metric's test MAP@R where the store has one: the runs' IDEAL_COLUMN (mean of its
    finite values) or the store's ideal.json (StoreView.ideal); None otherwise."""
    if IDEAL_COLUMN in runs.columns:
        values = pd.to_numeric(runs[IDEAL_COLUMN], errors="coerce").dropna()
        if not values.empty:
            return float(values.mean())
    return stored if stored is not None and math.isfinite(stored) else None


def class_counts(runs: pd.DataFrame, picked: dict) -> dict:
    """{"validation": n, "test": n} where known: the runs' CLASS_COLUMNS, else the number of test
    classes of the stored embeddings (one fold's)."""
    counts = {}
    for split, column in CLASS_COLUMNS.items():
        if column in runs.columns and runs[column].notna().any():
            counts[split] = int(runs[column].dropna().iloc[0])
    if "test" not in counts and picked:
        counts["test"] = int(len(np.unique(next(iter(picked.values()))[-1])))
    return counts


def readable_configs(configs: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The configurations table -> the page's version: a key a configuration does not use blank
    (a baseline's epochs, sampler, margin ...; batch_hard_soft's margin), validation MAP@R as
    'mean [low, high]', internal columns dropped."""
    if configs.empty:
        return configs.drop(columns=["config_key"], errors="ignore")
    first = runs.drop_duplicates("config_key").set_index("config_key")
    keys = [c for c in configs.columns if c in runs.columns and c not in ("variant", "is_baseline")]
    out = configs.copy().astype({k: object for k in keys})
    for i, key in zip(out.index, out["config_key"]):
        for k in unused_keys(first.loc[key]) & set(keys):
            out.at[i, k] = ""
    out["variant"] = [f"{v} (baseline)" if b else v for v, b in zip(out["variant"], out["is_baseline"])]
    out["val MAP@R"] = [interval(m, lo, hi) for m, lo, hi in
                        zip(out["val_map_at_r_mean"], out["val_map_at_r_low"], out["val_map_at_r_high"])]
    return out.drop(columns=["config_key", "config", "is_baseline", "val_map_at_r_mean",
                             "val_map_at_r_low", "val_map_at_r_high"])


def _write_tables(tables: Path, *, runs: pd.DataFrame, trained_runs: pd.DataFrame, selection,
                  picked: dict, missing: list[str], max_points: int, random_state: int,
                  order: list[str]) -> None:
    """tables/*.csv: leaderboard, configurations, sensitivity (margin x lr, and each other swept
    key), run status, UMAP runs, missing
    (verdict.csv and figures.csv are written by write_report)."""
    selection.leaderboard.to_csv(tables / "leaderboard.csv", index=False)
    selection.configs.to_csv(tables / "configurations.csv", index=False)
    margin_lr_table(trained_runs).to_csv(tables / "sensitivity_margin_lr.csv", index=False)
    for key in swept_axes(trained_runs):  # every other swept numeric key: sensitivity_<key>.csv
        sensitivity_table(trained_runs, [key]).to_csv(tables / f"sensitivity_{key}.csv", index=False)
    status = runs.reindex(columns=STATUS_COLUMNS)
    status.to_csv(tables / "runs_status.csv", index=False)
    selected_table(picked, order=order, max_points=max_points,
                   random_state=random_state).to_csv(tables / "umap_runs.csv", index=False)
    pd.DataFrame({"missing": missing}).to_csv(tables / "missing.csv", index=False)

