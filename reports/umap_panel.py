"""UMAP projections of the test embeddings of each variant's selected run, in one panel grid.

Panels are square, in a grid computed from their number; the best variant comes
first, then the baselines, then the other variants in leaderboard order. Up to 18
classes get distinct colours and a legend beside the panels; more are coloured along
a continuous colour map with a colour bar (the caption says so).

`umap` is imported on the first figure of a process and kept (`import_umap`): its
import and its first fit compile numba code, paid once per process; nothing else in
tripletlab pays it. While umap is imported and fitted, `numba.njit` defaults to
`cache=True` (`numba_cache_on`): umap marks only one of its functions so, and its fit's
functions are compiled again by every process otherwise. Measured on the loaded 2-core
machine (300 points): a second process took 31 s to import and 83 s for the first fit
without it, 11 s and 0.1 s with it. Numba keeps the cache beside the package, or where
that is not writable in its user-wide cache (NUMBA_CACHE_DIR moves it).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from reports.figures import PAGE_WIDTH, Figure, missing, panel_grid, save, variant_palette
from reports.leaderboard import finished
from reports.variants import FOLD, SEED, unused_keys

NAME, TITLE = "umap", "UMAP of test embeddings (selected run per variant)"
PANEL = 2.3            # inches per square panel
MAX_LEGEND_CLASSES = 18
CONTINUOUS = "turbo"
_UMAP: list = []       # the imported module, once per process


@contextlib.contextmanager
def numba_cache_on():
    """Within: `numba.njit` caches compiled code on disk unless told otherwise (cache=True),
    so a new process loads what an earlier one compiled; numba.njit restored on exit."""
    try:
        import numba
    except ImportError:
        yield
        return
    original = numba.njit

    def njit(*args, **kwargs):
        kwargs.setdefault("cache", True)
        return original(*args, **kwargs)

    numba.njit = njit
    try:
        yield
    finally:
        numba.njit = original


def import_umap():
    """The umap module, imported once per process (under numba_cache_on)."""
    if not _UMAP:
        with numba_cache_on(), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # numba: "cannot cache" for a few closures
            import umap

        _UMAP.append(umap)
    return _UMAP[0]


def pick_embeddings(selected_runs: dict, embeddings) -> tuple[dict, list[str]]:
    """variant -> runs of its selected config, getter -> ({variant: (run_id, fold, seed, X, y)},
    notes). The run of the lowest finished (fold, seed) whose embeddings load; seed None for a
    run whose config does not use the seed (a seed-free baseline); a note for every variant
    without one."""
    picked, notes = {}, []
    for variant, runs in sorted(selected_runs.items()):
        done = finished(runs)
        order = [c for c in (FOLD, SEED) if c in done.columns]
        for row in (done.sort_values(order) if order else done).to_dict("records"):
            try:
                x, y = embeddings(row["run_id"])
            except Exception as error:  # noqa: BLE001 - any unreadable file is "missing"
                notes.append(f"{variant}: embeddings of run {row['run_id']} (seed {row.get(SEED)}) "
                             f"could not be read ({type(error).__name__}: {error})")
                continue
            seed = None if SEED in unused_keys(row) else int(row[SEED])
            picked[variant] = (row["run_id"], int(row.get(FOLD, 0) or 0), seed, np.asarray(x),
                               np.asarray(y))
            break
        else:
            notes.append(f"{variant}: no test embeddings for any finished run of its selected "
                         "configuration; panel left out")
    return picked, notes


def panel_order(picked: dict, *, ranked: list[str], baselines: list[str]) -> list[str]:
    """The variants with embeddings -> panel order: the best variant (ranked[0]), the baselines
    (in the given order), the other ranked variants, then any other in name order."""
    head = [v for v in ranked[:1] + list(baselines) + ranked[1:] if v in picked]
    return head + sorted(v for v in picked if v not in head)


def panel_sequence(picked: dict, order: list[str]) -> list[str]:
    """The given order restricted to the picked variants, any other picked one after it."""
    return [v for v in order if v in picked] + sorted(v for v in picked if v not in order)


def subsample(n: int, *, max_points: int, random_state: int) -> np.ndarray:
    """n points -> the indices shown: all when n <= max_points, else a fixed random subset."""
    keep = np.random.default_rng(random_state).permutation(n)[:max_points]
    return np.sort(keep)


def umap_figure(picked: dict, *, order: list[str], baselines, out_dir: Path, random_state: int,
                n_epochs: int, max_points: int, progress=None, project=None) -> Figure:
    """{variant: (run_id, fold, seed, X (N, E), y (N,))}, the panel order -> one figure of 2-D
    UMAP panels coloured by class. `project` (x (N, E) -> (N, 2)) replaces UMAP: a fast path
    for tests of the layout; the caption then names it."""
    if not picked:
        return missing(name=NAME, title=TITLE,
                       reason="no selected run has stored test embeddings")
    if progress:
        progress(f"UMAP ({len(picked)} panels; the first report on a machine compiles numba code)")
    if project is None:
        try:
            umap = import_umap()
        except ImportError as error:
            return missing(name=NAME, title=TITLE, reason=f"umap-learn is not importable: {error}")

        def project(x):
            return _project(umap, x, random_state=random_state, n_epochs=n_epochs)
        method = (f"UMAP (umap-learn, random_state={random_state}, n_epochs={n_epochs}, exact "
                  "Euclidean kNN graph)")
    else:
        method = f"{getattr(project, '__name__', 'a given projection')} (UMAP replaced)"
    order = panel_sequence(picked, order) + sorted(v for v in picked if v not in order)
    classes = np.unique(np.concatenate([p[4] for p in picked.values()]))
    legend = len(classes) <= MAX_LEGEND_CLASSES
    side = 1.3 if legend else 0.9   # inches beside the panels for the legend / colour bar
    ncols = max(1, min(len(order), int((PAGE_WIDTH - side) // PANEL)))
    fig, axes = panel_grid(len(order), ncols=ncols, size=(PANEL, PANEL + 0.35))
    index = {c: i for i, c in enumerate(classes)}
    if legend:
        colours = dict(zip(classes, variant_palette(len(classes))))
    else:
        cmap = matplotlib.colormaps[CONTINUOUS]
        colours = {c: cmap(i / max(1, len(classes) - 1)) for c, i in index.items()}
    baselines = set(baselines)
    shown = {}
    for ax, variant in zip(axes, order):
        run_id, fold, seed, x, y = picked[variant]
        keep = subsample(len(y), max_points=max_points, random_state=random_state)
        x, y = x[keep].astype(np.float32), y[keep]
        shown[variant] = (len(keep), len(picked[variant][4]))
        where = ", ".join([f"run {run_id}"] + ([f"fold {fold}"] if fold else [])
                          + ([f"seed {seed}"] if seed is not None else []))
        label = f"{variant} (baseline)" if variant in baselines else variant
        ax.set_title(f"{label}\n{where}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1", fontsize=7)
        ax.set_ylabel("UMAP 2", fontsize=7)
        ax.set_box_aspect(1)
        try:
            xy = project(x)
        except Exception as error:  # noqa: BLE001 - one bad run must not sink the figure
            ax.text(0.5, 0.5, f"UMAP failed:\n{type(error).__name__}: {error}"[:200], ha="center",
                    va="center", fontsize=6, wrap=True, transform=ax.transAxes)
            continue
        ax.scatter(xy[:, 0], xy[:, 1], s=float(np.clip(1500 / len(y), 2, 12)),
                   c=[colours[c] for c in y], linewidths=0)
    fig.tight_layout(rect=(0, 0, 1 - side / fig.get_size_inches()[0], 1))
    if legend:
        handles = [matplotlib.lines.Line2D([], [], marker="o", linestyle="", markersize=5,
                                           color=colours[c], label=str(c)) for c in classes]
        fig.legend(handles=handles, title="test class", loc="center left", fontsize=7,
                   bbox_to_anchor=(1 - side / fig.get_size_inches()[0] + 0.01, 0.5),
                   frameon=False)
        colouring = f"coloured by test class ({len(classes)} classes, legend on the right)"
    else:
        cax = fig.add_axes((1 - 0.6 / fig.get_size_inches()[0], 0.15,
                            0.18 / fig.get_size_inches()[0], 0.7))
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(
            norm=matplotlib.colors.Normalize(0, len(classes) - 1), cmap=cmap), cax=cax)
        bar.set_label("test class (index in sorted order)")
        colouring = (f"{len(classes)} test classes: too many for distinct colours, so coloured "
                     f"by their index in sorted order along the continuous '{CONTINUOUS}' colour "
                     "map (neighbouring indices get similar colours; colour bar on the right)")
    alt = "UMAP panels, in order: " + "; ".join(
        f"{v} (baseline)" if v in baselines else v for v in order)
    return save(fig, name=NAME, title=TITLE, out_dir=out_dir, layout=False, alt=alt,
                caption=f"{method} of each variant's selected run (lowest finished fold "
                        f"and seed), {colouring}. {_points_text(shown, random_state)} Best variant "
                        "first, then the baselines, then the other variants by rank.")


def _points_text(shown: dict, random_state: int) -> str:
    """{variant: (shown, stored)} -> 'Each panel shows 1000 of its 1440 stored test points ...'."""
    pairs = set(shown.values())
    if len(pairs) == 1:
        k, n = next(iter(pairs))
        return (f"Each panel shows all {n} stored test points." if k == n else
                f"Each panel shows {k} of its {n} stored test points (a random subset, "
                f"seed {random_state}).")
    return ("Points shown per panel (of those stored): "
            + ", ".join(f"{v} {k} of {n}" for v, (k, n) in shown.items()) + ".")


def _project(umap, x: np.ndarray, *, random_state: int, n_epochs: int) -> np.ndarray:
    """x (N, E) float32 -> (N, 2) UMAP coordinates.

    The exact Euclidean kNN graph (scikit-learn, self included, as UMAP computes it
    for small data) is passed in as `precomputed_knn`: same graph, and it halves the
    first call's numba compilation.
    """
    from sklearn.neighbors import NearestNeighbors

    k = min(15, len(x) - 1)
    if k < 2:
        raise ValueError(f"embeddings x have {len(x)} points; UMAP needs at least 3")
    dists, idx = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    with numba_cache_on(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": wanted
        return umap.UMAP(n_components=2, n_neighbors=k, n_epochs=n_epochs, random_state=random_state,
                         precomputed_knn=(idx, dists.astype(np.float32), None)).fit_transform(x)


def selected_table(picked: dict, *, order: list[str], max_points: int,
                   random_state: int) -> pd.DataFrame:
    """picked embeddings, the panel order -> panel (1 = first), variant, run_id, fold, seed,
    n_points (stored), n_shown (in the panel), in panel order."""
    columns = ["panel", "variant", "run_id", "fold", "seed", "n_points", "n_shown"]
    rows = []
    for i, v in enumerate(panel_sequence(picked, order), start=1):
        r, f, s, _, y = picked[v]
        rows.append({"panel": i, "variant": v, "run_id": r, "fold": f, "seed": s,
                     "n_points": len(y), "n_shown": len(subsample(
                         len(y), max_points=max_points, random_state=random_state))})
    return pd.DataFrame(rows, columns=columns).astype({"seed": "Int64"})
