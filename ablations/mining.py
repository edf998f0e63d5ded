"""Offline triplets for the explicit-triplet losses (naive, combined).

Once per epoch every training point becomes an anchor once (in random order),
with a random positive of its class (not itself) and a negative that is either
random or, for a `hard_share` of the anchors, its hard negative: the nearest
point of another class among the anchor's `neighbours` nearest neighbours in a
scikit-learn BallTree over the current training embeddings. The tree is rebuilt
every `mining_refresh_epochs` epochs (by the training loop); an anchor without
a negative among its neighbours keeps its random negative.
"""

from __future__ import annotations

import numpy as np

from ablations.keys import POSITIVE, UNIT_INTERVAL, Key

MININGS = ("none", "offline_hard")
# Read by the losses trained on offline triplets (ablations/loss_specs.py); the mining_* keys
# only with mining != "none".
MINING_KEYS = (
    Key("mining", "none", "none (random triplets) | offline_hard (BallTree)", choices=MININGS),
    Key("mining_refresh_epochs", 5, "rebuild the BallTree every N epochs", POSITIVE),
    Key("mining_neighbours", 20, "neighbours queried per anchor for a hard negative", POSITIVE),
    Key("mining_random_rate", 0.5, "share of negatives always drawn at random", UNIT_INTERVAL),
    Key("mining_hard_start", 0.0, "hard share of the other negatives at epoch 0 ...", UNIT_INTERVAL),
    Key("mining_hard_end", 1.0, "... ramped linearly to this at the last epoch", UNIT_INTERVAL),
)


def random_triplets(labels: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """labels (N,) int -> triplets (T, 3) int of (anchor, positive, negative) indices.

    T = number of points whose class has another member; anchors in random order;
    the positive is uniform over the anchor's class without the anchor, the
    negative uniform over all points of other classes.
    """
    labels = np.asarray(labels)
    n = len(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_class = np.argsort(inverse, kind="stable")  # (N,) point indices grouped by class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # (C,) first slot of each class
    slot = np.empty(n, dtype=np.int64)
    slot[by_class] = np.arange(n)
    order = rng.permutation(n)
    anchors = order[counts[inverse[order]] >= 2]  # (T,)
    cls = inverse[anchors]
    own = slot[anchors] - starts[cls]  # the anchor's rank within its class
    r = (rng.random(len(anchors)) * (counts[cls] - 1)).astype(np.int64)
    positives = by_class[starts[cls] + r + (r >= own)]
    r = (rng.random(len(anchors)) * (n - counts[cls])).astype(np.int64)
    negatives = by_class[np.where(r < starts[cls], r, r + counts[cls])]
    return np.stack([anchors, positives, negatives], axis=1)


def hard_negatives(embeddings: np.ndarray, labels: np.ndarray, *, neighbours: int,
                   metric: str) -> np.ndarray:
    """embeddings (N, E) float, labels (N,) int -> (N,) int: nearest other-class index or -1.

    Cosine is searched as euclidean on L2-normalised embeddings (same ranking);
    squared euclidean has the ranking of euclidean.
    """
    from sklearn.neighbors import BallTree

    x = np.asarray(embeddings, dtype=np.float64)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = min(neighbours + 1, len(x))
    _, idx = BallTree(x).query(x, k=k)  # (N, k), sorted by distance
    other = labels[idx] != labels[:, None]  # (N, k)
    first = other.argmax(axis=1)
    found = other[np.arange(len(x)), first]
    return np.where(found, idx[np.arange(len(x)), first], -1)


def mix_hard_negatives(triplets: np.ndarray, hard: np.ndarray, *, hard_share: float,
                       rng: np.random.Generator) -> np.ndarray:
    """triplets (T, 3), hard (N,) -> triplets with a `hard_share` of negatives made hard."""
    out = triplets.copy()
    candidate = hard[out[:, 0]]  # (T,)
    use = (rng.random(len(out)) < hard_share) & (candidate >= 0)
    out[use, 2] = candidate[use]
    return out
