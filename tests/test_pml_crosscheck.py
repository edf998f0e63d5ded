"""Loss and gradient against pytorch-metric-learning, float64, every configuration PML can express.

Every PML default that changes the math is passed explicitly (normalize_embeddings,
margins of loss and miner, reducer). The mapping is the README's table.
"""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners, reducers
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance

from losses import METRICS, batch_all_triplet_loss, batch_hard_triplet_loss, semi_hard_triplet_loss

MARGIN = 0.3
PML_DISTANCE = {
    "euclidean": lambda: LpDistance(normalize_embeddings=False, p=2, power=1),
    "squared_euclidean": lambda: LpDistance(normalize_embeddings=False, p=2, power=2),
    "cosine": lambda: CosineSimilarity(),  # always L2-normalises (cannot be turned off)
}
PML_REDUCER = {"mean": reducers.MeanReducer, "mean_positive": reducers.AvgNonZeroReducer, "sum": reducers.SumReducer}


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(24, 5, dtype=torch.float64, generator=g), torch.randint(0, 5, (24,), generator=g)


def _pml_value(metric, reduction, *, miner=None, margin=MARGIN, smooth=False):
    def value(x, y):
        loss = pml_losses.TripletMarginLoss(
            margin=margin, smooth_loss=smooth, distance=PML_DISTANCE[metric](), reducer=PML_REDUCER[reduction]()
        )
        return loss(x, y, miner(x, y)) if miner is not None else loss(x, y)

    return value


def _assert_same_loss_and_gradient(ours, theirs, seed):
    x, y = _batch(seed)
    results = []
    for fn in (ours, theirs):
        e = x.clone().requires_grad_(True)
        loss = fn(e, y)
        (grad,) = torch.autograd.grad(loss, e)
        results.append((loss, grad))
    assert results[0][0].item() > 0
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("reduction", list(PML_REDUCER))
@pytest.mark.parametrize("metric", METRICS)
def test_batch_all(metric, reduction):
    def ours(x, y):
        return batch_all_triplet_loss(x, y, margin=MARGIN, metric=metric, reduction=reduction)

    _assert_same_loss_and_gradient(ours, _pml_value(metric, reduction), seed=0)


@pytest.mark.parametrize("reduction", ["mean", "mean_positive"])
@pytest.mark.parametrize("metric", METRICS)
def test_batch_hard(metric, reduction):
    def ours(x, y):
        return batch_hard_triplet_loss(x, y, margin=MARGIN, metric=metric, reduction=reduction)

    miner = miners.BatchHardMiner(distance=PML_DISTANCE[metric]())
    _assert_same_loss_and_gradient(ours, _pml_value(metric, reduction, miner=miner), seed=1)


@pytest.mark.parametrize("metric", METRICS)
def test_batch_hard_soft_margin_is_smooth_loss_with_margin_zero(metric):
    def ours(x, y):
        return batch_hard_triplet_loss(x, y, margin=None, metric=metric, soft=True)

    miner = miners.BatchHardMiner(distance=PML_DISTANCE[metric]())
    _assert_same_loss_and_gradient(ours, _pml_value(metric, "mean", miner=miner, margin=0.0, smooth=True), seed=2)


@pytest.mark.parametrize("reduction", list(PML_REDUCER))
@pytest.mark.parametrize("metric", METRICS)
def test_semi_hard_pml(metric, reduction):
    def ours(x, y):
        return semi_hard_triplet_loss(x, y, margin=MARGIN, metric=metric, semantics="pml", reduction=reduction)

    miner = miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard", distance=PML_DISTANCE[metric]())
    _assert_same_loss_and_gradient(ours, _pml_value(metric, reduction, miner=miner), seed=3)


def test_pml_defaults_differ_from_explicit_arguments():
    """Why every argument is passed: PML's default loss normalises and uses margin 0.05."""
    x, y = _batch(4)
    default = pml_losses.TripletMarginLoss()(x, y)
    explicit = _pml_value("euclidean", "mean_positive", margin=0.05)(x, y)
    normalised = batch_all_triplet_loss(
        torch.nn.functional.normalize(x), y, margin=0.05, metric="euclidean", reduction="mean_positive"
    )
    assert abs(default.item() - explicit.item()) > 1e-3
    torch.testing.assert_close(default, normalised, atol=1e-10, rtol=1e-10)
