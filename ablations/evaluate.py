"""Retrieval metrics through pytorch-metric-learning's AccuracyCalculator.

Every query is ranked against all other points of the same split (leave-one-out,
`ref_includes_query`), with k = the largest class size (PML's "max_bin_count")
so R-precision and MAP@R are exact, and at least `max(RECALL_KS)` neighbours so
Recall@K is too (MAP@R only reads each query's first R neighbours, so more
neighbours never change it); the kNN distance is the run's training metric (`CustomKNN`, no L2
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
    "recall_at_1": "recall_at_1",
    "recall_at_2": "recall_at_2",
    "recall_at_4": "recall_at_4",
    "recall_at_8": "recall_at_8",
}
RECALL_KS = (1, 2, 4, 8)  # as CUB-200 / Cars196 papers tabulate Recall@K


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


def recall_at_k(knn_labels: torch.Tensor, query_labels: torch.Tensor, k: int) -> float:
    """knn_labels (Q, k') int, query_labels (Q,) int -> share of queries with a same-class item
    among their k nearest neighbours (k <= k'); NaN when there is no query."""
    if knn_labels.shape[1] < k:
        raise ValueError(f"recall_at_k needs {k} neighbours per query, got {knn_labels.shape[1]}")
    if len(query_labels) == 0:
        return float("nan")
    hit = (knn_labels[:, :k] == query_labels[:, None]).any(dim=1)  # (Q,)
    return float(hit.double().mean())


def _recall_calculator():
    """An AccuracyCalculator subclass with recall_at_{1,2,4,8} (PML has no Recall@K)."""
    from pytorch_metric_learning.utils.accuracy_calculator import (AccuracyCalculator,
                                                                    try_getting_not_lone_labels)

    class RecallAccuracyCalculator(AccuracyCalculator):
        def requires_knn(self):
            return super().requires_knn() + [f"recall_at_{k}" for k in RECALL_KS]

        def determine_k(self, bin_counts, num_reference_embeddings, ref_includes_query):
            k = super().determine_k(bin_counts, num_reference_embeddings, ref_includes_query)
            return max(k, min(max(RECALL_KS), num_reference_embeddings - int(ref_includes_query)))

        def _recall(self, k, knn_labels, query_labels, not_lone_query_mask, **kwargs):
            # queries whose class has no other item are left out, as for precision_at_1
            knn_labels, query_labels = try_getting_not_lone_labels(
                knn_labels, query_labels, not_lone_query_mask)
            if knn_labels is None or knn_labels.shape[1] < k:
                return float("nan")
            return recall_at_k(knn_labels, query_labels, k)

        def calculate_recall_at_1(self, **kwargs):
            return self._recall(1, **kwargs)

        def calculate_recall_at_2(self, **kwargs):
            return self._recall(2, **kwargs)

        def calculate_recall_at_4(self, **kwargs):
            return self._recall(4, **kwargs)

        def calculate_recall_at_8(self, **kwargs):
            return self._recall(8, **kwargs)

    return RecallAccuracyCalculator


def retrieval_metrics(embeddings: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                      *, metric: str, seed: int) -> dict[str, float]:
    """embeddings (N, E) float, labels (N,) int -> {precision_at_1, r_precision, map_at_r, nmi,
    recall_at_1, recall_at_2, recall_at_4, recall_at_8}."""
    from pytorch_metric_learning.utils.inference import CustomKNN

    emb = torch.as_tensor(embeddings, dtype=torch.float32)
    lab = torch.as_tensor(labels)
    if emb.ndim != 2 or lab.ndim != 1 or len(emb) != len(lab):
        raise ValueError(f"expected embeddings (N, E) and labels (N,), got "
                         f"{tuple(emb.shape)} and {tuple(lab.shape)}")
    if not torch.isfinite(emb).all():
        return {name: float("nan") for name in METRIC_NAMES}
    calc = _recall_calculator()(include=tuple(METRIC_NAMES.values()), k="max_bin_count",
                              device=torch.device("cpu"),
                              knn_func=CustomKNN(knn_distance(metric)),
                              kmeans_func=SeededKMeans(seed))
    acc = calc.get_accuracy(emb, lab)
    return {ours: float(acc[theirs]) for ours, theirs in METRIC_NAMES.items()}


def model_embeddings(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """model, x (N, F) -> (N, E): the model in eval mode without gradients, then back in training mode."""
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train()
    return out


def record_validation(result: dict, embeddings: torch.Tensor, y_val: np.ndarray, *, epoch: int, cfg) -> None:
    """A run's result dict, validation embeddings (N, E), labels, epoch, its RunConfig -> result updated in place:
    one `epochs` row and the `val_*` metrics (the latest evaluation). Training and baselines both log here."""
    val = retrieval_metrics(embeddings, y_val, metric=cfg.metric, seed=cfg.seed)
    result["epochs"].append({"epoch": epoch, **{f"val_{k}": v for k, v in val.items()}})
    result["metrics"].update({f"val_{k}": v for k, v in val.items()})


def record_test(result: dict, embeddings: torch.Tensor, y_test: np.ndarray, *, cfg) -> None:
    """A run's result dict, test embeddings (N, E), labels, its RunConfig -> the `test_*` metrics and the
    stored test embeddings, in place."""
    test = retrieval_metrics(embeddings, y_test, metric=cfg.metric, seed=cfg.seed)
    result["metrics"].update({f"test_{k}": v for k, v in test.items()})
    result["embeddings"] = {"X": embeddings.numpy().astype(np.float32), "y": y_test.astype(np.int64)}
