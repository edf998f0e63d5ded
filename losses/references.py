"""Anchors against a reference set (a cross-batch memory): validation and the (B, M) pair masks.

The in-batch losses are the special case references = batch, `self_index` = arange(B):
every anchor is its own reference column, excluded from its positives.
"""

from __future__ import annotations

import torch

from .validation import check_embeddings, check_labels


def check_references(
    anchors: torch.Tensor,
    labels: torch.Tensor,
    references: torch.Tensor,
    reference_labels: torch.Tensor,
    anchor_index_in_refs: torch.Tensor | None,
) -> torch.Tensor:
    """anchors (B, D), labels (B,), references (M, D), reference_labels (M,), anchor_index_in_refs (B,) int or None
    -> self_index (B,) int64: the reference column that IS each anchor, or -1.

    None means no anchor is among the references. Bad shapes, dtypes, devices, indices out
    of [-1, M) or an index whose reference label differs from the anchor's raise ValueError
    naming the argument.
    """
    check_embeddings(anchors, name="anchors")
    check_embeddings(references, name="references")
    B, M = anchors.shape[0], references.shape[0]
    if references.shape[1] != anchors.shape[1]:
        raise ValueError(f"expected anchors and references of one dimension D, got anchors "
                         f"{tuple(anchors.shape)} and references {tuple(references.shape)}")
    if references.device != anchors.device:
        raise ValueError(f"expected references on {anchors.device} (the anchors' device), got {references.device}")
    check_labels(labels, batch_size=B, device=anchors.device)
    if not isinstance(reference_labels, torch.Tensor) or reference_labels.dim() != 1 or \
            reference_labels.shape[0] != M:
        shape = tuple(reference_labels.shape) if isinstance(reference_labels, torch.Tensor) else type(reference_labels)
        raise ValueError(f"expected reference_labels of shape ({M},) (one per reference), got {shape}")
    check_labels(reference_labels, batch_size=M, device=anchors.device)
    if anchor_index_in_refs is None:
        return torch.full((B,), -1, dtype=torch.long, device=anchors.device)
    index = anchor_index_in_refs
    if not isinstance(index, torch.Tensor) or index.dim() != 1 or index.shape[0] != B or \
            index.is_floating_point() or index.dtype == torch.bool:
        got = (f"{tuple(index.shape)} {index.dtype}" if isinstance(index, torch.Tensor) else type(index).__name__)
        raise ValueError(f"expected anchor_index_in_refs: an integer tensor of shape ({B},) "
                         f"(a reference column or -1 per anchor), got {got}")
    if index.device != anchors.device:
        raise ValueError(f"expected anchor_index_in_refs on {anchors.device}, got {index.device}")
    index = index.long()
    if bool(((index < -1) | (index >= M)).any()):
        raise ValueError(f"anchor_index_in_refs must lie in [-1, {M}) (M = {M} references), got "
                         f"values from {int(index.min())} to {int(index.max())}")
    inside = index >= 0
    if bool((reference_labels[index[inside]] != labels[inside]).any()):
        raise ValueError("anchor_index_in_refs points at a reference whose label differs from the anchor's: "
                         "an anchor's own entry in the references carries its label")
    seen = index[inside]
    if seen.unique().numel() != seen.numel():
        raise ValueError("anchor_index_in_refs names one reference for two anchors: each entry is one anchor's own")
    return index


def reference_masks(
    labels: torch.Tensor, reference_labels: torch.Tensor, self_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """labels (B,) int, reference_labels (M,) int, self_index (B,) int64 -> positives (B, M) bool, negatives (B, M) bool.

    positives: y_a == y_r and r is not the anchor's own column; negatives: y_a != y_r.
    """
    same = labels[:, None] == reference_labels[None, :]  # (B, M)
    own = torch.arange(reference_labels.shape[0], device=labels.device)[None, :] == self_index[:, None]  # (B, M)
    return same & ~own, ~same


def in_batch_self_index(labels: torch.Tensor) -> torch.Tensor:
    """labels (B,) -> (B,) int64 arange: in a batch every anchor is its own reference column."""
    return torch.arange(labels.shape[0], device=labels.device)
