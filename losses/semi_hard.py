"""Semi-hard triplet loss, TF-Addons and PML semantics, without any (B, B, B) tensor."""

from __future__ import annotations

import torch

from .batch_all import counted_hinge_sum, pair_hinges, window_hinge_sum
from .distances import (
    DIRECT_COUNT_MAX,
    add_counts_below_,
    anchor_chunks,
    checked_distances,
    chunk_buffers,
    chunk_rows,
    count_sorted_below,
    cross_distances,
    negative_rows,
    reference_members,
    sorted_positive_distances,
    working_precision,
)
from .references import check_references, in_batch_self_index, reference_masks
from .reductions import REDUCTIONS, reduce_losses
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
    return semi_hard_from_distances(dist, labels, labels, in_batch_self_index(labels), anchor=embeddings,
                                    margin=margin, semantics=semantics, reduction=reduction,
                                    return_stats=return_stats)


def semi_hard_triplet_loss_refs(
    anchors: torch.Tensor,
    labels: torch.Tensor,
    references: torch.Tensor,
    reference_labels: torch.Tensor,
    *,
    anchor_index_in_refs: torch.Tensor | None,
    margin: float,
    metric: str,
    semantics: str,
    reduction: str,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, TripletStats]:
    """anchors (B, D) float, labels (B,) int, references (M, D) float, reference_labels (M,) int,
    anchor_index_in_refs (B,) int (the reference that IS the anchor, or -1; None: none is) -> scalar
    (or per-item losses for reduction="none").

    `semi_hard_triplet_loss` with anchors from the batch and positives and negatives from
    the references: "tf" items are the pairs (a, p), p a reference of a's class other than
    a's own entry, whose anchor has a negative reference; "pml" items are the reference
    triplets with d_ap < d_an <= d_ap + margin (PML's TripletMarginMiner("semihard") inside
    CrossBatchMemory). O(B M log P) time, O(B M) memory; gradients to the anchors, and to
    the references when they require one. The in-batch loss is this with references = batch.
    """
    margin = check_triplet_margin(margin)
    check_choice(semantics, name="semantics", valid=SEMANTICS)
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    check_flag(return_stats, name="return_stats")
    self_index = check_references(anchors, labels, references, reference_labels, anchor_index_in_refs)
    anchors = working_precision(anchors)
    dist = cross_distances(anchors, references, metric=metric)  # (B, M)
    return semi_hard_from_distances(dist, labels, reference_labels, self_index, anchor=anchors, margin=margin,
                                    semantics=semantics, reduction=reduction, return_stats=return_stats)


def semi_hard_from_distances(
    dist: torch.Tensor,
    labels: torch.Tensor,
    reference_labels: torch.Tensor,
    self_index: torch.Tensor,
    *,
    anchor: torch.Tensor,
    margin: float,
    semantics: str,
    reduction: str,
    return_stats: bool,
):
    """dist (B, M), labels (B,), reference_labels (M,), self_index (B,) -> the semi-hard loss (and stats).

    The one implementation of both entry points (checked inputs).
    """
    members, real, _ = reference_members(labels, reference_labels, self_index)  # (B, W) x 2
    sorted_pos, pos_index = sorted_positive_distances(dist.detach(), labels, members=members, real=real)  # (B, P)
    masks = (labels, reference_labels, self_index)
    if semantics == "tf":
        loss, num_active, num_items = _tf(dist, members, sorted_pos, pos_index, margin, reduction, anchor)
    else:
        count_mined = reduction == "mean" or return_stats  # the number of semi-hard triplets is used only there
        loss, num_active, num_items = _pml(
            dist, masks, members, sorted_pos, pos_index, margin, reduction, count_mined=count_mined
        )
    if not return_stats:
        return loss
    stats = triplet_stats(
        dist, reference_masks(*masks)[1], sorted_pos, margin=margin, num_active=num_active, num_items=num_items
    )
    return loss, stats


