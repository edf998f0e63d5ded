"""Batch-all triplet loss: every valid triplet (a, p, n) of the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distances import (
    DIRECT_COUNT_MAX,
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
from .reductions import REDUCTIONS, overflow_safe_sum, reduce_losses
from .stats import TripletStats, triplet_stats
from .validation import check_choice, check_flag, check_triplet_margin

METHODS = ("sorted", "mask")


def batch_all_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    margin: float,
    metric: str,
    reduction: str = "mean_positive",
    method: str = "sorted",
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, TripletStats]:
    """embeddings (B, D) float, labels (B,) int -> scalar (or (T,) per triplet for reduction="none").

    Items are the T valid triplets (a, p, n): a != p, y_a == y_p != y_n; each has loss
    relu(d_ap - d_an + margin). "mean" divides by T, "mean_positive" by the number of
    triplets with loss > 0 (PML's TripletMarginLoss default reducer). "none" returns the T
    losses in lexicographic (a, p, n) order (memory O(T)).

    method="mask" is the textbook (B, B, B) version, kept as the readable reference.
    method="sorted" gives the same value and gradient in O(B^2 log P) time and O(B^2)
    memory, P the largest number of positives of an anchor (K - 1 in P x K batches):
    per anchor the thresholds t_p = d_ap + margin are sorted once; for each negative n,
    the c = #(t_p > d_an) active positives are found by binary search (strict, as relu's
    zero gradient at the kink), and their hinge sum is (sum of the c largest t_p) - c * d_an,
    a suffix sum. Sorting the P positives instead of the B negatives makes the search
    cost log P instead of a full (B, B) sort. For P <= DIRECT_COUNT_MAX the counts come
    from direct comparisons with the P thresholds instead (faster there; same result).
    """
    margin = check_triplet_margin(margin)
    embeddings = working_precision(embeddings)  # float16/bfloat16 -> float32: one upcast, gradients summed in float32
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    check_choice(method, name="method", valid=METHODS)
    check_flag(return_stats, name="return_stats")
    dist = checked_distances(embeddings, labels, metric=metric)  # (B, B)
    return batch_all_from_distances(dist, labels, labels, in_batch_self_index(labels), anchor=embeddings,
                                    margin=margin, reduction=reduction, method=method, return_stats=return_stats)


def batch_all_triplet_loss_refs(
    anchors: torch.Tensor,
    labels: torch.Tensor,
    references: torch.Tensor,
    reference_labels: torch.Tensor,
    *,
    anchor_index_in_refs: torch.Tensor | None,
    margin: float,
    metric: str,
    reduction: str = "mean_positive",
    method: str = "sorted",
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, TripletStats]:
    """anchors (B, D) float, labels (B,) int, references (M, D) float, reference_labels (M,) int,
    anchor_index_in_refs (B,) int (the reference that IS the anchor, or -1; None: none is) -> scalar
    (or (T,) per triplet for reduction="none").

    `batch_all_triplet_loss` with anchors from the batch and positives and negatives from
    the references (a cross-batch memory): triplets (a, p, n), p, n references,
    y_p == y_a != y_n, p not the anchor's own entry (PML CrossBatchMemory's self-comparison
    rule). The same reductions, methods and stats; O(B M log P) time, O(B M) memory, P the
    most positives of an anchor among the references. Gradients to the anchors, and to the
    references when they require one. The in-batch loss is this with references = batch.
    """
    margin = check_triplet_margin(margin)
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    check_choice(method, name="method", valid=METHODS)
    check_flag(return_stats, name="return_stats")
    self_index = check_references(anchors, labels, references, reference_labels, anchor_index_in_refs)
    anchors = working_precision(anchors)
    dist = cross_distances(anchors, references, metric=metric)  # (B, M)
    return batch_all_from_distances(dist, labels, reference_labels, self_index, anchor=anchors, margin=margin,
                                    reduction=reduction, method=method, return_stats=return_stats)


def batch_all_from_distances(
    dist: torch.Tensor,
    labels: torch.Tensor,
    reference_labels: torch.Tensor,
    self_index: torch.Tensor,
    *,
    anchor: torch.Tensor,
    margin: float,
    reduction: str,
    method: str,
    return_stats: bool,
):
    """dist (B, M), labels (B,), reference_labels (M,), self_index (B,) -> the batch-all loss (and stats).

    The one implementation of both entry points (checked inputs); `anchor` carries the
    attached zero of empty reductions.
    """
    members, real, same = reference_members(labels, reference_labels, self_index)  # (B, W) x 2, (B,)
    num_items = (real.sum(dim=1) * (reference_labels.shape[0] - same)).sum()  # () valid triplets
    sorted_pos = None
    if method == "mask" or reduction == "none":
        pos, neg = reference_masks(labels, reference_labels, self_index)  # (B, M) x 2
        if method == "mask":
            per_triplet = _per_triplet_mask(dist, pos, neg, margin)  # (T,)
        else:
            per_triplet = pair_hinges(dist, pos, neg, margin=margin)  # (T,)
        loss = reduce_losses(per_triplet, reduction=reduction, anchor=anchor)
        num_active = (per_triplet > 0).sum()
    else:
        sorted_pos, pos_index = sorted_positive_distances(dist.detach(), labels, members=members, real=real)
        if sorted_pos.shape[1] <= DIRECT_COUNT_MAX:
            loss, num_active, _ = counted_hinge_sum(
                dist, members, sorted_pos, pos_index, margin=margin, reduction=reduction, num_items=num_items
            )
        else:
            _, neg = reference_masks(labels, reference_labels, self_index)
            d_an = torch.where(neg, dist.detach(), torch.inf)  # (B, M); +inf: not a negative
            start = count_sorted_below(sorted_pos + margin, d_an, right=True)  # (B, M): first t_p > d_an
            loss, num_active = window_hinge_sum(dist, sorted_pos, pos_index, margin=margin, start=start,
                                                reduction=reduction, num_items=num_items)
    if not return_stats:
        return loss
    if sorted_pos is None:
        sorted_pos, _ = sorted_positive_distances(dist.detach(), labels, members=members, real=real)
    negatives = reference_masks(labels, reference_labels, self_index)[1]
    stats = triplet_stats(dist, negatives, sorted_pos, margin=margin, num_active=num_active, num_items=num_items)
    return loss, stats


def _per_triplet_mask(dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float) -> torch.Tensor:
    """dist (B, M), pos/neg (B, M) bool -> (T,) hinge per valid triplet, (a, p, n) order; O(B M^2) memory."""
    hinge = torch.relu(dist[:, :, None] - dist[:, None, :] + margin)  # (B, M, M)
    return hinge[pos[:, :, None] & neg[:, None, :]]


def pair_hinges(
    dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, *, margin: float, semi_hard: bool = False
) -> torch.Tensor:
    """dist (B, M), pos (B, M) bool, neg (B, M) bool -> (T,) relu(d_ap + margin - d_an), (a, p, n) order.

    One row per positive pair (a, p) against the M candidates n: memory O(P * M).
    semi_hard=True keeps only the negatives with d_ap < d_an <= d_ap + margin.
    """
    anchor, positive = pos.nonzero(as_tuple=True)  # (P,), (P,)
    d_ap = dist[anchor, positive][:, None]  # (P, 1)
    d_an = dist[anchor]  # (P, M)
    t = d_ap + margin  # (P, 1)
    keep = neg[anchor]  # (P, M)
    if semi_hard:
        keep = keep & (d_an > d_ap) & (d_an <= t)
    return torch.relu(t - d_an)[keep]


def window_hinge_sum(
    dist: torch.Tensor,
    sorted_pos: torch.Tensor,
    pos_index: torch.Tensor,
    *,
    margin: float,
    start: torch.Tensor,
    end: torch.Tensor | None = None,
    reduction: str = "sum",
    num_items: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dist (B, M), sorted_pos/pos_index (B, P), start/end (B, M) int -> (loss (), count ()).

    Sum over (a, n) and sorted positive positions start <= j < end (end defaults to P)
    of t_j - d_an, t_j = sorted_pos[a, j] + margin: the hinges of those triplets, all
    active when start is past every t_j <= d_an. Pairs (a, n) that are not negatives
    must have an empty window (searches done on +inf there give start = end = P).
    `count` is the number of terms. loss is the sum for reduction="sum", divided by
    max(count, 1) for "mean_positive" and by max(num_items, 1) for "mean"
    (`_reduced_in_place`: the sum is kept in float64 until divided). Differentiable in
    dist with the exact gradient, in O(B^2) memory.
    """
    check_choice(reduction, name="reduction", valid=REDUCTIONS[:3])
    if reduction == "mean" and num_items is None:
        raise ValueError("reduction='mean' needs num_items")
    return _WindowHingeSum.apply(dist, sorted_pos.detach(), pos_index, start, end, margin, reduction, num_items)


