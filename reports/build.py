"""`build_report(store_dir, out_dir=None) -> Path`: a results store -> the comparison report.

Writes into out_dir (default store_dir/report): report.html (self-contained),
summary.md, figures/*.png and *.svg, tables/*.csv. Both documents open with the
verdict (reports/verdict.py) and, when no trained variant beats the best baseline,
a warning; `reports.verdict.read_warning(out_dir)` reads it back.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import seaborn as sns

from reports import html
from reports.curves import curve_figures, validation_figure
from reports.formatting import display_leaderboard
from reports.leaderboard import select
from reports.protocol import absent_runs, gaps, mixed_data_warning, protocol_items
from reports.sensitivity import margin_lr_table, sensitivity_figures
from reports.store_view import StoreView, read_store
from reports.summary import render_summary
from reports.umap_panel import pick_embeddings, selected_table, umap_figure
from reports.variants import annotate
from reports.verdict import VERDICT_CSV, verdict

CONFIDENCE = 0.95
STATUS_COLUMNS = ["run_id", "variant", "fold", "seed", "status", "error", "diverged_step",
                  "diverged_component", "wall_time_s"]


def build_report(store_dir: str | Path, out_dir: str | Path | None = None, *,
                 umap_epochs: int = 200, umap_max_points: int = 1000, random_state: int = 0,
                 max_curve_points: int = 200) -> Path:
    """store_dir -> path of report.html written in out_dir (default store_dir/report).

    umap_epochs, umap_max_points, random_state: UMAP settings (fixed seed); max_curve_points:
    curves are averaged into at most this many step bins. A partial or failing grid still
    gives a report that says what is missing.
    """
    view = read_store(store_dir)
    out = Path(store_dir) / "report" if out_dir is None else Path(out_dir)
    return write_report(view, out, umap_epochs=umap_epochs, umap_max_points=umap_max_points,
                        random_state=random_state, max_curve_points=max_curve_points)


def write_report(view: StoreView, out: Path, *, umap_epochs: int, umap_max_points: int,
                 random_state: int, max_curve_points: int) -> Path:
    """A StoreView -> the report files under `out`; returns out/report.html."""
    for name, value in (("umap_epochs", umap_epochs), ("umap_max_points", umap_max_points),
                        ("max_curve_points", max_curve_points)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for folder, patterns in (("figures", ("*.png", "*.svg")), ("tables", ("*.csv",))):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for stale in (p for pattern in patterns for p in (out / folder).glob(pattern)):
            stale.unlink()   # a figure not drawn this time must not survive from an earlier build
    runs = annotate(view.runs)
    trained_runs = runs[~runs["baseline"]] if not runs.empty else runs
    selection = select(runs, confidence=CONFIDENCE)
    board = selection.leaderboard
    answer = verdict(board)
    variants = sorted(runs["variant"].unique()) if not runs.empty else []
    palette = dict(zip(variants, sns.color_palette("tab10" if len(variants) <= 10 else "husl",
                                                   len(variants))))
    trained = {v: r for v, r in selection.selected_runs.items() if not r["baseline"].any()}
    references = {f"{v} (baseline)": m for v, m in
                  zip(board.loc[board["kind"] == "baseline", "variant"],
                      board.loc[board["kind"] == "baseline", "val_map_at_r_mean"])}
    picked, notes = pick_embeddings(selection.selected_runs, view.embeddings)
    figures = [*curve_figures(_selected(view.steps, trained, needs=("step", "loss")),
                              out_dir=out / "figures", palette=palette, confidence=CONFIDENCE,
                              max_points=max_curve_points),
               validation_figure(_selected(view.epochs, trained, needs=("epoch", "val_map_at_r")),
                                 out_dir=out / "figures", palette=palette, confidence=CONFIDENCE,
                                 references=references),
               *sensitivity_figures(trained_runs, out_dir=out / "figures", palette=palette,
                                    confidence=CONFIDENCE, references=references),
               umap_figure(picked, out_dir=out / "figures", random_state=random_state,
                           n_epochs=umap_epochs, max_points=umap_max_points)]
    describe = dict(zip(selection.configs["config_key"], selection.configs["config"]))
    missing = gaps(runs, configs=selection.configs, describe=describe, notes=notes) + [
        f"Figure '{f.title}' not drawn: {f.reason}" for f in figures if f.png is None] + (
        absent_runs(view.grid_text, view.runs))
    mixed = mixed_data_warning(runs)
    if mixed:  # loudly: before any other warning, in the verdict table the CLI prints from
        joined = mixed[0].upper() + mixed[1:] + (f" {answer.warning}" if answer.warning else "")
        answer = dataclasses.replace(answer, warning=joined,
                                     table=answer.table.assign(warning=joined))
        missing.insert(0, joined)
    protocol = protocol_items(runs, picked)
    _write_tables(out / "tables", runs=runs, trained_runs=trained_runs, selection=selection,
                  picked=picked, missing=missing)
    answer.table.to_csv(out / "tables" / VERDICT_CSV, index=False)
    shown = display_leaderboard(board)
    (out / "summary.md").write_text(render_summary(verdict=answer, protocol=protocol,
                                                   gaps=missing, leaderboard=shown,
                                                   figures=figures), encoding="utf-8")
    page = html.render(title="tripletlab comparison report", verdict=answer, protocol=protocol,
                       gaps=missing, leaderboard=shown, figures=figures,
                       configs=selection.configs.drop(columns=["config_key"]),
                       grid_text=view.grid_text)
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


def _write_tables(tables: Path, *, runs: pd.DataFrame, trained_runs: pd.DataFrame, selection,
                  picked: dict, missing: list[str]) -> None:
    """tables/*.csv: leaderboard, configurations, sensitivity, run status, UMAP runs, missing
    (verdict.csv is written by write_report)."""
    selection.leaderboard.to_csv(tables / "leaderboard.csv", index=False)
    selection.configs.to_csv(tables / "configurations.csv", index=False)
    margin_lr_table(trained_runs).to_csv(tables / "sensitivity_margin_lr.csv", index=False)
    status = runs.reindex(columns=STATUS_COLUMNS)
    status.to_csv(tables / "runs_status.csv", index=False)
    selected_table(picked).to_csv(tables / "umap_runs.csv", index=False)
    pd.DataFrame({"missing": missing}).to_csv(tables / "missing.csv", index=False)

