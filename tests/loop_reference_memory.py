"""Naive float64 loop references for the losses against a reference set (a cross-batch memory).

Plain Python loops over lists, as tests/loop_reference.py: anchors a from the batch,
positives and negatives r from the references, the reference `own[a]` (the anchor's own
entry, or -1) never a positive; and a list-based ring buffer in PML's order.
"""

from __future__ import annotations

from loop_reference import Vector, distance, hinge, reduce, softplus


def cross_matrix(x: list[Vector], refs: list[Vector], metric: str) -> list[list[float]]:
    return [[distance(u, v, metric) if u != v else 0.0 for v in refs] for u in x]


def _positives(a, labels, ref_labels, own):
    return [r for r in range(len(ref_labels)) if ref_labels[r] == labels[a] and r != own[a]]


def _negatives(a, labels, ref_labels):
    return [r for r in range(len(ref_labels)) if ref_labels[r] != labels[a]]


def batch_all(x, labels, refs, ref_labels, own, margin, metric, reduction):
    d = cross_matrix(x, refs, metric)
    items = [hinge(d[a][p] - d[a][n] + margin) for a in range(len(x))
             for p in _positives(a, labels, ref_labels, own) for n in _negatives(a, labels, ref_labels)]
    return reduce(items, reduction)


def batch_hard(x, labels, refs, ref_labels, own, margin, metric, reduction, soft):
    d = cross_matrix(x, refs, metric)
    items = []
    for a in range(len(x)):
        positives = [d[a][p] for p in _positives(a, labels, ref_labels, own)]
        negatives = [d[a][n] for n in _negatives(a, labels, ref_labels)]
        if positives and negatives:
            gap = max(positives) - min(negatives)
            items.append(softplus(gap) if soft else hinge(gap + margin))
    return reduce(items, reduction)


def semi_hard_tf(x, labels, refs, ref_labels, own, margin, metric, reduction):
    d = cross_matrix(x, refs, metric)
    items = []
    for a in range(len(x)):
        negatives = [d[a][n] for n in _negatives(a, labels, ref_labels)]
        if not negatives:
            continue
        for p in _positives(a, labels, ref_labels, own):
            farther = [v for v in negatives if v > d[a][p]]
            items.append(hinge(d[a][p] - (min(farther) if farther else max(negatives)) + margin))
    return reduce(items, reduction)


def semi_hard_pml(x, labels, refs, ref_labels, own, margin, metric, reduction):
    d = cross_matrix(x, refs, metric)
    items = [hinge(d[a][p] - d[a][n] + margin) for a in range(len(x))
             for p in _positives(a, labels, ref_labels, own) for n in _negatives(a, labels, ref_labels)
             if 0 < d[a][n] - d[a][p] <= margin]
    return reduce(items, reduction)


class LoopMemory:
    """A ring buffer as lists: enqueue returns the slots written; `contents` the filled part."""

    def __init__(self, size: int):
        self.size, self.rows, self.labels, self.pointer = size, [None] * size, [None] * size, 0
        self.filled = 0

    def enqueue(self, x: list[Vector], labels: list[int]) -> list[int]:
        slots = []
        for row, label in zip(x, labels):
            self.rows[self.pointer], self.labels[self.pointer] = list(row), label
            slots.append(self.pointer)
            self.pointer = (self.pointer + 1) % self.size
            self.filled = min(self.filled + 1, self.size)
        return slots

    def contents(self):
        return self.rows[: self.filled], self.labels[: self.filled]
