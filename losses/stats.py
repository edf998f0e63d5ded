"""Batch statistics that training logs: active fraction, pos_ratio and margin-violation rate."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .distances import count_sorted_below


@dataclass(frozen=True)
class TripletStats:
    """Detached 0-dim tensors describing one batch.

    active_fraction: share of the variant's own valid items (triplets, anchors or positive
        pairs) whose loss is > 0 (0 when there is no valid item);
    pos_ratio: share of all valid triplets (a, p, n) of the batch with d_ap < d_an;
    violation_rate: share of all valid triplets with d_ap + margin > d_an;
    num_items: number of valid items of the variant (int64).
    """

    active_fraction: torch.Tensor
    pos_ratio: torch.Tensor
    violation_rate: torch.Tensor
    num_items: torch.Tensor


def triplet_stats(
    dist: torch.Tensor,
    negatives: torch.Tensor,
    sorted_pos: torch.Tensor,
    *,
    margin: float,
    num_active: torch.Tensor,
    num_items: torch.Tensor,
) -> TripletStats:
    """dist (B, B), negatives (B, B) bool, sorted_pos (B, P) (-inf padded), counts () int -> TripletStats.

    O(B^2 log P): for each (anchor, negative) the positives closer than d_an (resp. with
    d_ap + margin > d_an) are counted by binary search in the anchor's sorted positives.
    """
    with torch.no_grad():
        d_an = dist.detach()
        sorted_pos = sorted_pos.detach()
        padding = torch.isinf(sorted_pos).sum(dim=1, keepdim=True)  # (B, 1)
        num_pos = sorted_pos.shape[1] - padding  # (B, 1)
        closer = count_sorted_below(sorted_pos, d_an) - padding  # (B, B): # d_ap < d_an
        not_violating = count_sorted_below(sorted_pos + margin, d_an, right=True) - padding  # # d_ap + m <= d_an
        zero = torch.zeros((), dtype=torch.long, device=dist.device)
        triplets = torch.where(negatives, num_pos, zero).sum()
        ordered = torch.where(negatives, closer, zero).sum()
        violated = torch.where(negatives, num_pos - not_violating, zero).sum()
        return TripletStats(
            active_fraction=_ratio(num_active, num_items, dist.dtype),
            pos_ratio=_ratio(ordered, triplets, dist.dtype),
            violation_rate=_ratio(violated, triplets, dist.dtype),
            num_items=num_items.detach().to(torch.long),
        )


def _ratio(part: torch.Tensor, whole: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """part () int, whole () int -> part / whole as dtype, 0 when whole == 0."""
    return (part.detach().to(dtype) / whole.detach().clamp_min(1).to(dtype)).detach()
