"""Sensitivity of validation MAP@R to the hyper-parameters (never to test metrics).

Each value is the mean validation MAP@R over the finished units of a configuration;
where other axes vary too, the best configuration over them. The runs given are the
trained variants' (the baselines are grey reference lines). A heatmap is drawn only
for two axes that both take several values, with a colour bar on every panel and
one colour scale for every heatmap of the report (the range of all trained
configurations' means, stated in the caption), so a small difference never fills the
whole scale. One varying axis gives a line with intervals; none gives a sentence.
A variant is never shown against a key it does not use (`unused_keys`: the margin of
batch_hard_soft; the memory weight of a run without memory).

Every other numeric config key that the grid sweeps (several values within one
variant: memory_size, memory_weight, sampler_k, ...; not the loss weights w_*, which
have their own heatmaps) gets the same figure as the margin, "MAP@R against KEY"
(map_vs_KEY), and a table (`sensitivity_table(runs, [KEY])`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from reports.curves import UNITS, clip_to_unit, reference_lines, shared_legend, style_of
from reports.figures import PAGE_WIDTH, Figure, columns_for, missing, panel_grid, save
from reports.leaderboard import SELECT_ON, finished
from reports.stats import t_half_width
from reports.variants import SEED, UNIT_COLUMNS, config_columns, is_combined, unused_keys

LABELS = {"margin": "margin", "lr": "learning rate", "memory_size": "memory size (0 = off)",
          "memory_weight": "memory weight", "memory_start_epoch": "memory start epoch"}
OWN_FIGURES = ("margin", "lr")  # axes with figures of their own (margin x lr, MAP@R against margin)
CMAP = "viridis"


def config_means(runs: pd.DataFrame) -> pd.DataFrame:
    """annotated runs -> one row per configuration: its config values (NaN for the keys it
    does not use), val MAP@R mean/std/n."""
    done = finished(runs)
    if done.empty:
        return pd.DataFrame(columns=["variant", "config_key", "mean", "std", "n"])
    stats = done.groupby(["variant", "config_key"])[SELECT_ON].agg(["mean", "std", "count"])
    first = done.drop_duplicates("config_key").set_index(["variant", "config_key"])
    first = first.drop(columns=[c for c in ("mean", "std") if c in first.columns])
    for index, row in first.iterrows():
        unused = [k for k in unused_keys(row) if k in first.columns and k != SEED]
        first.loc[[index], unused] = np.nan
    return first.join(stats.rename(columns={"count": "n"})).reset_index()


def best_over_other_axes(means: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """config means -> per (variant, *axes) the configuration with the highest mean."""
    order = means.sort_values(["mean", "config_key"], ascending=[False, True])
    return order.groupby(["variant", *axes], as_index=False, sort=True, dropna=False).head(1)


def sensitivity_table(runs: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """annotated runs, config keys -> variant, *axes (NaN where unused), mean val MAP@R (best over
    the other axes), n units."""
    means = config_means(runs)
    if means.empty or not set(axes) <= set(means.columns):
        return pd.DataFrame(columns=["variant", *axes, "val_map_at_r_mean", "n_units"])
    best = best_over_other_axes(means, axes)
    return (best[["variant", *axes, "mean", "n"]]
            .rename(columns={"mean": "val_map_at_r_mean", "n": "n_units"})
            .sort_values(["variant", *axes]).reset_index(drop=True))


def margin_lr_table(runs: pd.DataFrame) -> pd.DataFrame:
    """annotated runs -> variant, margin (NaN where unused), lr, mean val MAP@R (best over other
    axes), n units."""
    return sensitivity_table(runs, ["margin", "lr"])


def swept_axes(runs: pd.DataFrame) -> list[str]:
    """annotated runs -> the numeric config keys besides margin, lr, the loss weights (w_*) and the
    unit keys that take several values within one variant (keys a configuration does not use
    count as absent), sorted."""
    means = config_means(runs)
    if means.empty:
        return []
    out = []
    for key in config_columns(runs):
        if key in OWN_FIGURES or key in UNIT_COLUMNS or key.startswith("w_") or key not in means:
            continue
        values = means[key]
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            continue
        if int(values.groupby(means["variant"]).nunique().max()) > 1:
            out.append(key)
    return sorted(out)


def _values(frame: pd.DataFrame, key: str) -> list:
    return sorted(frame[key].dropna().unique()) if key in frame else []


def sensitivity_figures(runs: pd.DataFrame, *, out_dir: Path, styles: dict,
                        confidence: float, references: dict, progress=None) -> list[Figure]:
    """annotated runs of trained variants, {baseline name: mean validation MAP@R} ->
    margin x lr heatmaps (or MAP@R against the learning rate), loss-weight heatmaps,
    MAP@R against margin, then MAP@R against each of `swept_axes` (baselines as grey lines)."""
    say = progress or (lambda text: None)
    table = margin_lr_table(runs)
    if table.empty:
        reason = ("no finished run has a validation MAP@R" if finished(runs).empty
                  else "the runs table has no margin or lr column")
        return [missing(name="sensitivity_margin_lr", title=_TITLES[0], reason=reason),
                missing(name="sensitivity_weights", title=_TITLES[1], reason=reason),
                missing(name="map_vs_margin", title=_TITLES[2], reason=reason)]
    means = config_means(runs)
    scale = (float(means["mean"].min()), float(means["mean"].max()))
    margins, lrs = _values(table, "margin"), _values(table, "lr")
    single = [f"a single {LABELS[k]} ({v[0]:g})" for k, v in (("margin", margins), ("lr", lrs))
              if len(v) == 1]
    said = "the grid has " + " and ".join(single) if single else ""
    say("sensitivity heatmaps")
    if len(margins) > 1 and len(lrs) > 1:
        heatmap = _margin_lr(table, out_dir=out_dir, scale=scale)
    elif len(lrs) > 1:
        heatmap = _axis_lines(means, "lr", name="sensitivity_margin_lr", title="Sensitivity: "
                              "learning rate", out_dir=out_dir, styles=styles,
                              confidence=confidence, references=references, note=said)
    else:
        heatmap = missing(name="sensitivity_margin_lr", title=_TITLES[0], reason=(
            f"{said}: no margin x learning-rate grid to draw"
            + ("; validation MAP@R against the margin is the figure 'MAP@R against margin'"
               if len(margins) > 1 else "; each variant's validation MAP@R is the leaderboard's "
               "'val MAP@R' column")))
    lines = (_axis_lines(means, "margin", name="map_vs_margin", title=_TITLES[2], out_dir=out_dir,
                         styles=styles, confidence=confidence, references=references, note=said)
             if len(margins) > 1 else
             missing(name="map_vs_margin", title=_TITLES[2], reason=f"{said}: no curve to draw"))
    swept = [_axis_lines(means, key, name=f"map_vs_{key}", title=f"MAP@R against {LABELS.get(key, key)}",
                         out_dir=out_dir, styles=styles, confidence=confidence, references=references,
                         note="") for key in swept_axes(runs)]
    return [heatmap, _weights(means, out_dir=out_dir, scale=scale, confidence=confidence), lines, *swept]


def _scale_text(scale: tuple[float, float]) -> str:
    return (f"Colour scale: validation MAP@R {scale[0]:.3f} (dark) to {scale[1]:.3f} (yellow), the "
            "range of every trained configuration, shared by all heatmaps of this report.")


def _heatmap(ax, frame: pd.DataFrame, *, rows: str, cols: str, scale: tuple[float, float]) -> None:
    grid = frame.pivot_table(index=rows, columns=cols, values="mean", aggfunc="max")
    grid.index = [f"{v:g}" for v in grid.index]
    grid.columns = [f"{v:g}" for v in grid.columns]
    annotate = grid.size <= 36
    sns.heatmap(grid, ax=ax, annot=annotate, fmt=".3f", cmap=CMAP, vmin=scale[0], vmax=scale[1],
                cbar=True, cbar_kws={"label": "val MAP@R"}, annot_kws={"fontsize": 9},
                square=True)
    ax.set_xlabel(LABELS.get(cols, cols))
    ax.set_ylabel(LABELS.get(rows, rows))


def _heatmap_size(frames: list[tuple[pd.DataFrame, str, str]]) -> tuple[float, float]:
    """(frame, rows, cols) panels -> a panel size in inches fitting the largest grid's cells."""
    n_rows = max(f[r].nunique() for f, r, _ in frames)
    n_cols = max(f[c].nunique() for f, _, c in frames)
    return 0.75 * n_cols + 2.2, 0.6 * n_rows + 1.5


