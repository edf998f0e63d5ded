"""Deliberately naive float64 references: plain Python loops over lists, no tensors.

Each function mirrors one vectorised loss in losses/ and documents the same items, so
tests can compare at 1e-10 in float64.
"""

from __future__ import annotations

import math

Vector = list[float]


def distance(u: Vector, v: Vector, metric: str) -> float:
    """One distance between two vectors."""
    if metric == "cosine":
        nu = max(math.sqrt(sum(a * a for a in u)), 1e-12)
        nv = max(math.sqrt(sum(b * b for b in v)), 1e-12)
        cos = sum((a / nu) * (b / nv) for a, b in zip(u, v))
        return min(max(1.0 - cos, 0.0), 2.0)
    sq = sum((a - b) ** 2 for a, b in zip(u, v))
    return math.sqrt(sq) if metric == "euclidean" else sq


def distance_matrix(x: list[Vector], metric: str) -> list[list[float]]:
    """B x B distances."""
    return [[0.0 if i == j else distance(x[i], x[j], metric) for j in range(len(x))] for i in range(len(x))]


def valid_triplets(labels: list[int]) -> list[tuple[int, int, int]]:
    """All (a, p, n) with a, p, n distinct and y_a == y_p != y_n, lexicographic order."""
    b = len(labels)
    return [
        (a, p, n)
        for a in range(b)
        for p in range(b)
        for n in range(b)
        if a != p and a != n and p != n and labels[a] == labels[p] != labels[n]
    ]


def reduce(items: list[float], reduction: str):
    """mean / mean_positive / sum of a list (0 when empty), or the list for "none"."""
    if reduction == "none":
        return items
    total = 0.0
    for v in items:
        total += v
    if reduction == "sum":
        return total
    count = len(items) if reduction == "mean" else sum(1 for v in items if v > 0)
    return total / count if count else 0.0


def hinge(x: float) -> float:
    return x if x > 0 else 0.0


def softplus(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def naive(a: list[Vector], p: list[Vector], n: list[Vector], margin: float, metric: str, reduction: str):
    items = [hinge(distance(a[i], p[i], metric) - distance(a[i], n[i], metric) + margin) for i in range(len(a))]
    return reduce(items, reduction)


def batch_all(x: list[Vector], labels: list[int], margin: float, metric: str, reduction: str):
    d = distance_matrix(x, metric)
    items = [hinge(d[a][p] - d[a][n] + margin) for a, p, n in valid_triplets(labels)]
    return reduce(items, reduction)


def batch_hard(x: list[Vector], labels: list[int], margin, metric: str, reduction: str, soft: bool):
    d = distance_matrix(x, metric)
    b = len(labels)
    items = []
    for a in range(b):
        positives = [d[a][p] for p in range(b) if p != a and labels[p] == labels[a]]
        negatives = [d[a][n] for n in range(b) if labels[n] != labels[a]]
        if not positives or not negatives:
            continue
        gap = max(positives) - min(negatives)
        items.append(softplus(gap) if soft else hinge(gap + margin))
    return reduce(items, reduction)


def semi_hard_tf(x: list[Vector], labels: list[int], margin: float, metric: str, reduction: str):
    """Per positive pair: nearest negative with d_an > d_ap, else the farthest negative."""
    d = distance_matrix(x, metric)
    b = len(labels)
    items = []
    for a in range(b):
        negatives = [d[a][n] for n in range(b) if labels[n] != labels[a]]
        if not negatives:
            continue
        for p in range(b):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [v for v in negatives if v > d[a][p]]
            d_an = min(farther) if farther else max(negatives)
            items.append(hinge(d[a][p] - d_an + margin))
    return reduce(items, reduction)


def semi_hard_pml(x: list[Vector], labels: list[int], margin: float, metric: str, reduction: str):
    """All triplets with 0 < d_an - d_ap <= margin (PML TripletMarginMiner "semihard")."""
    d = distance_matrix(x, metric)
    items = []
    for a, p, n in valid_triplets(labels):
        tm = d[a][n] - d[a][p]
        if 0 < tm <= margin:
            items.append(hinge(d[a][p] - d[a][n] + margin))
    return reduce(items, reduction)


def triplet_shares(x: list[Vector], labels: list[int], margin: float, metric: str) -> tuple[float, float]:
    """(pos_ratio, violation_rate) over all valid triplets; (0, 0) when there is none."""
    d = distance_matrix(x, metric)
    triplets = valid_triplets(labels)
    if not triplets:
        return 0.0, 0.0
    ordered = sum(1 for a, p, n in triplets if d[a][p] < d[a][n])
    violated = sum(1 for a, p, n in triplets if d[a][p] + margin > d[a][n])
    return ordered / len(triplets), violated / len(triplets)


def named_batches() -> dict[str, tuple[list[Vector], list[int]]]:
    """Edge-case batches (embeddings, labels) as plain lists, built deterministically.

    "ties" holds +-1 or +-2 times a coordinate axis, so every distance (cosine included) is
    exact in float64 and equal distances are exactly equal in both implementations; "duplicates" repeats rows exactly,
    within and across classes.
    """
    import random

    rng = random.Random(1234)

    def gauss(b: int, d: int) -> list[Vector]:
        return [[rng.gauss(0.0, 1.0) for _ in range(d)] for _ in range(b)]

    base = gauss(6, 3)
    axes = [[0.0, 0.0] for _ in range(14)]  # +-1 or +-2 times an axis: exact in every metric
    for point in axes:
        point[rng.randint(0, 1)] = float(rng.choice([-2, -1, 1, 2]))
    return {
        "random": (gauss(16, 4), [i % 4 for i in range(16)]),
        "unbalanced": (gauss(13, 3), [0] * 6 + [1] * 4 + [2, 2, 3]),
        "duplicates": (base + base[:4], [0, 1, 2, 0, 1, 2, 0, 1, 1, 0]),
        "ties": (axes, [i % 3 for i in range(14)]),
        "single_class": (gauss(6, 3), [7] * 6),
        "all_distinct": (gauss(6, 3), list(range(6))),
        "singletons_and_pairs": (gauss(9, 3), [0, 0, 1, 2, 2, 3, 4, 4, 5]),
        "B=1": (gauss(1, 3), [0]),
    }


def expected_stats(items: list[float], x: list[Vector], labels: list[int], margin: float, metric: str) -> dict:
    """TripletStats fields expected for a variant whose valid items have the losses `items`."""
    pos_ratio, violation_rate = triplet_shares(x, labels, margin, metric)
    active = sum(1 for v in items if v > 0)
    return {
        "active_fraction": active / len(items) if items else 0.0,
        "pos_ratio": pos_ratio,
        "violation_rate": violation_rate,
        "num_items": len(items),
    }
