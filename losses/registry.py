"""Variant name -> loss function, and a lookup that lists the valid names."""

from __future__ import annotations

from collections.abc import Callable

from .batch_all import batch_all_triplet_loss
from .batch_hard import batch_hard_triplet_loss
from .naive import naive_triplet_loss
from .semi_hard import semi_hard_triplet_loss
from .validation import check_choice

VARIANTS: dict[str, Callable] = {
    "naive": naive_triplet_loss,
    "batch_all": batch_all_triplet_loss,
    "batch_hard": batch_hard_triplet_loss,
    "semi_hard": semi_hard_triplet_loss,
}


def get_variant(name: str) -> Callable:
    """name str -> loss function; unknown names raise ValueError listing the valid ones."""
    return VARIANTS[check_choice(name, name="variant", valid=tuple(VARIANTS))]