def _tf(dist, members, sorted_pos, pos_index, margin, reduction, embeddings):
    """(B, M) distances, (B, P) sorted positives -> (loss, # active pairs, # valid pairs); TF semantics.

    Per chunk of anchors: negative n of anchor a falls in bucket b = #(d_ap < d_an) (P direct
    comparisons, written as 0 / 1 floats: fast on CPU); the positive at sorted position j
    needs the nearest negative in buckets > j, the first of ties (`nearest_in_later_buckets`);
    if there is none, the farthest negative (first argmax), looked for only in the rows that
    need it. The N chosen (a, p) and (a, n) distances are gathered from the matrix with
    autograd: the backward is the matrix's (two matrix products), cheaper than recomputing
    the 2 N pairs from the (N, D) rows.
    """
    B, P = sorted_pos.shape
    d = dist.detach()
    M = d.shape[1]  # reference columns (M = B in a batch)
    order, chunks = anchor_chunks(sorted_pos, chunk_rows(M, d.device))  # anchors by number of positives
    members_o, s_cols_o = members[order], sorted_pos[order].T.contiguous()  # (B, W), (P, B) in that order
    # buffers reused by every chunk (fresh (R, M) tensors per chunk cost page faults on CPU)
    (q_buf, bucket_buf, hit_buf), (index_buf, key_buf) = chunk_buffers(
        chunks[0][1], M, dtype=d.dtype, device=d.device, floats=3, longs=2)
    found, nearest = [], []  # per chunk (R, P) x 2, in `order`
    for start, stop, skip in chunks:
        R = stop - start
        q = negative_rows(d, order[start:stop], members_o[start:stop], out=q_buf[:R])  # (R, M); +inf: never chosen
        # (R, M) # d_ap < d_an; the first `skip` sorted positions are -inf padding: below every q
        bucket = add_counts_below_(bucket_buf[:R].fill_(skip), s_cols_o[skip:, start:stop, None].unbind(0), q,
                                   hit=hit_buf[:R])
        exists, first = nearest_in_later_buckets(q, index_buf[:R].copy_(bucket), P, keys=key_buf[:R])  # (R, P) x 2
        found.append(exists)
        nearest.append(first)
    found_o, chosen_o = torch.cat(found), torch.cat(nearest)  # (B, P) x 2, in `order`
    has_negative_o = found_o[:, -1].clone()  # (B,) a negative beyond the largest position: the row has one
    lacking = (~has_negative_o).nonzero().squeeze(1)  # (L,) rows with a position lacking a farther negative
    if lacking.numel():  # the farthest negative (first argmax), only in these rows
        q_lacking = negative_rows(d, order[lacking], members_o[lacking])  # (L, B)
        finite = torch.isfinite(q_lacking)
        farthest = torch.where(finite, q_lacking, -torch.inf).argmax(dim=1, keepdim=True)  # (L, 1)
        has_negative_o[lacking] = finite.any(dim=1)
        chosen_o[lacking] = torch.where(found_o[lacking], chosen_o[lacking], farthest)
    chosen = torch.empty_like(chosen_o).index_copy_(0, order, chosen_o)  # (B, P) negative index
    has_negative = torch.empty_like(has_negative_o).index_copy_(0, order, has_negative_o)  # (B,)
    real = torch.isfinite(sorted_pos) & has_negative[:, None]  # (B, P) valid pairs, not padding
    anchor, position = real.nonzero(as_tuple=True)  # (N,)
    positive = pos_index[anchor, position]  # (N,)
    negative = chosen[anchor, position]  # (N,)
    if reduction == "none":  # row-major (a, p), as reduction="none" promises; sums need no order
        order = torch.argsort(anchor * M + positive)
        anchor, positive, negative = anchor[order], positive[order], negative[order]  # (N,) x 3
    flat = torch.cat([anchor * M + positive, anchor * M + negative])  # (2 N,) one gather: one (B, M) gradient buffer
    d_ap, d_an = dist.reshape(-1)[flat].view(2, anchor.shape[0])  # (N,) x 2 with autograd
    per_pair = torch.relu(d_ap - d_an + margin)  # (N,)
    loss = reduce_losses(per_pair, reduction=reduction, anchor=embeddings)
    return loss, (per_pair > 0).sum(), real.sum()


_FLOAT32_INF_KEY = 0x7F800000 << 32  # the smallest key of a +inf float32 value


