"""A report figure: drawn and saved as PNG + SVG, or recorded as missing with the reason."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 110


@dataclass(frozen=True)
class Figure:
    """One figure of the report; `png` is None and `reason` says why when it was not drawn."""

    name: str          # file stem under figures/
    title: str
    caption: str
    png: bytes | None = None
    reason: str = ""


def save(fig, *, name: str, title: str, caption: str, out_dir: Path) -> Figure:
    """A matplotlib figure -> figures/<name>.png and .svg written, Figure with the PNG bytes."""
    fig.tight_layout()
    buffer = io.BytesIO()
    # bbox "tight": keeps legends placed outside the axes (below the panels) in the image
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    fig.savefig(out_dir / f"{name}.svg", format="svg", bbox_inches="tight")
    plt.close(fig)
    png = buffer.getvalue()
    (out_dir / f"{name}.png").write_bytes(png)
    return Figure(name=name, title=title, caption=caption, png=png)


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
