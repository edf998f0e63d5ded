"""Semi-hard triplet loss, TF-Addons and PML semantics, without any (B, B, B) tensor."""

from __future__ import annotations

import torch

from .batch_all import counted_hinge_sum, pair_hinges, window_hinge_sum
from .distances import (
    DIRECT_COUNT_MAX,
    checked_distances,
    chunk_rows,
    count_sorted_below,
    sorted_positive_distances,
    working_precision,
)
from .masks import negative_mask, positive_mask
from .reductions import REDUCTIONS, reduce_losses, reduce_total
from .stats import TripletStats, triplet_stats
from .validation import check_choice, check_flag, check_triplet_margin

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

    Both sort each anchor's P positive distances and place every negative among them by
    binary search (direct comparisons for P <= DIRECT_COUNT_MAX): O(B^2 log P) time,
    O(B^2) memory, no (B, B, B) tensor. "tf" chooses its pairs on the detached distances
    and gathers them from the matrix with autograd.
    """
    margin = check_triplet_margin(margin)
    embeddings = working_precision(embeddings)  # float16/bfloat16 -> float32: one upcast, gradients summed in float32
    check_choice(semantics, name="semantics", valid=SEMANTICS)
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    check_flag(return_stats, name="return_stats")
    # selection on the detached matrix; the losses carry their gradient to the matrix (matrix products backward)
    dist = checked_distances(embeddings, labels, metric=metric)  # (B, B)
    sorted_pos, pos_index = sorted_positive_distances(dist.detach(), labels)  # (B, P) ascending, -inf padded
    if semantics == "tf":
        loss, num_active, num_items = _tf(dist, labels, sorted_pos, pos_index, margin, reduction, embeddings)
    else:
        count_mined = reduction == "mean" or return_stats  # the number of semi-hard triplets is used only there
        loss, num_active, num_items = _pml(
            dist, labels, sorted_pos, pos_index, margin, reduction, embeddings, count_mined=count_mined
        )
    if not return_stats:
        return loss
    stats = triplet_stats(
        dist, negative_mask(labels), sorted_pos, margin=margin, num_active=num_active, num_items=num_items
    )
    return loss, stats


def _tf(dist, labels, sorted_pos, pos_index, margin, reduction, embeddings):
    """(B, B) distances, (B, P) sorted positives -> (loss, # active pairs, # valid pairs); TF semantics.

    Per chunk of anchors: negative n of anchor a falls in bucket b = #(d_ap < d_an) (P direct
    comparisons); the positive at sorted position j needs the nearest negative in buckets
    > j: a suffix minimum over the bucket minima m_b (one scatter-amin; the comparisons
    written as 0 / 1 floats, fast on CPU), attained
    first by the first negative of its bucket at that value; else the farthest negative
    (first argmax). The N chosen (a, p) and (a, n) distances are gathered from the matrix
    with autograd: the backward is the matrix's (two matrix products), cheaper than
    recomputing the 2 N pairs from the (N, D) rows.
    """
    B, P = sorted_pos.shape
    d = dist.detach()
    chosen = torch.empty((B, P), dtype=torch.long, device=d.device)  # (B, P) negative index
    has_negative = torch.empty(B, dtype=torch.bool, device=d.device)
    step = chunk_rows(B, d.device)
    hit = torch.empty((min(step, B), B), dtype=d.dtype, device=d.device)
    for r in range(0, B, step):
        rows = slice(r, r + step)
        R = min(step, B - r)
        negatives = labels[rows, None] != labels[None, :]  # (R, B)
        q = torch.where(negatives, d[rows], torch.inf)  # (R, B); +inf: not a negative, never a minimum
        farthest = torch.where(negatives, d[rows], -torch.inf).argmax(dim=1, keepdim=True)  # (R, 1) first farthest
        has_negative[rows] = negatives.any(dim=1)
        s_cols = sorted_pos[rows].T.contiguous()[:, :, None]  # (P, R, 1)
        bucket = torch.zeros((R, B), dtype=d.dtype, device=d.device)  # # d_ap < d_an (padding included)
        for j in range(P):
            bucket.add_(torch.lt(s_cols[j], q, out=hit[:R]))
        index = bucket.long()  # (R, B)
        bucket_min = torch.full((R, P + 1), torch.inf, dtype=d.dtype, device=d.device)  # inf: empty bucket
        bucket_min.scatter_reduce_(1, index, q, "amin")  # (R, P + 1); bucket 0 is never farther
        at_rows, at_cols = (q == bucket_min.gather(1, index)).nonzero(as_tuple=True)  # negatives at their minimum
        bucket_arg = torch.full((R, P + 1), B, dtype=torch.long, device=d.device)
        bucket_arg.view(-1).scatter_reduce_(0, at_rows * (P + 1) + index[at_rows, at_cols], at_cols, "amin")
        reversed_min, reversed_at = torch.cummin(bucket_min[:, 1 : P + 1].flip(1), dim=1)  # buckets P..1
        farther_exists = torch.isfinite(reversed_min.flip(1))  # (R, P): a negative farther than position j
        nearest_farther = bucket_arg.gather(1, P - reversed_at.flip(1))  # (R, P) negative index
        chosen[rows] = torch.where(farther_exists, nearest_farther, farthest)
    real = torch.isfinite(sorted_pos) & has_negative[:, None]  # (B, P) valid pairs, not padding
    anchor, position = real.nonzero(as_tuple=True)  # (N,)
    positive = pos_index[anchor, position]  # (N,)
    order = torch.argsort(anchor * B + positive)  # row-major (a, p), as reduction="none" promises
    anchor, positive, negative = anchor[order], positive[order], chosen[anchor, position][order]  # (N,) x 3
    per_pair = torch.relu(dist[anchor, positive] - dist[anchor, negative] + margin)  # (N,) with autograd
    loss = reduce_losses(per_pair, reduction=reduction, anchor=embeddings)
    return loss, (per_pair > 0).sum(), real.sum()


def _pml(dist, labels, sorted_pos, pos_index, margin, reduction, embeddings, *, count_mined):
    """(B, B) tensors, (B, P) sorted positives -> (loss, # active triplets, # semi-hard triplets); PML semantics.

    For (a, n) the semi-hard positives are those with d_ap < d_an <= d_ap + margin: a
    window of the sorted positives, [#(t_p < d_an), #(d_ap < d_an)), t_p = d_ap + margin.
    """
    if reduction != "none" and sorted_pos.shape[1] <= DIRECT_COUNT_MAX:
        total, active, mined = counted_hinge_sum(
            dist, labels, sorted_pos, pos_index, margin=margin, semi_hard=True, count_mined=count_mined
        )
        loss = reduce_total(total, num_items=mined, num_positive=active, reduction=reduction, anchor=embeddings)
        return loss, active, mined
    pos, neg = positive_mask(labels), negative_mask(labels)  # (B, B) x 2
    thresholds = (sorted_pos + margin).detach()  # (B, P), ascending like sorted_pos
    d_an = torch.where(neg, dist.detach(), torch.inf)  # (B, B); +inf: not a negative, empty windows
    end = count_sorted_below(sorted_pos.detach(), d_an)  # (B, B): # d_ap < d_an (padding included)
    mined = (end - count_sorted_below(thresholds, d_an)).clamp_min(0).sum()  # t_p >= d_an > d_ap
    if reduction == "none":
        per_triplet = pair_hinges(dist, pos, neg, margin=margin, semi_hard=True)  # (T,)
        return per_triplet, (per_triplet > 0).sum(), mined
    start = count_sorted_below(thresholds, d_an, right=True)  # # t_p <= d_an: loss 0 below
    total, active = window_hinge_sum(dist, sorted_pos, pos_index, margin=margin, start=start, end=end)
    loss = reduce_total(total, num_items=mined, num_positive=active, reduction=reduction, anchor=embeddings)
    return loss, active, mined