def _centred_thresholds(sorted_pos: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sorted_pos (B, P) -inf padded -> valid (B, P) bool, t - centre (B, P) (0 on padding), centre (B, 1).

    t = d_ap + margin; centre is each anchor's mean t: sums of t - centre and d_an - centre
    stay small, which keeps float32 hinge sums accurate.
    """
    valid = torch.isfinite(sorted_pos)  # (B, P) real positives, not padding
    zero = torch.zeros((), dtype=sorted_pos.dtype, device=sorted_pos.device)
    t = torch.where(valid, sorted_pos + margin, zero)  # (B, P)
    centre = (t.sum(dim=1) / valid.sum(dim=1).clamp_min(1))[:, None]  # (B, 1)
    return valid, torch.where(valid, t - centre, zero), centre


class _WindowHingeSum(torch.autograd.Function):
    """Forward: the hinge sum by prefix sums. Backward: counts, not a graph of (B, M) temporaries.

    d total / d d_an = -(number of terms of (a, n)); d total / d d_ap = number of
    negatives whose window holds p's position (a histogram of window starts and ends).

    Double backward (create_graph=True) is supported, and exact: the sum is linear in dist
    between the kinks of the hinges (the counts are constants there), so its second
    derivative in dist is 0 and the backward, the saved counts times the output
    gradient, is differentiable in that gradient by ordinary autograd.
    """

    @staticmethod
    def forward(ctx, dist, sorted_pos, pos_index, start, end, margin, reduction, num_items):
        B, P = sorted_pos.shape
        d = dist.detach()
        valid, t_centred, centre = _centred_thresholds(sorted_pos, margin)
        zero = torch.zeros((), dtype=d.dtype, device=d.device)
        prefix = F.pad(t_centred.cumsum(dim=1), (1, 0))  # (B, P + 1)
        hits = torch.zeros((B, P + 1), dtype=d.dtype, device=d.device)
        if end is None:  # window [start, P): a suffix sum
            count = P - start.to(d.dtype)  # (B, M)
            window = prefix[:, P:] - prefix.gather(1, start)  # (B, M)
            hits.scatter_add_(1, start, torch.ones_like(d))
        else:
            terms = (end - start).clamp_min(0)  # (B, M)
            start = torch.minimum(start, end)
            stop = start + terms
            window = prefix.gather(1, stop) - prefix.gather(1, start)  # (B, M)
            count = terms.to(d.dtype)
            hits.scatter_add_(1, start, torch.ones_like(d)).scatter_add_(1, stop, -torch.ones_like(d))
        total = overflow_safe_sum(torch.addcmul(window, count, d - centre, value=-1))  # () d's dtype or float64
        per_position = torch.where(valid, hits.cumsum(dim=1)[:, :P], zero)  # (B, P) negatives per positive
        grad = torch.zeros_like(d).scatter_add_(1, pos_index, per_position).sub_(count)  # (B, M); padding adds 0
        active = count.sum().to(torch.long)
        loss = _reduced_in_place(total, grad, reduction=reduction,
                                 count=active if reduction == "mean_positive" else num_items)
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(active)
        return loss, active

    @staticmethod
    def backward(ctx, grad_loss, grad_count):
        (grad,) = ctx.saved_tensors
        return _times(grad, grad_loss), None, None, None, None, None, None, None


def counted_hinge_sum(
    dist: torch.Tensor,
    members: torch.Tensor,
    sorted_pos: torch.Tensor,
    pos_index: torch.Tensor,
    *,
    margin: float,
    semi_hard: bool = False,
    count_mined: bool = True,
    reduction: str = "sum",
    num_items: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dist (B, M), members (B, W) (`class_members`), sorted_pos/pos_index (B, P) -> (loss (), # active (), # mined ()).

    loss is the hinge sum for reduction="sum"; "mean_positive" divides it by max(# active, 1),
    "mean" by max(num_items, 1), or by max(# mined, 1) when num_items is None (semi-hard
    with count_mined): `_reduced_in_place`, done inside so that the saved
    gradient is scaled once in place and a plain `loss.backward()` (output gradient exactly
    1, on the CPU) passes it on without a second (B, M) tensor: measured peak memory at
    B = 16384 2.5 GB instead of 3.5 GB, and about 1-2% of a call's time at B = 1024.

    The same sum as `window_hinge_sum` by direct comparisons, for small P: triplet (a, p_j, n)
    is active when t_j = d_ap_j + margin > d_an (and, with semi_hard, d_ap_j < d_an);
    `mined` counts the semi-hard triplets d_ap < d_an <= t (0 unless semi_hard and count_mined:
    it costs two more passes per positive, and only a "mean" over them needs it). The sum is
    linear in dist given the detached counts, sum_j c_aj t_aj - sum_n w_an d_an
    (c_aj = # active negatives of (a, p_j), w_an = # active positives of (a, n)), so its
    gradient is one count matrix and the distances' backward matrix products. Per chunk
    of anchors (taken in order of their number of positives, each chunk's padding skipped:
    `anchor_chunks`): P comparisons of (R, M) written as 0 / 1 in dist's dtype (exact
    counts; on CPU several times faster than bool outputs), the non-negatives set to +inf
    from each anchor's class columns (`negative_rows`: no (B, M) mask).
    """
    check_choice(reduction, name="reduction", valid=REDUCTIONS[:3])
    if reduction == "mean" and num_items is None and not (semi_hard and count_mined):
        raise ValueError("reduction='mean' needs num_items, or semi_hard=True with count_mined=True")
    return _CountedHingeSum.apply(
        dist, members, sorted_pos.detach(), pos_index, margin, semi_hard, count_mined, reduction, num_items
    )


class _CountedHingeSum(torch.autograd.Function):
    """Forward: per chunk of R anchors, P (R, M) comparisons counted as 0 / 1 floats. Backward: the saved counts.

    Double backward (create_graph=True) is supported, and exact, as for `_WindowHingeSum`:
    linear in dist between the kinks, so the second derivative in dist is 0, and the
    backward (`_times`) is a differentiable product with the output gradient.
    """

    @staticmethod
    def forward(ctx, dist, members, sorted_pos, pos_index, margin, semi_hard, count_mined, reduction, num_items):
        B, P = sorted_pos.shape
        d = dist.detach()
        M = d.shape[1]  # reference columns (M = B in a batch)
        _, t_centred, centre = _centred_thresholds(sorted_pos, margin)
        t = sorted_pos + margin  # (B, P); -inf padding is never active
        total = torch.zeros((), dtype=torch.float64, device=d.device)
        mined = torch.zeros((), dtype=torch.long, device=d.device)
        order, chunks = anchor_chunks(sorted_pos, chunk_rows(M, d.device))  # anchors by number of positives
        # each active term c (d_an - centre) is at most P max t in size (d_an < t there): when a chunk's float32
        # sums of them may overflow (distances near the top of float32), they are summed in float64
        wide = bool(P * chunks[0][1] * M * t[:, -1].max() > torch.finfo(d.dtype).max / 4)
        members_o, t_o, s_o = members[order], t[order].T.contiguous(), sorted_pos[order].T.contiguous()  # (P, M) x 2
        t_centred_o, centre_o = t_centred[order], centre[order]
        # comparisons written as 0 / 1 in d's dtype: several times faster than bool outputs on CPU, exact counts
        step = chunks[0][1]
        buffers, _ = chunk_buffers(step, M, dtype=d.dtype, device=d.device, floats=5 if count_mined else 4)
        grad = torch.empty_like(d)  # (B, M) d total / d dist
        positions_o = []  # per chunk (R, P): active negatives per positive
        for start, stop, skip in chunks:  # positions before `skip`: padding, never active
            R = stop - start
            on, closer, q_buf, count, *kept = (buffer[:R] for buffer in buffers)  # kept: only to count the mined
            q = negative_rows(d, order[start:stop], members_o[start:stop], out=q_buf)  # (R, M); +inf: never active
            positions_t = torch.zeros((P, R), dtype=d.dtype, device=d.device)  # (P, R): row sums are fast
            count.zero_()  # (R, M) active positives per (a, n)
            t_cols, s_cols = t_o[skip:, start:stop, None].unbind(0), s_o[skip:, start:stop, None].unbind(0)  # (R, 1)
            for t_col, s_col, position in zip(t_cols, s_cols, positions_t[skip:].unbind(0)):  # position (R,)
                torch.gt(t_col, q, out=on)  # t_j > d_an
                if semi_hard:
                    torch.lt(s_col, q, out=closer)  # d_ap < d_an
                    if count_mined:
                        torch.ge(t_col, q, out=kept[0])
                        mined += kept[0].mul_(closer).sum().to(torch.long)
                    on.mul_(closer)
                count.add_(on)
                torch.sum(on, dim=1, out=position)
            chunk_positions = positions_t.T  # (R, P)
            centred = torch.index_select(d, 0, order[start:stop], out=on).sub_(centre_o[start:stop])  # (R, M)
            if wide:
                total += (chunk_positions.double() * t_centred_o[start:stop].double()).sum()
                total -= torch.mul(count, centred, out=centred).double().sum()
            else:
                total += (chunk_positions * t_centred_o[start:stop]).sum().double()
                total -= torch.dot(count.view(-1), centred.view(-1)).double()
            gradient_rows = count.neg_().scatter_add_(1, pos_index[order[start:stop]], chunk_positions)  # padding: 0
            grad.index_copy_(0, order[start:stop], gradient_rows)
            positions_o.append(chunk_positions)
        per_position = torch.empty_like(sorted_pos).index_copy_(0, order, torch.cat(positions_o))
        active = per_position.sum(dtype=torch.float64).to(torch.long)
        count = active if reduction == "mean_positive" else (mined if num_items is None else num_items)
        loss = _reduced_in_place(total, grad, reduction=reduction, count=count)
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(active, mined)
        return loss, active, mined

    @staticmethod
    def backward(ctx, grad_loss, grad_active, grad_mined):
        (grad,) = ctx.saved_tensors
        return _times(grad, grad_loss), None, None, None, None, None, None, None, None


def _reduced_in_place(
    total: torch.Tensor, grad: torch.Tensor, *, reduction: str, count: torch.Tensor | None
) -> torch.Tensor:
    """total () hinge sum (float64, or grad's dtype), grad (B, M) its gradient in dist, count () int
    -> the loss in grad's dtype.

    "sum": total; "mean" / "mean_positive": total / max(count, 1), and grad scaled by the same
    in place. The division is in grad's dtype, except where the sum overflows it (float32
    hinges of rows of norm 1e17): then in float64 before the cast, so a mean is finite
    wherever it is representable. A choice between two scalars: no host synchronisation.
    """
    loss = total.to(grad.dtype)
    if reduction != "sum":
        count = count.clamp_min(1)
        wide = (total / count.to(total.dtype)).to(grad.dtype)  # () divided before the cast
        loss = torch.where(torch.isfinite(loss), loss / count.to(grad.dtype), wide)
        grad.mul_(1 / count.to(grad.dtype))  # d loss / d dist
    return loss


def _times(grad: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """grad (B, M) a saved gradient, scale () the output's gradient -> grad * scale.

    The saved tensor itself when scale is exactly 1 on the CPU outside double backward (a
    plain `loss.backward()`): no second (B, M) tensor. It is never modified afterwards, so
    a later backward through the same graph gets the same values. Elsewhere, or on other
    devices (no host synchronisation there), the product.
    """
    if scale.device.type == "cpu" and not torch.is_grad_enabled() and bool(scale == 1):
        return grad
    return grad * scale
