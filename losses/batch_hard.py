"""Batch-hard triplet loss (Hermans, Beyer, Leibe 2017): hardest positive and negative per anchor."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distances import (
    _paired_distances,
    checked_distances,
    cross_distances,
    reference_members,
    scale_exponent,
    sorted_positive_distances,
    working_precision,
)
from .masks import hardest_pairs
from .references import check_references, in_batch_self_index, reference_masks
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
    margin_value = _checked_margin(margin, soft)
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    check_flag(return_stats, name="return_stats")
    embeddings = working_precision(embeddings)  # float16/bfloat16 -> float32: one upcast, gradients summed in float32
    with torch.no_grad():  # selection only: no backward through the (B, B) matrix
        dist = checked_distances(embeddings.detach(), labels, metric=metric)  # (B, B)
    return batch_hard_from_distances(dist, labels, labels, in_batch_self_index(labels), embeddings, embeddings,
                                     margin=margin_value, metric=metric, reduction=reduction, soft=soft,
                                     return_stats=return_stats)


def batch_hard_triplet_loss_refs(
    anchors: torch.Tensor,
    labels: torch.Tensor,
    references: torch.Tensor,
    reference_labels: torch.Tensor,
    *,
    anchor_index_in_refs: torch.Tensor | None,
    margin: float | None,
    metric: str,
    reduction: str = "mean",
    soft: bool = False,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, TripletStats]:
    """anchors (B, D) float, labels (B,) int, references (M, D) float, reference_labels (M,) int,
    anchor_index_in_refs (B,) int (the reference that IS the anchor, or -1; None: none is) -> scalar
    (or (A,) per valid anchor for reduction="none").

    `batch_hard_triplet_loss` with the hardest positive and negative of each anchor taken
    among the references, the anchor's own entry excluded from its positives (PML's
    BatchHardMiner inside CrossBatchMemory). Items are the A anchors with a positive and a
    negative reference. Selection on the detached (B, M) matrix, O(B M D); the 2A chosen
    distances recomputed with autograd: gradients to the anchors, and to the references
    when they require one. The in-batch loss is this with references = batch.
    """
    margin_value = _checked_margin(margin, soft)
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    check_flag(return_stats, name="return_stats")
    self_index = check_references(anchors, labels, references, reference_labels, anchor_index_in_refs)
    anchors, references = working_precision(anchors), working_precision(references)
    with torch.no_grad():
        dist = cross_distances(anchors.detach(), references.detach(), metric=metric)  # (B, M)
    return batch_hard_from_distances(dist, labels, reference_labels, self_index, anchors, references,
                                     margin=margin_value, metric=metric, reduction=reduction, soft=soft,
                                     return_stats=return_stats)


def _checked_margin(margin, soft) -> float:
    """margin, soft -> the margin used (0 for the soft margin, where a number would be silently unused)."""
    check_flag(soft, name="soft")
    if soft:
        if margin is not None:
            raise ValueError(f"margin is unused when soft=True: pass margin=None, got {margin!r}")
        return 0.0
    return check_triplet_margin(margin)


def batch_hard_from_distances(
    dist: torch.Tensor,
    labels: torch.Tensor,
    reference_labels: torch.Tensor,
    self_index: torch.Tensor,
    anchors: torch.Tensor,
    references: torch.Tensor,
    *,
    margin: float,
    metric: str,
    reduction: str,
    soft: bool,
    return_stats: bool,
):
    """dist (B, M) detached, labels (B,), reference_labels (M,), self_index (B,), anchors (B, D),
    references (M, D) -> the batch-hard loss (and stats); the one implementation of both entry points."""
    with torch.no_grad():  # selection only: no backward through the (B, M) matrix
        pos, neg = reference_masks(labels, reference_labels, self_index)  # (B, M) x 2
        valid, farthest_pos, nearest_neg = hardest_pairs(dist, pos, neg)  # (B,), (A,), (A,)
    chosen = anchors[valid]  # (A, D)
    exponent = scale_exponent(anchors, references, metric=metric)
    d_ap = _paired_distances(chosen, references[farthest_pos], metric=metric, exponent=exponent)  # (A,) with autograd
    d_an = _paired_distances(chosen, references[nearest_neg], metric=metric, exponent=exponent)  # (A,)
    gap = d_ap - d_an  # (A,)
    per_anchor = F.softplus(gap) if soft else torch.relu(gap + margin)  # (A,)
    loss = reduce_losses(per_anchor, reduction=reduction, anchor=anchors)
    if not return_stats:
        return loss
    members, real, _ = reference_members(labels, reference_labels, self_index)
    sorted_pos, _ = sorted_positive_distances(dist, labels, members=members, real=real)
    stats = triplet_stats(
        dist, neg, sorted_pos, margin=margin, num_active=(per_anchor > 0).sum(), num_items=valid.sum()
    )
    return loss, stats
