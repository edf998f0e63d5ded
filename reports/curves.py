"""Training curves of each variant's selected configuration: mean and t-band over seeds.

Figures: total loss, components of combined objectives (values and shares of the
weighted total), weights over time per weighting method, gradient norms per
component, and the triplet monitors (active fraction, pos_ratio, violation rate).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from reports.figures import Figure, missing, panel_grid, save
from reports.stats import t_half_width
from reports.variants import is_combined

MONITORS = ("active_fraction", "pos_ratio", "violation_rate")
VALIDATION_TITLE = "Validation MAP@R over epochs"
PANEL = (4.2, 3.0)


def seed_band(steps: pd.DataFrame, value: str, *, hue: str, confidence: float,
              max_points: int) -> pd.DataFrame:
    """steps rows (run_id, step, hue, value) -> per (hue, step bin): mean, low, high, n over runs.

    Steps are averaged within bins of equal width (at most `max_points` bins) per run
    first, then across runs (the seeds) with a Student-t band.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points!r}")
    frame = steps[["run_id", "step", hue, value]].replace([np.inf, -np.inf], np.nan)
    frame = frame.dropna(subset=[value])
    if frame.empty:
        return pd.DataFrame(columns=[hue, "step", "mean", "low", "high", "n"])
    width = max(1, int(np.ceil((frame["step"].max() + 1) / max_points)))
    frame = frame.assign(step=(frame["step"] // width) * width)
    per_run = frame.groupby([hue, "run_id", "step"], as_index=False)[value].mean()
    agg = per_run.groupby([hue, "step"], as_index=False)[value].agg(["mean", "std", "count"])
    half = t_half_width(agg["std"], agg["count"], confidence=confidence)
    return pd.DataFrame({hue: agg[hue], "step": agg["step"], "mean": agg["mean"],
                         "low": agg["mean"] - half, "high": agg["mean"] + half,
                         "n": agg["count"]})


def _draw_bands(ax, band: pd.DataFrame, *, hue: str, palette: dict) -> None:
    """Mean lines (seaborn) and the t-band of each `hue` level on one axis; a level with a
    single point (one evaluation) is drawn as a marker with its interval as an error bar."""
    sns.lineplot(data=band, x="step", y="mean", hue=hue, palette=palette, errorbar=None,
                 ax=ax, linewidth=1.3)
    for level, part in band.groupby(hue):
        if len(part) == 1:
            x, mean = part["step"].to_numpy(float), part["mean"].to_numpy(float)
            low = np.nan_to_num(part["low"].to_numpy(float), nan=mean[0])
            high = np.nan_to_num(part["high"].to_numpy(float), nan=mean[0])
            ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="o", color=palette[level],
                        capsize=3, label=level)
        elif part["low"].notna().any():
            ax.fill_between(part["step"], part["low"], part["high"], color=palette[level],
                            alpha=0.2, linewidth=0)
    ax.set_ylabel("")
    if ax.get_legend() is not None:
        ax.get_legend().remove()   # one legend for the whole figure (see _shared_legend)


def _panels(steps: pd.DataFrame, panels: list[tuple[str, str, pd.DataFrame]], *, hue: str,
            palette: dict, confidence: float, max_points: int):
    """[(panel title, value column, rows)] -> figure with one banded panel each."""
    fig, axes = panel_grid(len(panels), ncols=3, size=PANEL)
    for ax, (title, value, rows) in zip(axes, panels):
        band = seed_band(rows, value, hue=hue, confidence=confidence, max_points=max_points)
        if band.empty:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        else:
            _draw_bands(ax, band, hue=hue, palette=palette)
        ax.set_title(title, fontsize=9)
    _shared_legend(fig, axes)
    return fig


def _shared_legend(fig, axes) -> None:
    """One legend below the panels, with every label drawn in any of them."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="upper center", fontsize=8,
                   bbox_to_anchor=(0.5, 0.0), ncols=min(4, len(entries)), frameon=False)


def _present(steps: pd.DataFrame, prefix: str) -> list[str]:
    """Columns `prefix<component>` of steps with at least one finite value."""
    return [c for c in steps.columns if c.startswith(prefix)
            and np.isfinite(steps[c].to_numpy(dtype=float)).any()]


def curve_figures(steps: pd.DataFrame, *, out_dir: Path, palette: dict, confidence: float,
                  max_points: int) -> list[Figure]:
    """steps of the selected runs (with a `variant` column) -> the curve figures."""
    kw = dict(out_dir=out_dir)
    band_kw = dict(hue="variant", palette=palette, confidence=confidence, max_points=max_points)
    ci_text = f"Mean over seeds with a {confidence:.0%} t-band (selected configuration per variant)."
    if steps.empty:
        reason = "no step logs for the selected configurations (no run finished)"
        return [missing(name=n, title=t, reason=reason) for n, t in _TITLES.items()]
    variants = sorted(steps["variant"].unique())
    out = []
    fig = _panels(steps, [(v, "loss", steps[steps["variant"] == v]) for v in variants], **band_kw)
    out.append(save(fig, name="loss_curves", title=_TITLES["loss_curves"],
                    caption=f"Total back-propagated loss per variant over steps. {ci_text}", **kw))
    combined = steps[steps["variant"].map(is_combined)]
    components = _present(combined, "loss_")
    if combined.empty or not components:
        reason = "the grid has no combined objective with logged components"
        out += [missing(name=n, title=_TITLES[n], reason=reason)
                for n in ("components", "component_shares", "weights")]
    else:
        fig = _panels(combined, [(c[5:], c, combined) for c in components], **band_kw)
        out.append(save(fig, name="components", title=_TITLES["components"],
                        caption=f"Unweighted components of combined objectives, side by side. {ci_text}",
                        **kw))
        out.append(_shares(combined, components, **kw))
        weights = _present(combined, "weight_")
        if weights:
            out.append(_weights(combined, weights, confidence=confidence, max_points=max_points, **kw))
        else:
            out.append(missing(name="weights", title=_TITLES["weights"],
                               reason="no weight_<component> values were logged"))
    norms = _present(steps, "gradnorm_")
    if not norms:
        out.append(missing(name="grad_norms", title=_TITLES["grad_norms"],
                           reason="no weighting method of the selected runs computed gradient norms"))
    else:
        fig = _panels(steps, [(c[9:], c, steps) for c in norms], **band_kw)
        out.append(save(fig, name="grad_norms", title=_TITLES["grad_norms"],
                        caption=f"Gradient norm per component (where the weighting method computes it). "
                                f"{ci_text}", **kw))
    monitors = [m for m in MONITORS if m in steps.columns]
    if not monitors:
        out.append(missing(name="monitors", title=_TITLES["monitors"],
                           reason=f"the step logs have none of the columns {', '.join(MONITORS)}"))
        return out
    fig = _panels(steps, [(m, m, steps) for m in monitors], **band_kw)
    for ax in fig.axes:
        ax.set_ylim(-0.03, 1.03)   # shares: the t-band may overshoot [0, 1] with few seeds
    out.append(save(fig, name="monitors", title=_TITLES["monitors"],
                    caption="Share of active items (loss > 0), of triplets with d_ap < d_an, and of "
                            "triplets violating the margin. Collapse shows as violation_rate stuck at 1; a "
                            f"miner out of hard triplets as active_fraction near 0. {ci_text}", **kw))
    return out


def reference_lines(ax, references: dict) -> None:
    """{label: value} -> dashed horizontal lines (the baselines), labelled for the legend."""
    styles = ("--", ":", "-.")
    for i, (label, value) in enumerate(sorted(references.items())):
        if np.isfinite(value):
            ax.axhline(value, color="0.25", linestyle=styles[i % len(styles)], linewidth=1.2,
                       label=f"{label} {value:.3f}")


def validation_figure(epochs: pd.DataFrame, *, out_dir: Path, palette: dict,
                      confidence: float, references: dict) -> Figure:
    """epochs of the selected runs (with `variant`), {baseline label: its mean validation
    MAP@R} -> validation MAP@R over epochs, t-band, baselines as reference lines."""
    if epochs.empty or "val_map_at_r" not in epochs.columns:
        return missing(name="validation_curves", title=VALIDATION_TITLE,
                       reason="no validation evaluations stored for the selected configurations")
    rows = epochs.rename(columns={"step": "step_logged"}).rename(columns={"epoch": "step"})
    fig, axes = panel_grid(1, ncols=1, size=(6.5, 4.0))
    band = seed_band(rows, "val_map_at_r", hue="variant", confidence=confidence,
                     max_points=int(rows["step"].max()) + 1)
    _draw_bands(axes[0], band, hue="variant", palette=palette)
    reference_lines(axes[0], references)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("validation MAP@R")
    _shared_legend(fig, axes)
    return save(fig, name="validation_curves", title=VALIDATION_TITLE, out_dir=out_dir,
                caption=f"Validation MAP@R at each evaluation (the selection metric) of each "
                        f"variant's selected configuration; mean over (fold, seed) units with a "
                        f"{confidence:.0%} t-band (a marker with its interval where there is one "
                        "evaluation); dashed lines: the baselines' mean validation MAP@R.")


def _shares(combined: pd.DataFrame, components: list[str], *, out_dir: Path) -> Figure:
    """Stacked shares w_c * L_c / sum_c w_c * L_c of each combined variant over steps."""
    variants = sorted(combined["variant"].unique())
    fig, axes = panel_grid(len(variants), ncols=3, size=PANEL)
    for ax, variant in zip(axes, variants):
        rows = combined[combined["variant"] == variant]
        parts = {}
        for col in components:
            weight = rows.get("weight_" + col[5:], pd.Series(1.0, index=rows.index)).fillna(1.0)
            parts[col[5:]] = (rows[col] * weight).abs()
        frame = pd.DataFrame(parts).assign(step=rows["step"]).groupby("step").mean()
        frame = frame.loc[:, frame.notna().any()].fillna(0.0)
        total = frame.sum(axis=1).replace(0.0, np.nan)
        shares = frame.div(total, axis=0).fillna(0.0)
        ax.stackplot(shares.index, shares.T.to_numpy(), labels=shares.columns, alpha=0.85)
        ax.set_ylim(0, 1)
        ax.set_title(variant, fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    return save(fig, name="component_shares", title=_TITLES["component_shares"],
                caption="Share of each weighted component |w_c L_c| in their sum, mean over seeds per "
                        "step (weight 1 where a method logs none).", out_dir=out_dir)


def _weights(combined: pd.DataFrame, weights: list[str], *, out_dir: Path, confidence: float,
             max_points: int) -> Figure:
    """Weights of each component over steps, one panel per weighting method (variant)."""
    variants = sorted(combined["variant"].unique())
    long = combined.melt(id_vars=["run_id", "step", "variant"], value_vars=weights,
                         var_name="component", value_name="weight")
    long["component"] = long["component"].str[len("weight_"):]
    palette = dict(zip(sorted(long["component"].unique()), sns.color_palette("Set2")))
    panels = [(v, "weight", long[long["variant"] == v]) for v in variants]
    fig = _panels(long, panels, hue="component", palette=palette, confidence=confidence,
                  max_points=max_points)
    return save(fig, name="weights", title=_TITLES["weights"],
                caption=f"Weight of each component over steps, per weighting method; mean over seeds "
                        f"with a {confidence:.0%} t-band.", out_dir=out_dir)


_TITLES = {
    "loss_curves": "Loss curves",
    "components": "Components of combined objectives",
    "component_shares": "Component shares of the total",
    "weights": "Weights over time per weighting method",
    "grad_norms": "Gradient norms per component",
    "monitors": "Training monitors",
}
