"""Semi-hard triplet loss, TF-Addons and PML semantics, without any (B, B, B) tensor."""

from __future__ import annotations

import torch

from .batch_all import pair_hinges, window_hinge_sum
from .distances import batch_distances, sorted_negative_distances
from .reductions import REDUCTIONS, reduce_losses, reduce_total
from .stats import TripletStats, triplet_stats
from .validation import check_choice, check_flag, check_margin

SEMANTICS = ("tf", "pml")


def semi_hard_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    margin: float,
    metric: str,
    semantics: str,
    reduction: str,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, TripletStats]:
    """embeddings (B, D) float, labels (B,) int -> scalar (or per-item losses for reduction="none").

    semantics="tf" (TF-Addons triplet_semihard_loss): items are the positive pairs (a, p),
    a != p, whose anchor has a negative. Each takes the nearest negative with d_an > d_ap,
    or, if there is none, the farthest negative of the anchor; loss relu(d_ap - d_an + margin).
    reduction="mean" (zeros included) is TF's value; "none" gives one loss per pair in
    row-major (a, p) order. Unlike TF, a batch without valid pair gives an attached 0, not NaN.

    semantics="pml" (PML TripletMarginMiner(margin, "semihard") + TripletMarginLoss(margin)):
    items are the triplets with d_ap < d_an <= d_ap + margin; loss relu(d_ap - d_an + margin).
    reduction="mean_positive" is PML's default AvgNonZeroReducer, "mean" its MeanReducer;
    "none" gives one loss per such triplet in (a, p, n) order (memory O(P * B)).

    Both find the negatives by binary search in each anchor's sorted negative distances:
    O(B^2 log B) time, O(B^2) memory.
    """
    margin = check_margin(margin)
    check_choice(semantics, name="semantics", valid=SEMANTICS)
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    check_flag(return_stats, name="return_stats")
    dist, pos, neg = batch_distances(embeddings, labels, metric=metric)  # (B, B) x 3
    sorted_neg, num_neg = sorted_negative_distances(dist, neg)  # (B, B), (B,)
    if semantics == "tf":
        loss, num_active, num_items = _tf(dist, pos, sorted_neg, num_neg, margin, reduction, embeddings)
    else:
        loss, num_active, num_items = _pml(dist, pos, neg, sorted_neg, num_neg, margin, reduction, embeddings)
    if not return_stats:
        return loss
    stats = triplet_stats(dist, pos, sorted_neg, margin=margin, num_active=num_active, num_items=num_items)
    return loss, stats


def _tf(dist, pos, sorted_neg, num_neg, margin, reduction, embeddings):
    """(B, B) tensors -> (loss, # active pairs, # valid pairs); TF-Addons semantics."""
    pairs = pos & (num_neg > 0)[:, None]  # (B, B) valid positive pairs
    last = (num_neg - 1).clamp_min(0)[:, None]  # (B, 1) index of the farthest negative
    above = torch.searchsorted(sorted_neg, dist.detach(), right=True)  # (B, B) first d_an > d_ap
    chosen = torch.minimum(above, last)  # falls back to the farthest negative when none is farther
    d_an = sorted_neg.gather(1, chosen)  # (B, B)
    per_pair = torch.relu(dist[pairs] - d_an[pairs] + margin)  # (P,)
    loss = reduce_losses(per_pair, reduction=reduction, anchor=embeddings)
    return loss, (per_pair > 0).sum(), pairs.sum()


def _pml(dist, pos, neg, sorted_neg, num_neg, margin, reduction, embeddings):
    """(B, B) tensors -> (loss, # active triplets, # semi-hard triplets); PML semantics."""
    t = dist + margin  # (B, B) upper bound d_ap + margin
    start = torch.searchsorted(sorted_neg, dist.detach(), right=True)  # first d_an > d_ap
    end_all = torch.searchsorted(sorted_neg, t.detach(), right=True)  # past the last d_an <= t
    mined = torch.where(pos, (end_all - start).clamp_min(0), torch.zeros_like(start)).sum()
    if reduction == "none":
        per_triplet = pair_hinges(dist, pos, neg, margin=margin, semi_hard=True)  # (T,)
        return per_triplet, (per_triplet > 0).sum(), mined
    end = torch.searchsorted(sorted_neg, t.detach())  # past the last d_an < t (loss > 0)
    total, active = window_hinge_sum(t, pos, sorted_neg, num_neg, start=start, end=end)
    loss = reduce_total(total, num_items=mined, num_positive=active, reduction=reduction, anchor=embeddings)
    return loss, active, mined
