"""UMAP projections of the test embeddings of each variant's selected run, in one panel grid.

`umap` is imported inside the function: the first import costs ~20 s (numba), and
nothing else in tripletlab should pay it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from reports.figures import Figure, missing, panel_grid, save
from reports.leaderboard import finished
from reports.variants import SEED

NAME, TITLE = "umap", "UMAP of test embeddings (selected run per variant)"


def pick_embeddings(selected_runs: dict, embeddings) -> tuple[dict, list[str]]:
    """variant -> runs of its selected config, getter -> ({variant: (run_id, seed, X, y)}, notes).

    The run of the lowest finished seed whose embeddings load; a note for every
    variant without one.
    """
    picked, notes = {}, []
    for variant, runs in sorted(selected_runs.items()):
        for row in finished(runs).sort_values(SEED).itertuples():
            try:
                x, y = embeddings(row.run_id)
            except Exception as error:  # noqa: BLE001 - any unreadable file is "missing"
                notes.append(f"{variant}: embeddings of run {row.run_id} (seed {getattr(row, SEED)}) "
                             f"could not be read ({type(error).__name__}: {error})")
                continue
            picked[variant] = (row.run_id, getattr(row, SEED), np.asarray(x), np.asarray(y))
            break
        else:
            notes.append(f"{variant}: no test embeddings for any finished run of its selected "
                         "configuration; panel left out")
    return picked, notes


def umap_figure(picked: dict, *, out_dir: Path, random_state: int, n_epochs: int,
                max_points: int) -> Figure:
    """{variant: (run_id, seed, X (N, E), y (N,))} -> one figure of 2-D UMAP panels by class."""
    if not picked:
        return missing(name=NAME, title=TITLE,
                       reason="no selected run has stored test embeddings")
    try:
        import umap
    except ImportError as error:
        return missing(name=NAME, title=TITLE, reason=f"umap-learn is not importable: {error}")
    fig, axes = panel_grid(len(picked), ncols=3, size=(3.6, 3.4))
    classes = np.unique(np.concatenate([p[3] for p in picked.values()]))
    colours = {c: f"C{i % 10}" for i, c in enumerate(classes)}
    for ax, (variant, (run_id, seed, x, y)) in zip(axes, sorted(picked.items())):
        keep = np.random.default_rng(random_state).permutation(len(y))[:max_points]
        x, y = x[keep].astype(np.float32), y[keep]
        ax.set_title(f"{variant}\nrun {run_id}, seed {seed}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        try:
            xy = _project(umap, x, random_state=random_state, n_epochs=n_epochs)
        except Exception as error:  # noqa: BLE001 - one bad run must not sink the figure
            ax.text(0.5, 0.5, f"UMAP failed:\n{type(error).__name__}: {error}"[:200], ha="center",
                    va="center", fontsize=6, wrap=True, transform=ax.transAxes)
            continue
        for c in np.unique(y):
            ax.scatter(xy[y == c, 0], xy[y == c, 1], s=4, color=colours[c], label=str(c))
    axes[0].legend(title="class", fontsize=6, markerscale=2, loc="best")
    return save(fig, name=NAME, title=TITLE, out_dir=out_dir,
                caption=f"UMAP (umap-learn, random_state={random_state}, n_epochs={n_epochs}, at most "
                        f"{max_points} points, exact Euclidean kNN graph) of each variant's selected "
                        "run (lowest finished seed), coloured by test class.")


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": wanted
        return umap.UMAP(n_components=2, n_neighbors=k, n_epochs=n_epochs, random_state=random_state,
                         precomputed_knn=(idx, dists.astype(np.float32), None)).fit_transform(x)


def selected_table(picked: dict) -> pd.DataFrame:
    """picked embeddings -> variant, run_id, seed, n_points (the runs shown in the UMAP panel)."""
    return pd.DataFrame([{"variant": v, "run_id": r, "seed": s, "n_points": len(y)}
                         for v, (r, s, _, y) in sorted(picked.items())],
                        columns=["variant", "run_id", "seed", "n_points"])
