"""Deliberately wrong batch-vs-memory triplet losses, called like losses.batch_all_triplet_loss_refs.

fn(anchors (B, D), labels (B,), references (M, D), reference_labels (M,), *,
anchor_index_in_refs (B,) or None, margin) -> scalar. Each faulty function differs from
the correct one above it by its fault only (named in its docstring); the checker must flag
each with the right diagnosis (tests/test_conformance_memory.py).
"""

from __future__ import annotations

import torch


def user_cross_distances(a, r):
    """a (B, D), r (M, D) -> (B, M) euclidean distances, exactly 0 (with a zero gradient) between equal rows."""
    sq = (a[:, None, :] - r[None, :, :]).pow(2).sum(-1)
    zero = (sq == 0).to(a.dtype)
    return torch.sqrt(sq + zero * 1e-16) * (1.0 - zero)


def user_ref_masks(labels, reference_labels, own_index):
    """labels (B,), reference_labels (M,), own_index (B,) or None -> positives (B, M), negatives (B, M)."""
    same = labels[:, None] == reference_labels[None, :]
    own = torch.zeros_like(same)
    if own_index is not None:
        own = torch.arange(len(reference_labels))[None, :] == own_index[:, None]
    return same & ~own, ~same


def _batch_all(d_p, d_n, pos, neg, margin):
    hinge = torch.relu(d_p[:, :, None] - d_n[:, None, :] + margin)
    items = hinge[pos[:, :, None] & neg[:, None, :]]
    return items.sum() / max(int((items > 0).sum()), 1)


def _batch_hard(dist, pos, neg, margin):
    valid = pos.any(1) & neg.any(1)
    d_ap = torch.where(pos, dist, -torch.inf).max(1).values
    d_an = torch.where(neg, dist, torch.inf).min(1).values
    return torch.relu(d_ap - d_an + margin)[valid].sum() / max(int(valid.sum()), 1) + 0.0 * dist.sum()


def correct_batch_all_refs(anchors, labels, references, reference_labels, *, anchor_index_in_refs, margin=0.2):
    dist = user_cross_distances(anchors, references)
    return _batch_all(dist, dist, *user_ref_masks(labels, reference_labels, anchor_index_in_refs), margin)


def correct_batch_hard_refs(anchors, labels, references, reference_labels, *, anchor_index_in_refs, margin=0.2):
    dist = user_cross_distances(anchors, references)
    return _batch_hard(dist, *user_ref_masks(labels, reference_labels, anchor_index_in_refs), margin)


def self_not_excluded(anchors, labels, references, reference_labels, *, anchor_index_in_refs, margin=0.2):
    """Fault: the anchor's own entry in the memory (distance 0) is one of its positives."""
    dist = user_cross_distances(anchors, references)
    pos, neg = user_ref_masks(labels, reference_labels, None)
    return _batch_all(dist, dist, pos, neg, margin)


def self_excluded_by_position(anchors, labels, references, reference_labels, *, anchor_index_in_refs, margin=0.2):
    """Fault: reference a is taken for anchor a's own entry, as if the batch were references[:B]."""
    dist = user_cross_distances(anchors, references)
    B = len(labels)
    pos, neg = user_ref_masks(labels, reference_labels, torch.arange(B))
    return _batch_hard(dist, pos, neg, margin)


def negatives_from_the_batch(anchors, labels, references, reference_labels, *, anchor_index_in_refs, margin=0.2):
    """Fault: positives from the memory, negatives from the batch only."""
    d_p = user_cross_distances(anchors, references)
    d_n = user_cross_distances(anchors, anchors)
    pos, _ = user_ref_masks(labels, reference_labels, anchor_index_in_refs)
    return _batch_all(d_p, d_n, pos, labels[:, None] != labels[None, :], margin)


def references_detached(anchors, labels, references, reference_labels, *, anchor_index_in_refs, margin=0.2):
    """Fault: the references are detached inside the loss (no gradient reaches them when they require one)."""
    dist = user_cross_distances(anchors, references.detach())
    return _batch_hard(dist, *user_ref_masks(labels, reference_labels, anchor_index_in_refs), margin)
