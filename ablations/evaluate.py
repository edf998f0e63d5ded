"""Retrieval metrics through pytorch-metric-learning's AccuracyCalculator.

Every query is ranked against all other points of the same split (leave-one-out,
`ref_includes_query`), with `k="max_bin_count"` so R-precision and MAP@R are
exact; the kNN distance is the run's training metric (`CustomKNN`, no L2
normalisation added: the embeddings are used as trained), and NMI uses
scikit-learn's KMeans with a fixed seed and the best of 3 initialisations (one
k-means++ start can put a single outlier in its own cluster and report NMI ~ 0
on a well-separated split; faiss is not installed).
"""

from __future__ import annotations

import numpy as np
import torch

METRIC_NAMES = {  # our column suffix -> AccuracyCalculator key
    "precision_at_1": "precision_at_1",
    "r_precision": "r_precision",
    "map_at_r": "mean_average_precision_at_r",
    "nmi": "NMI",
}


def knn_distance(metric: str):
    """Training metric -> the PML distance object ranking neighbours the same way."""
    from pytorch_metric_learning.distances import CosineSimilarity, LpDistance

    if metric == "euclidean":
        return LpDistance(normalize_embeddings=False, p=2, power=1)
    if metric == "squared_euclidean":
        return LpDistance(normalize_embeddings=False, p=2, power=2)
    if metric == "cosine":
        return CosineSimilarity()
    raise ValueError(f"metric: unknown {metric!r}; valid: euclidean, squared_euclidean, cosine")


class SeededKMeans:
    """(x (N, E) tensor, num_clusters) -> cluster labels (N,): sklearn KMeans, fixed seed."""

    def __init__(self, seed: int, n_init: int = 3):
        self.seed, self.n_init = seed, n_init

    def __call__(self, x: torch.Tensor, num_clusters: int) -> torch.Tensor:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=num_clusters, n_init=self.n_init, random_state=self.seed)
        return torch.from_numpy(km.fit_predict(x.detach().cpu().numpy()).astype(np.int64))


def retrieval_metrics(embeddings: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                      *, metric: str, seed: int) -> dict[str, float]:
    """embeddings (N, E) float, labels (N,) int -> {precision_at_1, r_precision, map_at_r, nmi}."""
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    emb = torch.as_tensor(embeddings, dtype=torch.float32)
    lab = torch.as_tensor(labels)
    if emb.ndim != 2 or lab.ndim != 1 or len(emb) != len(lab):
        raise ValueError(f"expected embeddings (N, E) and labels (N,), got "
                         f"{tuple(emb.shape)} and {tuple(lab.shape)}")
    if not torch.isfinite(emb).all():
        return {name: float("nan") for name in METRIC_NAMES}
    calc = AccuracyCalculator(include=tuple(METRIC_NAMES.values()), k="max_bin_count",
                              device=torch.device("cpu"),
                              knn_func=CustomKNN(knn_distance(metric)),
                              kmeans_func=SeededKMeans(seed))
    acc = calc.get_accuracy(emb, lab)
    return {ours: float(acc[theirs]) for ours, theirs in METRIC_NAMES.items()}
