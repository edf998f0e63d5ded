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

from .combined import CombinedLoss, TripletWithIDLoss
from .memory import CrossBatchMemory
from .rivals import circle_loss, contrastive_loss, multi_similarity_loss, ntxent_loss

__all__ = [
    "METHODS", "METRICS", "REDUCTIONS", "SEMANTICS", "VARIANTS",
    "CombinedLoss", "CrossBatchMemory", "TripletStats", "TripletWithIDLoss",
    "batch_all_triplet_loss", "batch_all_triplet_loss_refs",
    "batch_hard_triplet_loss", "batch_hard_triplet_loss_refs",
    "circle_loss", "contrastive_loss", "cross_distances", "get_variant", "multi_similarity_loss",
    "naive_triplet_loss", "negative_mask", "ntxent_loss", "paired_distances", "pairwise_distances",
    "positive_mask", "reduce_losses", "semi_hard_triplet_loss", "semi_hard_triplet_loss_refs",
    "triplet_mask",
]
