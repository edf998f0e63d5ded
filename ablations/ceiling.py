"""The ideal metric of a generated dataset: the ceiling every score is read against.

A generated dataset knows what its classes are made of, so it can say how well a
metric could do at best; the report shows that ceiling beside the leaderboard
(`DIR/ideal.json`, written by the runner, read by reports/store_view.py):

- `pose` (ablations/pose.py): the content c is seen only up to each sample's pose
  (one rotation angle for every plane) and gain, so the best a pose- and
  gain-invariant metric can do, even knowing c, is the distance between the
  orbits: min over theta of |c_i / |c_i| - R(theta) c_j / |c_j||
  (`orbit_distances(c, unit_gain=True)`). The content in canonical pose itself would
  score higher, but no metric of the observed features can recover the pose.
- `nuisance` (ablations/nuisance.py): the content coordinates c (the nuisance
  removed), with the run's metric.

Both are scored by test MAP@R on the test classes of the run's split (the same for
every fold under `split_protocol = "fixed_test"`). Other datasets have no ceiling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ablations.data import fold_classes
from ablations.evaluate import retrieval_metrics
from ablations.nuisance import nuisance_xy_of
from ablations.pose import pose_xy_of

CEILINGS = {
    "pose": "the content known up to pose and gain: MAP@R of the distance between the "
            "orbits of the true content (min over the pose angle, unit gain)",
    "nuisance": "the true content coordinates (the nuisance removed), the run's metric",
}


def map_at_r_of_distances(d: np.ndarray, y: np.ndarray) -> float:
    """distances (N, N), labels (N,) -> MAP@R (Musgrave et al.: R = same-class count, self
    excluded; ties broken by index)."""
    d = d.astype(np.float64).copy()
    np.fill_diagonal(d, np.inf)
    R = np.bincount(y)[y] - 1                                     # (N,)
    order = np.argsort(d, axis=1, kind="stable")[:, :R.max()]     # (N, Rmax)
    rel = (y[order] == y[:, None]) & (np.arange(R.max())[None] < R[:, None])
    precision = np.cumsum(rel, axis=1) / np.arange(1, R.max() + 1)[None]
    return float(((precision * rel).sum(axis=1) / R).mean())


def orbit_distances(c: np.ndarray, *, unit_gain: bool) -> np.ndarray:
    """canonical content (N, dc) -> (N, N) distances modulo the pose: min over theta of
    |c_i - R(theta) c_j| (planes as complex numbers z: |z_i|^2 + |z_j|^2 - 2 |<z_i, z_j>|);
    unit_gain: of c / |c| (modulo the gain too)."""
    z = c[:, 0::2].astype(np.float64) + 1j * c[:, 1::2]           # (N, dc/2)
    if unit_gain:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
    sq = (np.abs(z) ** 2).sum(axis=1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * np.abs(z @ z.conj().T), 0.0))


def content_of(config) -> tuple[np.ndarray, np.ndarray] | None:
    """RunConfig -> (content (N, dc), y (N,)) of a generated dataset with hidden content (the
    ideal metric's features, never used in training), else None."""
    if config.dataset == "pose":
        _, y, content = pose_xy_of(config, return_content=True)
    elif config.dataset == "nuisance":
        _, y, content = nuisance_xy_of(config, return_content=True)
    else:
        return None
    return content, y


def ideal_score(config) -> dict[str, Any] | None:
    """RunConfig -> {"test_map_at_r", "what", "dataset"} of its dataset's ideal metric on the
    run's test classes, or None when the dataset has no known ceiling."""
    found = content_of(config)
    if found is None:
        return None
    content, y = found
    _, _, test = fold_classes(np.unique(y), class_folds=config.class_folds, fold=config.fold,
                              split_protocol=config.split_protocol)
    keep = np.isin(y, test)
    if config.dataset == "pose":
        score = map_at_r_of_distances(orbit_distances(content[keep], unit_gain=True), y[keep])
    else:
        score = retrieval_metrics(content[keep], y[keep], metric=config.metric,
                                  seed=0)["map_at_r"]
    return {"test_map_at_r": float(score), "what": CEILINGS[config.dataset],
            "dataset": config.dataset}


def ideal_summary(configs) -> dict[str, Any] | None:
    """The trained configs of a grid -> the ceiling of its one dataset (the mean over its
    distinct test-class sets), or None with no known ceiling or several datasets."""
    keys = {(c.dataset, c.class_folds, c.fold, c.split_protocol, c.metric): c for c in configs
            if c.dataset in CEILINGS}
    if len({k[0] for k in keys}) != 1 or len({c.dataset for c in configs}) != 1:
        return None
    scores = [ideal_score(c) for c in keys.values()]
    first = scores[0]
    return {**first, "test_map_at_r": float(np.mean([s["test_map_at_r"] for s in scores])),
            "splits": len(scores)}
