"""Triplet loss on explicit (anchor, positive, negative) triplets."""

from __future__ import annotations

import torch

from .distances import METRICS, _paired_distances
from .reductions import REDUCTIONS, reduce_losses
from .validation import check_choice, check_embeddings, check_triplet_margin, check_same_shape


def naive_triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    *,
    margin: float,
    metric: str,
    reduction: str = "mean",
) -> torch.Tensor:
    """anchor (N, D), positive (N, D), negative (N, D) float -> scalar, or (N,) for reduction="none".

    Per triplet relu(d(a, p) - d(a, n) + margin); every row is a valid item. Distances use
    the exact difference form; the euclidean root has gradient 0 where a row pair coincides.
    """
    margin = check_triplet_margin(margin)
    check_choice(metric, name="metric", valid=METRICS)
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    for name, x in (("anchor", anchor), ("positive", positive), ("negative", negative)):
        check_embeddings(x, name=name, min_rows=0)
    check_same_shape(anchor=anchor, positive=positive, negative=negative)
    d_ap = _paired_distances(anchor, positive, metric=metric)  # (N,)
    d_an = _paired_distances(anchor, negative, metric=metric)  # (N,)
    per_triplet = torch.relu(d_ap - d_an + margin)  # (N,)
    return reduce_losses(per_triplet, reduction=reduction, anchor=anchor)