def nearest_in_later_buckets(
    q: torch.Tensor, bucket: torch.Tensor, P: int, *, keys: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """q (R, B) float >= 0 (+inf: excluded), bucket (R, B) int64 -> (exists (R, P) bool, first (R, P) int64).

    bucket[r, n] is the number of row r's sorted values below q[r, n] (in [0, P], so
    non-decreasing in q within a row), as the loop of `_tf` counts it.

    For each row and j < P: among the columns n with bucket[n] > j and finite q[n], the
    smallest q, and of ties the first n; exists is False (and first meaningless) when there
    is none. Per bucket the first minimum (one scatter-amin), then a suffix minimum over the
    buckets (a column with a smaller q sits in a lower bucket or the same one, so distinct
    buckets never tie). float32 packs (value bits, column) into one int64 key, so a single
    scatter gives both (non-negative floats order as their bits); other dtypes scatter the
    values, then the first column at each bucket's minimum. `keys`: an optional (R, B)
    int64 buffer for the packed keys.
    """
    R, B = q.shape
    columns = torch.arange(B, device=q.device)
    if q.dtype == torch.float32:
        keys = torch.empty((R, B), dtype=torch.long, device=q.device) if keys is None else keys
        keys.copy_(q.view(torch.int32)).bitwise_and_(0x7FFFFFFF)  # the value's bits; -0.0 as +0.0
        keys.bitwise_left_shift_(32).bitwise_or_(columns)  # (R, B) ordered as (value, column)
        per_bucket = torch.full((R, P + 1), torch.iinfo(torch.int64).max, dtype=torch.long, device=q.device)
        per_bucket.scatter_reduce_(1, bucket, keys, "amin")  # (R, P + 1) first minimum of each bucket
        suffix = per_bucket[:, 1:].flip(1).cummin(dim=1).values.flip(1)  # (R, P): over buckets > j
        return suffix < _FLOAT32_INF_KEY, suffix & 0xFFFFFFFF
    per_bucket = torch.full((R, P + 1), torch.inf, dtype=q.dtype, device=q.device)
    per_bucket.scatter_reduce_(1, bucket, q, "amin")  # (R, P + 1) minimum of each bucket
    at_minimum = torch.where(q == per_bucket.gather(1, bucket), columns, B)  # (R, B) columns at their bucket's minimum
    first = torch.full((R, P + 1), B, dtype=torch.long, device=q.device).scatter_reduce_(1, bucket, at_minimum, "amin")
    suffix, at = per_bucket[:, 1:].flip(1).cummin(dim=1)  # (R, P) over buckets P..1; at: the bucket reached
    return torch.isfinite(suffix.flip(1)), first.gather(1, P - at.flip(1))


def _pml(dist, masks, members, sorted_pos, pos_index, margin, reduction, *, count_mined):
    """(B, M) tensors, (B, P) sorted positives -> (loss, # active triplets, # semi-hard triplets); PML semantics.

    For (a, n) the semi-hard positives are those with d_ap < d_an <= d_ap + margin: a
    window of the sorted positives, [#(t_p < d_an), #(d_ap < d_an)), t_p = d_ap + margin.
    """
    if reduction != "none" and sorted_pos.shape[1] <= DIRECT_COUNT_MAX:
        loss, active, mined = counted_hinge_sum(
            dist, members, sorted_pos, pos_index, margin=margin, semi_hard=True, count_mined=count_mined,
            reduction=reduction,
        )  # "mean": over the mined triplets
        return loss, active, mined
    pos, neg = reference_masks(*masks)  # (B, M) x 2
    thresholds = (sorted_pos + margin).detach()  # (B, P), ascending like sorted_pos
    d_an = torch.where(neg, dist.detach(), torch.inf)  # (B, M); +inf: not a negative, empty windows
    end = count_sorted_below(sorted_pos.detach(), d_an)  # (B, M): # d_ap < d_an (padding included)
    mined = (end - count_sorted_below(thresholds, d_an)).clamp_min(0).sum()  # t_p >= d_an > d_ap
    if reduction == "none":
        per_triplet = pair_hinges(dist, pos, neg, margin=margin, semi_hard=True)  # (T,)
        return per_triplet, (per_triplet > 0).sum(), mined
    start = count_sorted_below(thresholds, d_an, right=True)  # # t_p <= d_an: loss 0 below
    loss, active = window_hinge_sum(dist, sorted_pos, pos_index, margin=margin, start=start, end=end,
                                    reduction=reduction, num_items=mined)
    return loss, active, mined
