"""Training curves of each variant's selected configuration: mean and t-band over (fold, seed) units.

Figures: total loss, components of combined objectives (values and shares of the
weighted total), weights over time per weighting method, gradient norms per
component, and the triplet monitors (active fraction, pos_ratio, violation rate).
Every line has its variant's style (reports/figures.py variant_styles); lines that
coincide get staggered markers and a note in the caption naming them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from reports.figures import PAGE_WIDTH, Figure, columns_for, missing, panel_grid, save
from reports.stats import t_half_width
from reports.variants import is_combined

MONITORS = ("active_fraction", "pos_ratio", "violation_rate")
VALIDATION_TITLE = "Validation MAP@R over epochs"
PANEL = (3.5, 2.8)
UNITS = "(fold, seed) units"
COINCIDE_TOL = 1e-3   # curves whose means differ by at most this at every shared step coincide


def seed_band(steps: pd.DataFrame, value: str, *, hue: str, confidence: float,
              max_points: int) -> pd.DataFrame:
    """steps rows (run_id, step, hue, value) -> per (hue, step bin): mean, low, high, n over runs.

    Steps are averaged within bins of equal width (at most `max_points` bins) per run
    first, then across runs (the (fold, seed) units) with a Student-t band.
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


def style_of(styles: dict, level) -> dict:
    """styles (level -> line keywords, or a bare colour) -> the keywords of one level."""
    style = styles.get(level, {})
    return dict(color=style) if isinstance(style, str) or isinstance(style, tuple) else dict(style)


def coinciding(band: pd.DataFrame, *, hue: str) -> list[list[str]]:
    """A band -> groups (2 or more levels) whose mean curves coincide: on the steps they share
    (at least one) their means differ by at most COINCIDE_TOL."""
    curves = {lvl: part.set_index("step")["mean"] for lvl, part in band.groupby(hue)}
    groups: list[list[str]] = []
    for level in sorted(curves, key=str):
        for group in groups:
            a, b = curves[group[0]], curves[level]
            shared = a.index.intersection(b.index)
            if len(shared) and np.nanmax(np.abs(a[shared] - b[shared])) <= COINCIDE_TOL:
                group.append(level)
                break
        else:
            groups.append([level])
    return [g for g in groups if len(g) > 1]


