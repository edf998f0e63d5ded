"""Batch-all triplet loss: every valid triplet (a, p, n) of the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distances import batch_distances, sorted_negative_distances
from .masks import triplet_mask
from .reductions import REDUCTIONS, reduce_losses, reduce_total
from .stats import TripletStats, triplet_stats
from .validation import check_choice, check_flag, check_margin

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
    method="sorted" gives the same value and gradient in O(B^2 log B) time and O(B^2)
    memory: per anchor the negative distances are sorted once; for a positive pair with
    threshold t = d_ap + margin, c = #(d_an < t) by binary search and the hinge sum over
    negatives is c * t - (sum of the c smallest d_an), a prefix sum. Values are centred
    per anchor before the prefix sum to limit float32 cancellation.
    """
    margin = check_margin(margin)
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    check_choice(method, name="method", valid=METHODS)
    check_flag(return_stats, name="return_stats")
    dist, pos, neg = batch_distances(embeddings, labels, metric=metric)  # (B, B) x 3
    num_items = (pos.sum(dim=1) * neg.sum(dim=1)).sum()  # () valid triplets
    sorted_neg = None
    if method == "mask" or reduction == "none":
        if method == "mask":
            per_triplet = _per_triplet_mask(dist, labels, margin)  # (T,)
        else:
            per_triplet = pair_hinges(dist, pos, neg, margin=margin)  # (T,)
        loss = reduce_losses(per_triplet, reduction=reduction, anchor=embeddings)
        num_active = (per_triplet > 0).sum()
    else:
        sorted_neg, num_neg = sorted_negative_distances(dist, neg)  # (B, B), (B,)
        t = dist + margin  # (B, B): threshold of pair (a, p)
        end = torch.searchsorted(sorted_neg, t.detach())  # (B, B): # d_an < t, strict like relu's kink
        total, num_active = window_hinge_sum(t, pos, sorted_neg, num_neg, start=torch.zeros_like(end), end=end)
        loss = reduce_total(total, num_items=num_items, num_positive=num_active, reduction=reduction, anchor=embeddings)
    if not return_stats:
        return loss
    if sorted_neg is None:
        sorted_neg, _ = sorted_negative_distances(dist.detach(), neg)
    stats = triplet_stats(dist, pos, sorted_neg, margin=margin, num_active=num_active, num_items=num_items)
    return loss, stats


def _per_triplet_mask(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """dist (B, B), labels (B,) -> (T,) hinge per valid triplet, (a, p, n) order; O(B^3) memory."""
    hinge = torch.relu(dist[:, :, None] - dist[:, None, :] + margin)  # (B, B, B)
    return hinge[triplet_mask(labels)]


def pair_hinges(
    dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, *, margin: float, semi_hard: bool = False
) -> torch.Tensor:
    """dist (B, B), pos (B, B) bool, neg (B, B) bool -> (T,) relu(d_ap + margin - d_an), (a, p, n) order.

    One row per positive pair (a, p) against the B candidates n: memory O(P * B).
    semi_hard=True keeps only the negatives with d_ap < d_an <= d_ap + margin.
    """
    anchor, positive = pos.nonzero(as_tuple=True)  # (P,), (P,)
    d_ap = dist[anchor, positive][:, None]  # (P, 1)
    d_an = dist[anchor]  # (P, B)
    t = d_ap + margin  # (P, 1)
    keep = neg[anchor]  # (P, B)
    if semi_hard:
        keep = keep & (d_an > d_ap) & (d_an <= t)
    return torch.relu(t - d_an)[keep]


def window_hinge_sum(
    t: torch.Tensor,
    pairs: torch.Tensor,
    sorted_neg: torch.Tensor,
    num_neg: torch.Tensor,
    *,
    start: torch.Tensor,
    end: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """t (B, B), pairs (B, B) bool, sorted_neg (B, B), num_neg (B,), start/end (B, B) int -> (sum (), count ()).

    Sum over the selected pairs (a, p) of sum_{start <= k < end} (t_ap - sorted_neg[a, k]),
    by prefix sums over each anchor's sorted negatives (centred per anchor on their
    detached mean). Gradient flows through t and the sorted distances, exactly as the
    direct sum of the same terms.
    """
    B = sorted_neg.shape[0]
    valid = torch.arange(B, device=t.device)[None, :] < num_neg[:, None]  # (B, B)
    zero = torch.zeros((), dtype=t.dtype, device=t.device)
    centre = (torch.where(valid, sorted_neg.detach(), zero).sum(dim=1) / num_neg.clamp_min(1))[:, None]  # (B, 1)
    prefix = F.pad(torch.where(valid, sorted_neg - centre, zero).cumsum(dim=1), (1, 0))  # (B, B + 1)
    count = (end - start).clamp_min(0)  # (B, B)
    start = torch.minimum(start, end)
    window = prefix.gather(1, start + count) - prefix.gather(1, start)  # (B, B)
    hinge = count * (t - centre) - window  # (B, B)
    total = torch.where(pairs, hinge, zero).sum()
    active = torch.where(pairs, count, torch.zeros_like(count)).sum()
    return total, active
