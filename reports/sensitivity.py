"""Sensitivity of validation MAP@R to the hyper-parameters (never to test metrics).

Each cell is the mean validation MAP@R over the finished units of a configuration;
where other axes vary too, a cell shows the best configuration over them. The
runs given are the trained variants' (the baselines are reference lines). A grid
with one margin and one learning rate gets no heatmap and a grid with one margin
no MAP@R-vs-margin line: the report says so instead of drawing a lone patch.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from reports.curves import reference_lines
from reports.figures import Figure, missing, panel_grid, save
from reports.leaderboard import SELECT_ON, finished
from reports.stats import t_half_width
from reports.variants import SEED, is_combined

PANEL = (3.8, 3.0)


def config_means(runs: pd.DataFrame) -> pd.DataFrame:
    """annotated runs -> one row per configuration: its config values, val MAP@R mean/std/n."""
    done = finished(runs)
    if done.empty:
        return pd.DataFrame(columns=["variant", "config_key", "mean", "std", "n"])
    stats = done.groupby(["variant", "config_key"])[SELECT_ON].agg(["mean", "std", "count"])
    first = done.drop_duplicates("config_key").set_index(["variant", "config_key"])
    first = first.drop(columns=[c for c in ("mean", "std") if c in first.columns])
    return first.join(stats.rename(columns={"count": "n"})).reset_index()


def best_over_other_axes(means: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """config means -> per (variant, *axes) the configuration with the highest mean."""
    order = means.sort_values(["mean", "config_key"], ascending=[False, True])
    return order.groupby(["variant", *axes], as_index=False, sort=True).head(1)


def margin_lr_table(runs: pd.DataFrame) -> pd.DataFrame:
    """annotated runs -> variant, margin, lr, mean val MAP@R (best over other axes), n seeds."""
    means = config_means(runs)
    if means.empty or not {"margin", "lr"} <= set(means.columns):
        return pd.DataFrame(columns=["variant", "margin", "lr", "val_map_at_r_mean", "n_seeds"])
    best = best_over_other_axes(means, ["margin", "lr"])
    return (best[["variant", "margin", "lr", "mean", "n"]]
            .rename(columns={"mean": "val_map_at_r_mean", "n": "n_seeds"})
            .sort_values(["variant", "margin", "lr"]).reset_index(drop=True))


def sensitivity_figures(runs: pd.DataFrame, *, out_dir: Path, palette: dict,
                        confidence: float, references: dict) -> list[Figure]:
    """annotated runs of trained variants, {baseline label: mean validation MAP@R} ->
    margin x lr heatmaps, loss-weight heatmaps, MAP@R vs margin lines (baselines as lines)."""
    table = margin_lr_table(runs)
    if table.empty:
        reason = ("no finished run has a validation MAP@R" if finished(runs).empty
                  else "the runs table has no margin or lr column")
        return [missing(name="sensitivity_margin_lr", title=_TITLES[0], reason=reason),
                missing(name="sensitivity_weights", title=_TITLES[1], reason=reason),
                missing(name="map_vs_margin", title=_TITLES[2], reason=reason)]
    margins, lrs = sorted(table["margin"].unique()), sorted(table["lr"].unique())
    values = f"margin {margins[0]:g}" + (f" and learning rate {lrs[0]:g}" if len(lrs) == 1 else "")
    one_cell = (f"the grid has a single {values}: each variant's validation MAP@R is the "
                "leaderboard's 'val MAP@R' column")
    heatmap = (_margin_lr(table, out_dir=out_dir) if len(margins) > 1 or len(lrs) > 1
               else missing(name="sensitivity_margin_lr", title=_TITLES[0], reason=one_cell))
    lines = (_margin_lines(runs, out_dir=out_dir, palette=palette, confidence=confidence,
                           references=references) if len(margins) > 1
             else missing(name="map_vs_margin", title=_TITLES[2], reason=one_cell))
    return [heatmap, _weights(runs, out_dir=out_dir), lines]


def _heatmap(ax, frame: pd.DataFrame, *, rows: str, cols: str, vmin: float, vmax: float) -> None:
    grid = frame.pivot_table(index=rows, columns=cols, values="mean", aggfunc="max")
    sns.heatmap(grid, ax=ax, annot=True, fmt=".3f", cmap="viridis", vmin=vmin, vmax=vmax,
                cbar=False, annot_kws={"fontsize": 7})


def _margin_lr(table: pd.DataFrame, *, out_dir: Path) -> Figure:
    variants = sorted(table["variant"].unique())
    frame = table.rename(columns={"val_map_at_r_mean": "mean"})
    vmin, vmax = float(frame["mean"].min()), float(frame["mean"].max())
    fig, axes = panel_grid(len(variants), ncols=4, size=PANEL)
    for ax, variant in zip(axes, variants):
        _heatmap(ax, frame[frame["variant"] == variant], rows="margin", cols="lr",
                 vmin=vmin, vmax=vmax)
        ax.set_title(variant, fontsize=9)
    return save(fig, name="sensitivity_margin_lr", title=_TITLES[0], out_dir=out_dir,
                caption="Validation MAP@R (mean over finished seeds) over margin x learning rate per "
                        "variant; where other axes vary, the best configuration over them. One colour "
                        "scale for all panels.")


def _weights(runs: pd.DataFrame, *, out_dir: Path) -> Figure:
    means = config_means(runs)
    weight_cols = [c for c in means.columns if c.startswith("w_")]
    panels = []
    for variant in sorted(v for v in means["variant"].unique() if is_combined(v)):
        part = means[means["variant"] == variant]
        varying = [c for c in weight_cols if part[c].nunique() > 1]
        if varying:
            axes = varying[:2] if len(varying) > 1 else [varying[0], "lr"]
            panels.append((variant, best_over_other_axes(part, axes), axes))
    if not panels:
        return missing(name="sensitivity_weights", title=_TITLES[1],
                       reason="no combined objective has loss weights (w_*) varied in the grid")
    vmin = min(float(p["mean"].min()) for _, p, _ in panels)
    vmax = max(float(p["mean"].max()) for _, p, _ in panels)
    fig, axes = panel_grid(len(panels), ncols=4, size=PANEL)
    for ax, (variant, part, (rows, cols)) in zip(axes, panels):
        _heatmap(ax, part, rows=rows, cols=cols, vmin=vmin, vmax=vmax)
        ax.set_title(variant, fontsize=9)
    return save(fig, name="sensitivity_weights", title=_TITLES[1], out_dir=out_dir,
                caption="Validation MAP@R over the loss weights of combined objectives (fixed "
                        "weighting); best configuration over the other axes.")


def _margin_lines(runs: pd.DataFrame, *, out_dir: Path, palette: dict, confidence: float,
                  references: dict) -> Figure:
    means = config_means(runs)
    best = best_over_other_axes(means, ["margin"]).sort_values(["variant", "margin"])
    best = best.assign(half=t_half_width(best["std"], best["n"], confidence=confidence))
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for variant, part in best.groupby("variant"):
        ax.errorbar(part["margin"], part["mean"], yerr=np.nan_to_num(part["half"]), marker="o",
                    capsize=3, label=variant, color=palette[variant], linewidth=1.2)
    reference_lines(ax, references)
    ax.set_xlabel("margin")
    ax.set_ylabel("validation MAP@R")
    ax.legend(fontsize=7, ncols=2)
    return save(fig, name="map_vs_margin", title=_TITLES[2], out_dir=out_dir,
                caption=f"Validation MAP@R against the margin per variant (best learning rate and other "
                        f"axes at each margin), with {confidence:.0%} t-intervals over (fold, seed) "
                        "units; dashed lines: the baselines' mean validation MAP@R (no margin).")


_TITLES = ("Sensitivity: margin x learning rate", "Sensitivity: loss weights",
           "MAP@R against margin")
