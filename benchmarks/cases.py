"""What the loss benchmarks time: our variants, their PML equivalents and the floor.

Each builder returns `loss_fn(embeddings (B, D), labels (B,)) -> scalar`; every
hyper-parameter is passed explicitly (margin, euclidean metric, reduction), so
ours and PML compute the same loss (checked by `benchmarks/test_losses.py`
before timing, up to B=256), except semi_hard_tf, which PML cannot express.
"""

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from benchmarks.workloads import K, MARGIN

GiB = 1024 ** 3
MASK_LIMIT_BYTES = 1 * GiB      # largest (B, B, B) float32 tensor the mask method may build
PML_TRIPLETS_LIMIT_BYTES = 2 * GiB
PML_MAX_CALL_S = 20.0           # PML cells slower than this per call are skipped
INT32_MAX = 2 ** 31 - 1


@dataclass(frozen=True)
class Variant:
    """One row of the ratio table: our call and the PML call it is compared with."""

    name: str
    ours: Callable[[], Callable]
    pml: str                    # key into PML_BUILDERS
    same_loss_as_pml: bool = True   # False: PML has no equivalent, the ratio compares costs only
    note: str = ""
    st: Optional[str] = None    # key into ST_BUILDERS (sentence-transformers, the second peer)
    exact: bool = True          # an exact variant: held to the floor bar
    large: bool = False         # also timed at LARGE (P x K)


def floor() -> Callable:
    """The distance-matrix floor: torch.cdist(x, x) forward, backward of its sum."""
    def loss_fn(embeddings, labels):
        return torch.cdist(embeddings, embeddings).sum()
    return loss_fn


def _ours(function_name: str, **params) -> Callable[[], Callable]:
    def build():
        import losses
        function = getattr(losses, function_name)

        def loss_fn(embeddings, labels):
            return function(embeddings, labels, margin=MARGIN, metric="euclidean", **params)
        return loss_fn
    return build


VARIANTS = (
    Variant("batch_all_sorted", _ours("batch_all_triplet_loss", reduction="mean_positive", method="sorted"),
            pml="batch_all", st="batch_all", large=True),
    Variant("batch_all_mask", _ours("batch_all_triplet_loss", reduction="mean_positive", method="mask"),
            pml="batch_all", exact=False, note="the readable O(B^3) reference"),
    Variant("batch_hard", _ours("batch_hard_triplet_loss", reduction="mean", soft=False),
            pml="batch_hard", st="batch_hard"),
    Variant("semi_hard_tf", _ours("semi_hard_triplet_loss", semantics="tf", reduction="mean"),
            pml="semi_hard", same_loss_as_pml=False, st="semi_hard_tf", large=True,
            note="PML has no TF semantics: compared with PML's semihard miner"),
    Variant("semi_hard_pml", _ours("semi_hard_triplet_loss", semantics="pml", reduction="mean_positive"),
            pml="semi_hard", large=True),
)
VARIANTS_BY_NAME = {variant.name: variant for variant in VARIANTS}


def _pml(miner: Optional[str], reducer: Optional[str]) -> Callable[[], Callable]:
    def build():
        from pytorch_metric_learning import distances, losses, miners, reducers
        distance = distances.LpDistance(p=2, power=1, normalize_embeddings=False)
        loss_kwargs = {"margin": MARGIN, "distance": distance}
        if reducer == "mean":
            loss_kwargs["reducer"] = reducers.MeanReducer()
        loss = losses.TripletMarginLoss(**loss_kwargs)
        if miner is None:
            return lambda embeddings, labels: loss(embeddings, labels)
        if miner == "batch_hard":
            mine = miners.BatchHardMiner(distance=distance)
        else:
            mine = miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard", distance=distance)
        return lambda embeddings, labels: loss(embeddings, labels, mine(embeddings, labels))
    return build


PML_BUILDERS = {
    # TripletMarginLoss, no miner: all triplets, AvgNonZeroReducer (= our "mean_positive")
    "batch_all": _pml(None, None),
    # BatchHardMiner + TripletMarginLoss(reducer=MeanReducer()) (= Hermans et al., our "mean")
    "batch_hard": _pml("batch_hard", "mean"),
    # TripletMarginMiner(margin, "semihard") + TripletMarginLoss (AvgNonZeroReducer)
    "semi_hard": _pml("semi_hard", None),
}
PML_ENUMERATES_TRIPLETS = ("batch_all", "semi_hard")


def _st(class_name: str, method: str) -> Callable[[], Callable]:
    def build():
        from sentence_transformers import losses as st_losses
        loss = getattr(st_losses, class_name)(
            model=None, distance_metric=st_losses.BatchHardTripletLossDistanceFunction.euclidean_distance,
            margin=MARGIN)
        function = getattr(loss, method)
        return lambda embeddings, labels: function(labels, embeddings)
    return build


# sentence-transformers' batch functions, called on embeddings (their losses take a model):
# the same loss as ours on batches where every anchor has a positive (tests/test_st_crosscheck.py)
ST_BUILDERS = {
    "batch_all": _st("BatchAllTripletLoss", "batch_all_triplet_loss"),
    "batch_hard": _st("BatchHardTripletLoss", "batch_hard_triplet_loss"),
    "semi_hard_tf": _st("BatchSemiHardTripletLoss", "batch_semi_hard_triplet_loss"),
}
ST_SIZES = (256, 1024)


def pml_triplet_bytes(batch_size: int, per_class: int = K) -> int:
    """-> the memory PML's get_all_triplets_indices needs to enumerate every triplet.

    Below INT32_MAX elements it builds a (B, B, B) bool mask; above, it loops over
    anchors in Python and keeps B (K-1) (B-K) triplets as three int64 index tensors.
    """
    if batch_size ** 3 < INT32_MAX:
        return batch_size ** 3
    return batch_size * (per_class - 1) * (batch_size - per_class) * 3 * 8


def skip_reason(impl: str, name: str, batch_size: int) -> Optional[str]:
    """impl in ("ours", "pml"), a variant or PML key, B -> why the cell is not run, or None."""
    if impl == "ours" and name == "batch_all_mask":
        mask_bytes = batch_size ** 3 * 4
        if mask_bytes > MASK_LIMIT_BYTES:
            return (f"mask method is O(B^3) memory: one (B, B, B) float32 tensor is "
                    f"{mask_bytes / GiB:.1f} GiB at B={batch_size}")
    if impl == "pml" and name in PML_ENUMERATES_TRIPLETS:
        need = pml_triplet_bytes(batch_size)
        if need > PML_TRIPLETS_LIMIT_BYTES:
            return (f"PML enumerates all {batch_size * (K - 1) * (batch_size - K):,} triplets "
                    f"({need / GiB:.1f} GiB of indices, a Python loop over anchors) at B={batch_size}")
    return None
