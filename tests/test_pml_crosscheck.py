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

import loop_reference as ref
from losses import METRICS, batch_all_triplet_loss, batch_hard_triplet_loss, semi_hard_triplet_loss

MARGIN = 0.3
PML_DISTANCE = {
    "euclidean": lambda: LpDistance(normalize_embeddings=False, p=2, power=1),
    "squared_euclidean": lambda: LpDistance(normalize_embeddings=False, p=2, power=2),
    "cosine": lambda: CosineSimilarity(),  # always L2-normalises (cannot be turned off)
}
PML_REDUCER = {"mean": reducers.MeanReducer, "mean_positive": reducers.AvgNonZeroReducer, "sum": reducers.SumReducer}


def _batch(seed: int, kind: str = "normal"):
    """-> embeddings (24, D) float64, labels (24,) over 5 classes.

    24 rows: torch.cdist (PML's LpDistance) uses the exact difference form up to 25 rows,
    so PML's own distances carry no expansion rounding. "duplicates": 8 distinct rows,
    each repeated across classes (a negative that duplicates a positive: exact ties);
    "integers": entries in -2..2 (many exact distance ties between different pairs).
    """
    g = torch.Generator().manual_seed(seed)
    if kind == "duplicates":
        x = torch.randn(8, 5, dtype=torch.float64, generator=g)[torch.randint(0, 8, (24,), generator=g)]
    elif kind == "integers":
        x = torch.randint(-2, 3, (24, 4), generator=g).to(torch.float64)
    else:
        x = torch.randn(24, 5, dtype=torch.float64, generator=g)
    return x, torch.randint(0, 5, (24,), generator=g)


# (kind, seed) of the tie batches every variant is also checked on
TIE_BATCHES = [("duplicates", seed) for seed in range(3)] + [("integers", seed) for seed in range(3)]
TIE_IDS = [f"{kind}-{seed}" for kind, seed in TIE_BATCHES]


def _pml_value(metric, reduction, *, miner=None, margin=MARGIN, smooth=False):
    def value(x, y):
        loss = pml_losses.TripletMarginLoss(
            margin=margin, smooth_loss=smooth, distance=PML_DISTANCE[metric](), reducer=PML_REDUCER[reduction]()
        )
        return loss(x, y, miner(x, y)) if miner is not None else loss(x, y)

    return value


def _assert_same_loss_and_gradient(ours, theirs, seed, kind="normal"):
    x, y = _batch(seed, kind)
    # tie batches may hold no semi-hard triplet (integer squared distances)
    assert_same_loss_and_gradient(ours, theirs, x, y, nonzero=kind == "normal")


def assert_same_loss_and_gradient(ours, theirs, x, y, *, nonzero=True):
    """ours, theirs (x, y) -> scalar: equal values (1e-10) and gradients (1e-10 abs, 1e-8 rel) at x (float64)."""
    results = []
    for fn in (ours, theirs):
        e = x.clone().requires_grad_(True)
        loss = fn(e, y)
        (grad,) = torch.autograd.grad(loss, e)
        results.append((loss, grad))
    if nonzero:
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


@pytest.mark.parametrize("kind, seed", TIE_BATCHES, ids=TIE_IDS)
@pytest.mark.parametrize("metric", METRICS)
def test_ties_batch_all_and_batch_hard(metric, kind, seed):
    """Duplicates and exact ties: same values, and the gradient of a tied max/min goes to the first."""
    miner = miners.BatchHardMiner(distance=PML_DISTANCE[metric]())
    for reduction in PML_REDUCER:
        def all_(x, y):
            return batch_all_triplet_loss(x, y, margin=MARGIN, metric=metric, reduction=reduction)

        _assert_same_loss_and_gradient(all_, _pml_value(metric, reduction), seed, kind)
    for reduction in ("mean", "mean_positive"):
        def hard(x, y):
            return batch_hard_triplet_loss(x, y, margin=MARGIN, metric=metric, reduction=reduction)

        _assert_same_loss_and_gradient(hard, _pml_value(metric, reduction, miner=miner), seed, kind)

    def soft(x, y):
        return batch_hard_triplet_loss(x, y, margin=None, metric=metric, soft=True)

    _assert_same_loss_and_gradient(soft, _pml_value(metric, "mean", miner=miner, margin=0.0, smooth=True), seed, kind)


@pytest.mark.parametrize("kind, seed", TIE_BATCHES, ids=TIE_IDS)
@pytest.mark.parametrize("metric", METRICS)
def test_ties_semi_hard_pml(metric, kind, seed):
    """A negative that duplicates (or ties with) a positive is not semi-hard: d_an > d_ap is strict."""
    if metric == "cosine" and kind == "integers":
        pytest.skip("PML's cosine similarities break exact ties by rounding: test_pml_rounding_cosine_ties")
    miner = miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard", distance=PML_DISTANCE[metric]())
    for reduction in PML_REDUCER:
        def ours(x, y):
            return semi_hard_triplet_loss(x, y, margin=MARGIN, metric=metric, semantics="pml", reduction=reduction)

        _assert_same_loss_and_gradient(ours, _pml_value(metric, reduction, miner=miner), seed, kind)


def _loop_reference_value(variant, x, y, **kwargs):
    return getattr(ref, variant)(x.tolist(), y.tolist(), **kwargs)


@pytest.mark.parametrize("seed", range(3))
def test_pml_rounding_exact_zero_hinges(seed):
    """README, ties: squared euclidean, integer embeddings, margin 1: hinges exactly 0.

    PML squares torch.cdist's root, which leaves +-1e-15 on integer squared distances, so
    AvgNonZeroReducer counts some exactly-zero hinges as positive; ours are exact (the loop
    reference, in exact integer arithmetic, agrees with us).
    """
    x, y = _batch(seed, "integers")
    ours = batch_all_triplet_loss(x, y, margin=1.0, metric="squared_euclidean", reduction="mean_positive")
    expected = _loop_reference_value("batch_all", x, y, margin=1.0, metric="squared_euclidean",
                                     reduction="mean_positive")
    theirs = _pml_value("squared_euclidean", "mean_positive", margin=1.0)(x, y)
    assert ours.item() == pytest.approx(expected, rel=1e-12)
    assert theirs.item() < ours.item() * (1 - 1e-3)  # a larger count of "positive" hinges


@pytest.mark.parametrize("seed", range(3))
def test_pml_rounding_cosine_ties(seed):
    """README, ties: cosine, integer embeddings: PML mines d_an == d_ap (exact) as semi-hard.

    Its similarity matrix puts equal cosines 1 ulp apart (orthogonal pairs at +-1e-17), so
    its semihard miner takes some triplets whose d_an - d_ap is 0 in exact arithmetic,
    each with loss = margin; our 1 - cos rounds those pairs to equal values. (The loop
    reference's own rounding decides a few of them a third way: cosine ties have no
    rounding-free answer.)
    """
    x, y = _batch(seed, "integers")
    ours = semi_hard_triplet_loss(x, y, margin=MARGIN, metric="cosine", semantics="pml", reduction="sum")
    miner = miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard", distance=CosineSimilarity())
    theirs = _pml_value("cosine", "sum", miner=miner)(x, y)
    extra = (theirs.item() - ours.item()) / MARGIN  # whole triplets with loss = margin
    assert extra >= 1 and extra == pytest.approx(round(extra), abs=1e-6)


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
