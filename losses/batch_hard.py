"""Batch-hard triplet loss (Hermans, Beyer, Leibe 2017): hardest positive and negative per anchor."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distances import _paired_distances, batch_distances, sorted_positive_distances, working_precision
from .reductions import REDUCTIONS, reduce_losses
from .stats import TripletStats, triplet_stats
from .validation import check_choice, check_flag, check_triplet_margin


def batch_hard_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    margin: float | None,
    metric: str,
    reduction: str = "mean",
    soft: bool = False,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, TripletStats]:
    """embeddings (B, D) float, labels (B,) int -> scalar (or (A,) per valid anchor for reduction="none").

    Items are the A anchors with at least one positive and one negative, in index order.
    Per anchor: d_ap = max over positives p != a, d_an = min over negatives; the loss is
    relu(d_ap - d_an + margin), or softplus(d_ap - d_an) with soft=True (Hermans' soft
    margin), where margin must be None: a number would be silently unused. The gradient of
    a tied max/min goes to the first of them (as PML's BatchHardMiner). The hardest pairs
    are chosen on the detached (B, B) matrix, then only those 2A distances are recomputed
    with autograd (difference form): forward O(B^2 D), backward O(B D).
    With return_stats, violation_rate uses margin 0 when soft=True.
    """
    check_flag(soft, name="soft")
    if soft:
        if margin is not None:
            raise ValueError(f"margin is unused when soft=True: pass margin=None, got {margin!r}")
        margin_value = 0.0
    else:
        margin_value = check_triplet_margin(margin)
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    check_flag(return_stats, name="return_stats")
    embeddings = working_precision(embeddings)  # float16/bfloat16 -> float32: one upcast, gradients summed in float32
    with torch.no_grad():  # selection only: no backward through the (B, B) matrix
        dist, pos, neg = batch_distances(embeddings.detach(), labels, metric=metric)  # (B, B) x 3
        valid = pos.any(dim=1) & neg.any(dim=1)  # (B,) anchors with a positive and a negative
        farthest_pos = torch.where(pos, dist, -torch.inf).argmax(dim=1)[valid]  # (A,)
        nearest_neg = torch.where(neg, dist, torch.inf).argmin(dim=1)[valid]  # (A,)
    anchors = embeddings[valid]  # (A, D)
    d_ap = _paired_distances(anchors, embeddings[farthest_pos], metric=metric)  # (A,) recomputed with autograd
    d_an = _paired_distances(anchors, embeddings[nearest_neg], metric=metric)  # (A,)
    gap = d_ap - d_an  # (A,)
    per_anchor = F.softplus(gap) if soft else torch.relu(gap + margin_value)  # (A,)
    loss = reduce_losses(per_anchor, reduction=reduction, anchor=embeddings)
    if not return_stats:
        return loss
    sorted_pos, _ = sorted_positive_distances(dist, labels)
    stats = triplet_stats(
        dist, neg, sorted_pos, margin=margin_value, num_active=(per_anchor > 0).sum(), num_items=valid.sum()
    )
    return loss, stats
