"""Boolean masks of valid pairs and triplets from integer labels, and the hardest pairs under them."""

from __future__ import annotations

import torch

from .validation import check_labels


def positive_mask(labels: torch.Tensor) -> torch.Tensor:
    """labels (B,) int -> (B, B) bool, True where i != j and y_i == y_j."""
    labels = _checked(labels)
    same = labels[:, None] == labels[None, :]  # (B, B)
    return same & ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)


def negative_mask(labels: torch.Tensor) -> torch.Tensor:
    """labels (B,) int -> (B, B) bool, True where y_i != y_j."""
    labels = _checked(labels)
    return labels[:, None] != labels[None, :]


def triplet_mask(labels: torch.Tensor) -> torch.Tensor:
    """labels (B,) int -> (B, B, B) bool, True at (i, j, k) where i, j, k distinct and y_i == y_j != y_k.

    Memory is B^3 bytes: the readable reference, not for large batches.
    """
    pos = positive_mask(labels)  # (B, B), i != j
    neg = negative_mask(labels)  # (B, B); y_i != y_k implies i != k and j != k
    return pos[:, :, None] & neg[:, None, :]


def valid_triplet_count(labels: torch.Tensor) -> torch.Tensor:
    """labels (B,) int -> () int64: the number of valid triplets, sum over anchors of (n_y - 1)(B - n_y)."""
    labels = _checked(labels)
    _, group, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    n = counts[group]  # (B,) size of each anchor's class
    return ((n - 1) * (labels.shape[0] - n)).sum()


def _checked(labels: torch.Tensor) -> torch.Tensor:
    """labels (B,) int -> labels, validated on their own device."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"expected labels to be a torch.Tensor, got {type(labels).__name__}")
    return check_labels(labels, batch_size=labels.shape[0] if labels.dim() else -1, device=labels.device)


def hardest_pairs(dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dist (B, M) float, pos (B, M) bool, neg (B, M) bool -> valid (B,) bool, farthest_pos (A,) int64,
    nearest_neg (A,) int64.

    valid: the rows (anchors) with at least one positive and one negative; A = valid.sum().
    For each valid row in index order, the column of its largest positive distance and of
    its smallest negative distance; a tie goes to the first such column (as PML's
    BatchHardMiner). Batch-hard's selection; call it on detached distances.
    """
    valid = pos.any(dim=1) & neg.any(dim=1)  # (B,)
    farthest_pos = torch.where(pos, dist, -torch.inf).argmax(dim=1)[valid]  # (A,)
    nearest_neg = torch.where(neg, dist, torch.inf).argmin(dim=1)[valid]  # (A,)
    return valid, farthest_pos, nearest_neg