def _margin_lr(table: pd.DataFrame, *, out_dir: Path, scale: tuple[float, float]) -> Figure:
    frame = table.rename(columns={"val_map_at_r_mean": "mean"})
    no_margin = sorted(frame.loc[frame["margin"].isna(), "variant"].unique())
    frame = frame.dropna(subset=["margin"])
    variants = sorted(frame["variant"].unique())
    panels = [(frame[frame["variant"] == v], "margin", "lr") for v in variants]
    size = _heatmap_size(panels)
    fig, axes = panel_grid(len(variants), ncols=columns_for(len(variants), width=PAGE_WIDTH,
                                                            panel=size[0]), size=size)
    for ax, variant, (part, rows, cols) in zip(axes, variants, panels):
        _heatmap(ax, part, rows=rows, cols=cols, scale=scale)
        ax.set_title(variant, fontsize=9)
    skipped = (f" Not shown (no margin): {', '.join(no_margin)}." if no_margin else "")
    return save(fig, name="sensitivity_margin_lr", title=_TITLES[0], out_dir=out_dir,
                caption=f"Validation MAP@R (mean over finished {UNITS}) over margin x learning rate "
                        "per variant; where other axes vary, the best configuration over them. "
                        + _scale_text(scale) + skipped)


def _weight_axes(part: pd.DataFrame) -> list[str]:
    """One combined variant's config means -> the axes of its loss-weight panel: the varying
    weights, then margin or lr when only one weight varies (at most two)."""
    varying = [c for c in part.columns if c.startswith("w_") and part[c].nunique() > 1]
    if not varying:
        return []
    others = [c for c in ("margin", "lr") if c in part and part[c].nunique() > 1]
    return (varying + others)[:2]


