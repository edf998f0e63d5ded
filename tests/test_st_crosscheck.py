"""Loss and gradient against sentence-transformers' batch triplet losses, float64.

The optional peer (`pip install -e ".[peers]"`); skipped when it is absent. Their losses
take a model and sentence features; the batch functions are called directly on
embeddings (`loss.batch_hard_triplet_loss(labels, embeddings)`), the model left None.
The mapping is the README's table. Batches hold 24 rows over 5 classes of 2 or more
members: sentence-transformers keeps anchors without a positive (hardest positive 0)
where we drop them, so the two agree only when every anchor has a positive.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

st_losses = pytest.importorskip("sentence_transformers.losses")

from losses import batch_all_triplet_loss, batch_hard_triplet_loss, semi_hard_triplet_loss  # noqa: E402
from test_pml_crosscheck import assert_same_loss_and_gradient  # noqa: E402

DISTANCE = st_losses.BatchHardTripletLossDistanceFunction
ST_METRIC = {
    "euclidean": DISTANCE.eucledian_distance,  # their spelling; an alias of euclidean_distance
    "squared_euclidean": partial(DISTANCE.euclidean_distance, squared=True),
    "cosine": DISTANCE.cosine_distance,
}
MARGIN = 0.3


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(24) % 5  # classes of 4 or 5 members
    labels = labels[torch.randperm(24, generator=g)]
    return torch.randn(24, 5, dtype=torch.float64, generator=g), labels


# name -> (ours(x, y, metric), peer(metric) -> theirs(x, y)); README's mapping table
VARIANTS = {
    "batch_all": (
        lambda x, y, metric: batch_all_triplet_loss(x, y, margin=MARGIN, metric=metric, reduction="mean_positive"),
        lambda metric: partial(_swap, st_losses.BatchAllTripletLoss(
            model=None, distance_metric=ST_METRIC[metric], margin=MARGIN).batch_all_triplet_loss),
    ),
    "batch_hard": (
        lambda x, y, metric: batch_hard_triplet_loss(x, y, margin=MARGIN, metric=metric, reduction="mean"),
        lambda metric: partial(_swap, st_losses.BatchHardTripletLoss(
            model=None, distance_metric=ST_METRIC[metric], margin=MARGIN).batch_hard_triplet_loss),
    ),
    "batch_hard_soft_margin": (
        lambda x, y, metric: batch_hard_triplet_loss(x, y, margin=None, soft=True, metric=metric, reduction="mean"),
        lambda metric: partial(_swap, st_losses.BatchHardSoftMarginTripletLoss(
            model=None, distance_metric=ST_METRIC[metric]).batch_hard_triplet_soft_margin_loss),
    ),
    "batch_semi_hard_is_tf": (
        lambda x, y, metric: semi_hard_triplet_loss(x, y, margin=MARGIN, metric=metric, semantics="tf",
                                                    reduction="mean"),
        lambda metric: partial(_swap, st_losses.BatchSemiHardTripletLoss(
            model=None, distance_metric=ST_METRIC[metric], margin=MARGIN).batch_semi_hard_triplet_loss),
    ),
}


def _swap(function, x, y):
    """Their batch functions take (labels, embeddings)."""
    return function(y, x)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("metric", list(ST_METRIC))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_loss_and_gradient(variant, metric, seed):
    ours, peer = VARIANTS[variant]
    x, y = _batch(seed)
    assert_same_loss_and_gradient(partial(ours, metric=metric), peer(metric), x, y)


def test_anchors_without_positive_differ():
    """A singleton class: they keep its anchor (hardest positive 0) and average over all B, we drop it (README)."""
    x, y = _batch(0)
    y = y.clone()
    y[0] = 99
    peer = st_losses.BatchHardTripletLoss(model=None, distance_metric=ST_METRIC["euclidean"], margin=MARGIN)
    ours = batch_hard_triplet_loss(x, y, margin=MARGIN, metric="euclidean", reduction="sum")
    singleton = torch.relu(MARGIN - torch.cdist(x[:1], x[1:]).min())  # their term for anchor 0
    theirs = peer.batch_hard_triplet_loss(y, x) * 24
    torch.testing.assert_close(theirs, ours + singleton, atol=1e-10, rtol=1e-10)
    ours_mean = batch_hard_triplet_loss(x, y, margin=MARGIN, metric="euclidean", reduction="mean")
    torch.testing.assert_close(ours_mean, ours / 23)  # 23 anchors with a positive, not 24
