"""tripletlab losses: pure tensor functions for triplet / metric-learning losses."""

from .batch_all import METHODS, batch_all_triplet_loss, batch_all_triplet_loss_refs
from .batch_hard import batch_hard_triplet_loss, batch_hard_triplet_loss_refs
from .distances import METRICS, cross_distances, paired_distances, pairwise_distances
from .masks import negative_mask, positive_mask, triplet_mask
from .naive import naive_triplet_loss
from .reductions import REDUCTIONS, reduce_losses
from .registry import VARIANTS, get_variant
from .semi_hard import SEMANTICS, semi_hard_triplet_loss, semi_hard_triplet_loss_refs
from .stats import TripletStats

# --- weighting engineer: combined / rival losses (add the imports below this line) ---
from .combined import CombinedLoss, TripletWithIDLoss
from .rivals import circle_loss, contrastive_loss, multi_similarity_loss, ntxent_loss
# --- end of weighting engineer section ---

__all__ = [
    "METHODS",
    "METRICS",
    "REDUCTIONS",
    "SEMANTICS",
    "VARIANTS",
    "TripletStats",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "get_variant",
    "naive_triplet_loss",
    "negative_mask",
    "paired_distances",
    "pairwise_distances",
    "positive_mask",
    "reduce_losses",
    "semi_hard_triplet_loss",
    "triplet_mask",
]
__all__ += ["CombinedLoss", "TripletWithIDLoss", "circle_loss", "contrastive_loss", "multi_similarity_loss"]  # weighting engineer
__all__ += ["ntxent_loss"]  # issue 11
__all__ += ["batch_all_triplet_loss_refs", "batch_hard_triplet_loss_refs", "cross_distances",
            "semi_hard_triplet_loss_refs"]  # issue 20: against a reference set (cross-batch memory)