def _weights(means: pd.DataFrame, *, out_dir: Path, scale: tuple[float, float],
             confidence: float) -> Figure:
    panels = []
    for variant in sorted(v for v in means["variant"].unique() if is_combined(v)):
        part = means[means["variant"] == variant]
        axes = _weight_axes(part)
        if axes:
            panels.append((variant, best_over_other_axes(part, axes), axes))
    if not panels:
        return missing(name="sensitivity_weights", title=_TITLES[1],
                       reason="no combined objective has loss weights (w_*) varied in the grid")
    grids = [(p, a[0], a[1]) for _, p, a in panels if len(a) == 2]
    size = _heatmap_size(grids) if grids else (4.2, 3.2)
    fig, axes = panel_grid(len(panels), ncols=columns_for(len(panels), width=PAGE_WIDTH,
                                                          panel=size[0]), size=size)
    spans = []
    for ax, (variant, part, keys) in zip(axes, panels):
        spans.append(f"{variant}: {part['mean'].max() - part['mean'].min():.3f}")
        if len(keys) == 2:
            _heatmap(ax, part, rows=keys[0], cols=keys[1], scale=scale)
        else:
            part = part.sort_values(keys[0])
            half = np.nan_to_num(t_half_width(part["std"], part["n"], confidence=confidence))
            ax.errorbar(part[keys[0]], part["mean"], yerr=half, marker="o", capsize=3, color="C0")
            ax.set_ylim(*_padded(scale))
            ax.set_xlabel(keys[0])
            ax.set_ylabel("validation MAP@R")
        ax.set_title(variant, fontsize=9)
    return save(fig, name="sensitivity_weights", title=_TITLES[1], out_dir=out_dir,
                caption="Validation MAP@R over the loss weights of combined objectives (fixed "
                        "weighting); best configuration over the other axes. " + _scale_text(scale)
                        + " Range within each panel: " + "; ".join(spans) + ".")


def _padded(scale: tuple[float, float]) -> tuple[float, float]:
    pad = max(0.01, 0.05 * (scale[1] - scale[0]))
    return scale[0] - pad, scale[1] + pad


def _axis_lines(means: pd.DataFrame, axis: str, *, name: str, title: str, out_dir: Path,
                styles: dict, confidence: float, references: dict, note: str) -> Figure:
    """MAP@R against one axis per variant (best over the other axes at each value, t-interval
    over units); a variant that does not use the axis, or has one value of it, is a dotted
    horizontal line in its colour; x dodged a little per variant so intervals do not overlap."""
    best = best_over_other_axes(means, [axis])
    best = best.assign(half=t_half_width(best["std"], best["n"], confidence=confidence))
    fig, axes = panel_grid(1, ncols=1, size=(PAGE_WIDTH, 4.4))
    ax = axes[0]
    variants = sorted(best["variant"].unique())
    values = _values(best, axis)
    log = axis != "margin" and values and values[0] > 0 and values[-1] / values[0] >= 10
    span = (np.log10(values[-1]) - np.log10(values[0])) if log else (values[-1] - values[0])
    flat = []
    for i, variant in enumerate(variants):
        part = best[best["variant"] == variant].sort_values(axis)
        style = style_of(styles, variant)
        if part[axis].notna().sum() < 2:
            flat.append(variant)
            ax.axhline(part["mean"].max(), color=style.get("color"), linestyle=":", linewidth=1.2,
                       label=f"{variant} (no {LABELS.get(axis, axis)})"
                       if part[axis].isna().all() else f"{variant} (one {LABELS.get(axis, axis)})")
            continue
        shift = (i - (len(variants) - 1) / 2) * 0.012 * (span or 1.0)
        x = part[axis].to_numpy(float)
        x = x * 10 ** shift if log else x + shift
        ax.errorbar(x, part["mean"], yerr=np.nan_to_num(part["half"]), capsize=3, label=variant,
                    linewidth=1.2, markersize=5, color=style.get("color"),
                    marker=style.get("marker") or "o")
    if log:
        ax.set_xscale("log")
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.minorticks_off()
    reference_lines(ax, references, styles)
    ax.set_xlabel(LABELS.get(axis, axis) + " (points dodged sideways per variant)")
    ax.set_ylabel("validation MAP@R")
    clip_to_unit(ax)
    shared_legend(fig, axes)
    return save(fig, name=name, title=title, out_dir=out_dir,
                caption=f"Validation MAP@R against the {LABELS.get(axis, axis)} per variant (best "
                        f"configuration over the other axes at each value), with {confidence:.0%} "
                        f"t-intervals over {UNITS}; points are moved sideways a little per variant so "
                        "their intervals stay apart. Dotted lines: variants without this key "
                        + (f"({', '.join(flat)})" if flat else "(none)")
                        + "; grey dashed lines: the baselines' mean validation MAP@R."
                        + (f" Also: {note}." if note else ""))


_TITLES = ("Sensitivity: margin x learning rate", "Sensitivity: loss weights",
           "MAP@R against margin")
