"""Variant name -> loss function, and a lookup that lists the valid names."""

from __future__ import annotations

from collections.abc import Callable

from .batch_all import batch_all_triplet_loss, batch_all_triplet_loss_refs
from .batch_hard import batch_hard_triplet_loss, batch_hard_triplet_loss_refs
from .naive import naive_triplet_loss
from .semi_hard import semi_hard_triplet_loss, semi_hard_triplet_loss_refs
from .validation import check_choice

VARIANTS: dict[str, Callable] = {
    "naive": naive_triplet_loss,
    "batch_all": batch_all_triplet_loss,
    "batch_hard": batch_hard_triplet_loss,
    "semi_hard": semi_hard_triplet_loss,
}

# VARIANTS name -> the same loss between anchors and a reference set (a cross-batch memory):
# fn(anchors, labels, references, reference_labels, *, anchor_index_in_refs, <the same keywords>)
REFERENCE_VARIANTS: dict[str, Callable] = {
    "batch_all": batch_all_triplet_loss_refs,
    "batch_hard": batch_hard_triplet_loss_refs,
    "semi_hard": semi_hard_triplet_loss_refs,
}


# a batch variant's name in the grids and the conformance checker -> (VARIANTS name, its keyword
# arguments besides margin and metric): its reference reduction, semantics and soft margin
BATCH_VARIANT_CALLS: dict[str, tuple[str, dict]] = {
    "batch_all": ("batch_all", {"reduction": "mean_positive", "method": "sorted"}),
    "batch_hard": ("batch_hard", {"reduction": "mean", "soft": False}),
    "batch_hard_soft": ("batch_hard", {"reduction": "mean", "soft": True}),
    "semi_hard_tf": ("semi_hard", {"semantics": "tf", "reduction": "mean"}),
    "semi_hard_pml": ("semi_hard", {"semantics": "pml", "reduction": "mean_positive"}),
}


def get_variant(name: str) -> Callable:
    """name str -> loss function; unknown names raise ValueError listing the valid ones."""
    return VARIANTS[check_choice(name, name="variant", valid=tuple(VARIANTS))]
