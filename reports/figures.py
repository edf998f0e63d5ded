"""A report figure: drawn and saved as PNG + SVG, or recorded as missing with the reason.

Also the figures' shared look: `variant_styles` gives every variant a colour, marker
and line style (trained variants from a qualitative palette whose neighbours stay
distinct for up to 18 variants; every baseline grey and dashed), and `layout_problems`
checks a drawn figure (a legend over an axis, an axis without labels) before it is saved.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 110
PAGE_WIDTH = 10.5   # inches: a figure at the full width of the report page (1200 px at DPI 110)
# tab20 without its greys (kept for the baselines): the nine dark hues, then the nine light
# ones in an order that keeps each light hue away from the one before it. Neighbours differ
# by CIE76 Delta E >= 32, any two of the first 16 by >= 16 (tests/test_reports_layout.py).
_TAB20_ORDER = (0, 2, 4, 6, 8, 10, 12, 16, 18, 1, 3, 5, 7, 9, 17, 11, 19, 13)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p", "d", "8", "H", "o", "s", "^")
BASELINE_COLOURS = ("0.25", "0.5", "0.35", "0.6", "0.15", "0.45")
BASELINE_DASHES = ("--", (0, (6, 2, 1, 2)), (0, (2, 2)), (0, (8, 3)), (0, (4, 1, 1, 1, 1, 1)),
                   (0, (1, 1)))


def variant_palette(n: int) -> list[tuple[float, float, float]]:
    """n -> n RGB colours for trained variants, neighbours distinct (cycles beyond 18)."""
    colours = matplotlib.colormaps["tab20"].colors
    return [colours[_TAB20_ORDER[i % len(_TAB20_ORDER)]] for i in range(n)]


def variant_styles(variants, baselines) -> dict[str, dict]:
    """variant names, the baseline names among them -> name -> matplotlib line keywords
    (color, marker, linestyle). Trained variants, sorted: a palette colour and a marker each,
    solid; baselines, sorted: a grey and a dash pattern each, no marker."""
    baselines = set(baselines)
    trained = sorted(v for v in set(variants) if v not in baselines)
    styles = {v: dict(color=c, marker=MARKERS[i % len(MARKERS)], linestyle="-")
              for i, (v, c) in enumerate(zip(trained, variant_palette(len(trained))))}
    for i, v in enumerate(sorted(set(variants) & baselines)):
        styles[v] = dict(color=BASELINE_COLOURS[i % len(BASELINE_COLOURS)], marker=None,
                         linestyle=BASELINE_DASHES[i % len(BASELINE_DASHES)])
    return styles


@dataclass(frozen=True)
class Figure:
    """One figure of the report; `png` is None and `reason` says why when it was not drawn."""

    name: str          # file stem under figures/
    title: str
    caption: str
    png: bytes | None = None
    reason: str = ""
    colorbars: int = 0                  # colour bars drawn
    problems: tuple[str, ...] = ()      # layout_problems found before saving
    size_px: tuple[int, int] = (0, 0)   # (width, height) of the PNG
    alt: str = ""                       # the image's alt text (default: the title)


def colorbar_count(fig) -> int:
    """A matplotlib figure -> the number of colour bars on it."""
    return sum(getattr(ax, "_colorbar", None) is not None for ax in fig.axes)


def layout_problems(fig) -> list[str]:
    """A drawn matplotlib figure -> what a reader would trip over: a legend overlapping any
    visible axis (bounding boxes from the renderer), a visible axis with data and no x or y label.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    legends = list(fig.legends) + [ax.get_legend() for ax in axes if ax.get_legend() is not None]
    out = []
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in axes:
            if box.overlaps(ax.get_window_extent(renderer)):
                out.append(f"legend '{legend.get_title().get_text()}' overlaps the axis "
                           f"'{ax.get_title() or ax.get_label()}'")
    for ax in axes:
        if getattr(ax, "_colorbar", None) is not None:
            if not ax.get_ylabel() and not ax.get_xlabel():
                out.append("colour bar without a label")
            continue
        if not ax.has_data():
            continue
        for which, label in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())):
            if not label:
                out.append(f"axis '{ax.get_title()}' has no {which} label")
    return out


def save(fig, *, name: str, title: str, caption: str, out_dir: Path,
         layout: bool = True, alt: str = "") -> Figure:
    """A matplotlib figure -> figures/<name>.png and .svg written, Figure with the PNG bytes
    (tight_layout first unless `layout` is False: the caller laid it out)."""
    if layout:
        fig.tight_layout()
    problems, colorbars = tuple(layout_problems(fig)), colorbar_count(fig)
    buffer = io.BytesIO()
    # bbox "tight": keeps legends placed outside the axes (below or beside the panels) in the image
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    fig.savefig(out_dir / f"{name}.svg", format="svg", bbox_inches="tight")
    plt.close(fig)
    png = buffer.getvalue()
    (out_dir / f"{name}.png").write_bytes(png)
    size = (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big"))   # IHDR
    return Figure(name=name, title=title, caption=caption, png=png, colorbars=colorbars,
                  problems=problems, size_px=size, alt=alt)


def missing(*, name: str, title: str, reason: str) -> Figure:
    """A figure that could not be drawn, with the reason the report shows in its place."""
    return Figure(name=name, title=title, caption="", png=None, reason=reason)


def panel_grid(n: int, *, ncols: int, size: tuple[float, float]):
    """n panels -> (figure, flat list of n axes) in a grid of `ncols` columns; spare axes hidden."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows),
                             squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def columns_for(n: int, *, width: float, panel: float) -> int:
    """n panels of `panel` inches, a page `width` inches wide -> columns (at least 1)."""
    return max(1, min(n, int(width // panel)))