def _draw_bands(ax, band: pd.DataFrame, *, hue: str, styles: dict) -> list[list[str]]:
    """Mean line and t-band of each `hue` level on one axis (a level with one point: a marker
    with its interval as an error bar) -> the groups of levels whose lines coincide. Markers are
    staggered along the lines so that coinciding lines all stay visible."""
    levels = sorted(band[hue].unique(), key=str)
    for i, level in enumerate(levels):
        part = band[band[hue] == level].sort_values("step")
        style = style_of(styles, level)
        x, mean = part["step"].to_numpy(float), part["mean"].to_numpy(float)
        if len(part) == 1:
            low = np.nan_to_num(part["low"].to_numpy(float), nan=mean[0])
            high = np.nan_to_num(part["high"].to_numpy(float), nan=mean[0])
            ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt=style.get("marker") or "o",
                        color=style.get("color"), capsize=3, label=str(level))
            continue
        every = max(1, len(part) // 6)
        ax.plot(x, mean, label=str(level), linewidth=1.3, markersize=4,
                markevery=(i * every // max(1, len(levels)) % every, every),
                **{k: v for k, v in style.items() if v is not None})
        if part["low"].notna().any():
            ax.fill_between(x, part["low"], part["high"], color=style.get("color"), alpha=0.15,
                            linewidth=0)
    return coinciding(band, hue=hue)


def _coincide_note(notes: list[tuple[str, list[str]]]) -> str:
    """[(panel, group)] -> ' Lines that coincide (markers staggered): ...' or ''."""
    if not notes:
        return ""
    return (" Lines that coincide (markers staggered so each shows): "
            + "; ".join(f"{', '.join(map(str, g))} in '{panel}'" for panel, g in notes) + ".")


def _panels(panels: list[tuple[str, str, pd.DataFrame]], *, hue: str, styles: dict,
            confidence: float, max_points: int, ylabel: str, xlabel: str = "step"):
    """[(panel title, value column, rows)] -> (figure with one banded panel each, coincide notes)."""
    fig, axes = panel_grid(len(panels), ncols=columns_for(len(panels), width=PAGE_WIDTH,
                                                          panel=PANEL[0]), size=PANEL)
    notes = []
    for ax, (title, value, rows) in zip(axes, panels):
        band = seed_band(rows, value, hue=hue, confidence=confidence, max_points=max_points)
        if band.empty:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        else:
            notes += [(title, g) for g in _draw_bands(ax, band, hue=hue, styles=styles)]
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel if ylabel else value)
    shared_legend(fig, axes)
    return fig, notes


def shared_legend(fig, axes, *, title: str = "") -> None:
    """One legend below the panels, with every label drawn in any of them (baselines last)."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        width = fig.get_size_inches()[0]
        ncols = max(1, min(len(entries), int(width // 2.2)))
        fig.legend(list(entries.values()), list(entries), loc="upper center", fontsize=8,
                   bbox_to_anchor=(0.5, 0.0), ncols=ncols, frameon=False, title=title or None)


def _present(steps: pd.DataFrame, prefix: str) -> list[str]:
    """Columns `prefix<component>` of steps with at least one finite value."""
    return [c for c in steps.columns if c.startswith(prefix)
            and np.isfinite(steps[c].to_numpy(dtype=float)).any()]


def curve_figures(steps: pd.DataFrame, *, out_dir: Path, styles: dict, confidence: float,
                  max_points: int, progress=None) -> list[Figure]:
    """steps of the selected runs (with a `variant` column) -> the curve figures."""
    say = progress or (lambda text: None)
    kw = dict(out_dir=out_dir)
    band_kw = dict(hue="variant", styles=styles, confidence=confidence, max_points=max_points)
    ci_text = (f"Mean over {UNITS} with a {confidence:.0%} t-band (selected configuration per "
               "variant).")
    if steps.empty:
        reason = "no step logs for the selected configurations (no run finished)"
        return [missing(name=n, title=t, reason=reason) for n, t in _TITLES.items()]
    variants = sorted(steps["variant"].unique())
    out = []
    say(f"loss curves ({len(variants)} panels)")
    fig, notes = _panels([(v, "loss", steps[steps["variant"] == v]) for v in variants],
                         ylabel="total loss", **band_kw)
    out.append(save(fig, name="loss_curves", title=_TITLES["loss_curves"],
                    caption=f"Total back-propagated loss per variant over steps (each panel its own "
                            f"y scale). {ci_text}", **kw))
    combined = steps[steps["variant"].map(is_combined)]
    components = _present(combined, "loss_")
    if combined.empty or not components:
        reason = "the grid has no combined objective with logged components"
        out += [missing(name=n, title=_TITLES[n], reason=reason)
                for n in ("components", "component_shares", "weights")]
    else:
        say(f"components ({len(components)} panels)")
        fig, notes = _panels([(c[5:], c, combined) for c in components],
                             ylabel="unweighted loss", **band_kw)
        out.append(save(fig, name="components", title=_TITLES["components"],
                        caption=f"Unweighted components of combined objectives, side by side. "
                                f"{ci_text}{_coincide_note(notes)}", **kw))
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
        say(f"gradient norms ({len(norms)} panels)")
        fig, notes = _panels([(c[9:], c, steps) for c in norms], ylabel="gradient norm", **band_kw)
        out.append(save(fig, name="grad_norms", title=_TITLES["grad_norms"],
                        caption=f"Gradient norm per component (where the weighting method computes it). "
                                f"{ci_text}{_coincide_note(notes)}", **kw))
    monitors = [m for m in MONITORS if m in steps.columns]
    if not monitors:
        out.append(missing(name="monitors", title=_TITLES["monitors"],
                           reason=f"the step logs have none of the columns {', '.join(MONITORS)}"))
        return out
    say(f"monitors ({len(monitors)} panels)")
    fig, notes = _panels([(m, m, steps) for m in monitors], ylabel="share of the batch", **band_kw)
    for ax in fig.axes:
        if ax.get_visible() and ax.has_data():
            ax.set_ylim(-0.03, 1.03)   # shares: the t-band may overshoot [0, 1] with few units
    out.append(save(fig, name="monitors", title=_TITLES["monitors"],
                    caption="Share of active items (loss > 0), of triplets with d_ap < d_an, and of "
                            "triplets violating the margin. Collapse shows as violation_rate stuck at 1; a "
                            f"miner out of hard triplets as active_fraction near 0. {ci_text}"
                            f"{_coincide_note(notes)}", **kw))
    return out


def clip_to_unit(ax) -> None:
    """A metric axis in [0, 1]: y limits clipped to [-0.02, 1.02] (intervals over few units
    may reach beyond)."""
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, -0.02), min(high, 1.02))


def reference_lines(ax, references: dict, styles: dict) -> None:
    """{baseline name: value} -> horizontal lines in each baseline's neutral (grey, dashed)
    style, labelled '<name> (baseline) <value>' for the legend."""
    for name, value in sorted(references.items()):
        if np.isfinite(value):
            style = style_of(styles, name)
            ax.axhline(value, color=style.get("color", "0.3"),
                       linestyle=style.get("linestyle", "--"), linewidth=1.2,
                       label=f"{name} (baseline) {value:.3f}")


def validation_figure(epochs: pd.DataFrame, *, out_dir: Path, styles: dict,
                      confidence: float, references: dict) -> Figure:
    """epochs of the selected runs (with `variant`), {baseline name: its mean validation
    MAP@R} -> validation MAP@R over epochs, t-band, baselines as reference lines."""
    if epochs.empty or "val_map_at_r" not in epochs.columns:
        return missing(name="validation_curves", title=VALIDATION_TITLE,
                       reason="no validation evaluations stored for the selected configurations")
    rows = epochs.rename(columns={"step": "step_logged"}).rename(columns={"epoch": "step"})
    fig, axes = panel_grid(1, ncols=1, size=(PAGE_WIDTH, 4.2))
    band = seed_band(rows, "val_map_at_r", hue="variant", confidence=confidence,
                     max_points=int(rows["step"].max()) + 1)
    notes = [("validation MAP@R", g) for g in _draw_bands(axes[0], band, hue="variant",
                                                           styles=styles)]
    reference_lines(axes[0], references, styles)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("validation MAP@R")
    clip_to_unit(axes[0])
    shared_legend(fig, axes)
    return save(fig, name="validation_curves", title=VALIDATION_TITLE, out_dir=out_dir,
                caption=f"Validation MAP@R at each evaluation (the selection metric) of each "
                        f"variant's selected configuration; mean over {UNITS} with a "
                        f"{confidence:.0%} t-band (a marker with its interval where there is one "
                        "evaluation); grey dashed lines: the baselines' mean validation MAP@R."
                        + _coincide_note(notes))


def _shares(combined: pd.DataFrame, components: list[str], *, out_dir: Path) -> Figure:
    """Stacked shares w_c * L_c / sum_c w_c * L_c of each combined variant over steps."""
    import matplotlib

    variants = sorted(combined["variant"].unique())
    fig, axes = panel_grid(len(variants), ncols=columns_for(len(variants), width=PAGE_WIDTH,
                                                            panel=PANEL[0]), size=PANEL)
    names = [c[5:] for c in components]
    colours = dict(zip(names, matplotlib.colormaps["Set2"].colors))
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
        ax.stackplot(shares.index, shares.T.to_numpy(), labels=shares.columns, alpha=0.85,
                     colors=[colours[c] for c in shares.columns])
        ax.set_ylim(0, 1)
        ax.set_title(variant, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("share of the weighted total")
    shared_legend(fig, axes, title="component")
    return save(fig, name="component_shares", title=_TITLES["component_shares"],
                caption=f"Share of each weighted component |w_c L_c| in their sum, mean over {UNITS} "
                        "per step (weight 1 where a method logs none).", out_dir=out_dir)


def _weights(combined: pd.DataFrame, weights: list[str], *, out_dir: Path, confidence: float,
             max_points: int) -> Figure:
    """Weights of each component over steps, one panel per weighting method (variant)."""
    import matplotlib

    variants = sorted(combined["variant"].unique())
    long = combined.melt(id_vars=["run_id", "step", "variant"], value_vars=weights,
                         var_name="component", value_name="weight")
    long["component"] = long["component"].str[len("weight_"):]
    names = sorted(long["component"].unique())
    styles = {c: dict(color=colour, marker=marker, linestyle=dash) for c, colour, marker, dash in
              zip(names, matplotlib.colormaps["Dark2"].colors, "osD^v", ("-", "--", "-.", ":", "-"))}
    panels = [(v, "weight", long[long["variant"] == v]) for v in variants]
    fig, notes = _panels(panels, hue="component", styles=styles, confidence=confidence,
                         max_points=max_points, ylabel="weight")
    return save(fig, name="weights", title=_TITLES["weights"],
                caption=f"Weight of each component over steps, per weighting method; mean over "
                        f"{UNITS} with a {confidence:.0%} t-band.{_coincide_note(notes)}",
                out_dir=out_dir)


_TITLES = {
    "loss_curves": "Loss curves",
    "components": "Components of combined objectives",
    "component_shares": "Component shares of the total",
    "weights": "Weights over time per weighting method",
    "grad_norms": "Gradient norms per component",
    "monitors": "Training monitors",
}
