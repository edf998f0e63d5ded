"""Multi-Similarity, Circle and Contrastive losses: equal to pytorch-metric-learning in float64 (value and gradient)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers as pml_reducers

from losses import circle_loss, contrastive_loss, multi_similarity_loss, ntxent_loss

PML_REDUCERS = {
    "mean": pml_reducers.MeanReducer,
    "mean_positive": pml_reducers.AvgNonZeroReducer,
    "sum": pml_reducers.SumReducer,
}


def batch(seed: int, *, B: int = 24, D: int = 8, classes: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, dtype=torch.float64, generator=g)
    y = torch.randint(0, classes, (B,), generator=g)
    return x, y


def value_and_grad(fn, x, y):
    x = x.clone().requires_grad_(True)
    loss = fn(x, y)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    return loss.detach(), torch.zeros_like(x) if grad is None else grad


def assert_same_as_pml(ours, pml, x, y):
    value, grad = value_and_grad(ours, x, y)
    ref_value, ref_grad = value_and_grad(lambda e, l: torch.as_tensor(pml(e, l), dtype=e.dtype), x, y)
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
    return value


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize(
    "params, reduction",
    [({}, "mean"), ({"alpha": 1.0, "beta": 20.0, "base": 0.3}, "mean"), ({}, "mean_positive"), ({}, "sum")],
    ids=["defaults", "other-hparams", "mean_positive", "sum"],
)
def test_multi_similarity_matches_pml(seed, params, reduction):
    x, y = batch(seed)
    pml = pml_losses.MultiSimilarityLoss(**params, reducer=PML_REDUCERS[reduction]())
    value = assert_same_as_pml(lambda e, l: multi_similarity_loss(e, l, **params, reduction=reduction), pml, x, y)
    assert value > 0


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize(
    "params, reduction", [({}, "mean_positive"), ({"m": 0.25, "gamma": 256.0}, "mean_positive"), ({}, "sum")],
    ids=["defaults", "face-recognition", "sum"],
)
def test_circle_matches_pml(seed, params, reduction):
    x, y = batch(seed, classes=4)
    y[:2] = 9  # a class of two, and singletons elsewhere are dropped as anchors
    y[2] = 10  # a singleton anchor: no positive, not an item
    pml = pml_losses.CircleLoss(**params, reducer=PML_REDUCERS[reduction]())
    assert_same_as_pml(lambda e, l: circle_loss(e, l, **params, reduction=reduction), pml, x, y)


def test_circle_mean_matches_pml_when_every_anchor_is_valid():
    x, y = batch(5, classes=4)
    y = torch.arange(24) % 4  # every anchor has positives and negatives
    assert_same_as_pml(lambda e, l: circle_loss(e, l, reduction="mean"), pml_losses.CircleLoss(reducer=pml_reducers.MeanReducer()), x, y)


@pytest.mark.parametrize("metric, power", [("euclidean", 1), ("squared_euclidean", 2)])
@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "raw"])
@pytest.mark.parametrize("reduction", ["mean_positive", "mean", "sum"])
def test_contrastive_matches_pml(metric, power, normalize, reduction):
    x, y = batch(power * 10 + normalize)
    margins = {"pos_margin": 0.2, "neg_margin": 1.0} if normalize else {"pos_margin": 1.0, "neg_margin": 4.0}
    distance = pml_distances.LpDistance(normalize_embeddings=normalize, power=power)
    pml = pml_losses.ContrastiveLoss(**margins, distance=distance, reducer=PML_REDUCERS[reduction]())
    ours = lambda e, l: contrastive_loss(e, l, **margins, metric=metric, normalize_embeddings=normalize, reduction=reduction)  # noqa: E731
    assert assert_same_as_pml(ours, pml, x, y) > 0


def test_defaults_are_the_papers_and_pmls():
    x, y = batch(11)
    for ours, pml in [
        (multi_similarity_loss, pml_losses.MultiSimilarityLoss()),
        (circle_loss, pml_losses.CircleLoss()),
        (contrastive_loss, pml_losses.ContrastiveLoss()),
    ]:
        assert_same_as_pml(ours, pml, x, y)


@pytest.mark.parametrize("fn", [multi_similarity_loss, circle_loss, contrastive_loss])
@pytest.mark.parametrize("case", ["one-class", "all-distinct", "B=1"])
def test_no_valid_pair_gives_attached_zero_or_pml_value(fn, case):
    labels = {"one-class": torch.zeros(6, dtype=torch.long), "all-distinct": torch.arange(6), "B=1": torch.zeros(1, dtype=torch.long)}[case]
    x = torch.randn(labels.shape[0], 4, dtype=torch.float64, requires_grad=True)
    loss = fn(x, labels)
    assert torch.isfinite(loss) and loss.requires_grad
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()
    if case == "B=1" or fn is circle_loss:  # no anchor has both a positive and a negative
        assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("fn", [multi_similarity_loss, circle_loss, contrastive_loss])
def test_duplicate_embeddings_give_finite_gradients(fn):
    x, y = batch(3, B=12)
    x[1] = x[0]
    y[1] = y[0]
    x[5] = x[4]
    y[5] = (y[4] + 1) % 5  # a duplicate across classes
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x, y), x)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize(
    "fn",
    [
        lambda e, l: multi_similarity_loss(e, l, beta=5.0),
        pytest.param(
            lambda e, l: circle_loss(e, l, gamma=4.0),
            marks=pytest.mark.xfail(
                reason="Circle loss detaches its weights a_p, a_n (paper, PML): its gradient is by design "
                "not the derivative of its value; the gradient is checked against PML instead",
                strict=True,
            ),
        ),
        lambda e, l: contrastive_loss(e, l, reduction="mean"),
    ],
    ids=["multi_similarity", "circle", "contrastive"],
)
def test_gradcheck(fn):
    x, y = batch(7, B=8, D=3, classes=3)
    assert torch.autograd.gradcheck(lambda e: fn(e, y), (x.requires_grad_(True),))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x, y: multi_similarity_loss(x, y, alpha=0.0), "alpha to be > 0"),
        (lambda x, y: multi_similarity_loss(x, y, base=float("nan")), "base to be finite"),
        (lambda x, y: circle_loss(x, y, gamma=-1.0), "gamma to be > 0"),
        (lambda x, y: circle_loss(x, y, reduction="avg"), "unknown reduction 'avg'"),
        (lambda x, y: contrastive_loss(x, y, reduction="none"), "unknown reduction 'none'"),
        (lambda x, y: contrastive_loss(x, y, metric="l1"), "unknown metric 'l1'"),
        (lambda x, y: contrastive_loss(x, y, normalize_embeddings="yes"), "normalize_embeddings to be a bool"),
        (lambda x, y: multi_similarity_loss(x[:, :, None], y), r"embeddings of shape \(B, D\)"),
        (lambda x, y: circle_loss(x, y[:-1]), "labels of length"),
        (lambda x, y: contrastive_loss(x * float("nan"), y), "non-finite"),
    ],
)
def test_bad_input_raises_naming_it(call, match):
    x, y = batch(0, B=6)
    with pytest.raises(ValueError, match=match):
        call(x, y)


RIVALS = {"multi_similarity": multi_similarity_loss, "circle": circle_loss, "contrastive": contrastive_loss}


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(sorted(RIVALS)),
    seed=st.integers(0, 2**16),
    B=st.integers(2, 12),
    classes=st.integers(1, 4),
)
def test_properties_finite_nonnegative_and_invariant(name, seed, B, classes):
    """Finite, >= 0, unchanged by permuting the batch and by relabelling the classes."""
    fn = RIVALS[name]
    x, y = batch(seed, B=B, D=4, classes=classes)
    loss = fn(x, y)
    assert torch.isfinite(loss) and loss.item() >= 0
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(fn(x[perm], y[perm]), loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fn(x, 7 * y + 3), loss, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(RIVALS))
def test_cuda_matches_cpu(name):
    x, y = batch(1)
    cpu_value, cpu_grad = value_and_grad(RIVALS[name], x, y)
    value, grad = value_and_grad(RIVALS[name], x.cuda(), y.cuda())
    torch.testing.assert_close(value.cpu(), cpu_value, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad.cpu(), cpu_grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("temperature, reduction", [(0.07, "mean"), (0.5, "mean"), (0.2, "sum")])
def test_ntxent_matches_pml(seed, temperature, reduction):
    x, y = batch(seed)
    pml = pml_losses.NTXentLoss(temperature=temperature, reducer=PML_REDUCERS[reduction]())
    value = assert_same_as_pml(lambda e, l: ntxent_loss(e, l, temperature=temperature, reduction=reduction), pml, x, y)
    assert value > 0


def test_ntxent_is_a_loop_reference_and_zero_without_negatives():
    x, y = batch(5, B=10, classes=3)
    xn = torch.nn.functional.normalize(x, dim=1)
    items = []
    for a in range(10):
        for p in range(10):
            if p != a and y[p] == y[a]:
                terms = [torch.exp(xn[a] @ xn[n] / 0.3) for n in range(10) if y[n] != y[a]]
                top = torch.exp(xn[a] @ xn[p] / 0.3)
                items.append(-torch.log(top / (top + sum(terms))))
    torch.testing.assert_close(ntxent_loss(x, y, temperature=0.3), torch.stack(items).mean(), rtol=1e-12, atol=0)
    one_class = x.clone().requires_grad_(True)
    loss = ntxent_loss(one_class, torch.zeros(10, dtype=torch.long))
    (grad,) = torch.autograd.grad(loss, one_class)
    assert float(loss.detach()) == 0.0 and not grad.any()
    with pytest.raises(ValueError, match="temperature"):
        ntxent_loss(x, y, temperature=0.0)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("reduction", ["mean_positive", "mean"])
def test_contrastive_cosine_matches_pml_with_margins_one_minus_m(seed, reduction):
    """Cosine distance 1 - s with margins m_pos, m_neg = PML CosineSimilarity with 1 - m_pos, 1 - m_neg."""
    x, y = batch(20 + seed)
    pml = pml_losses.ContrastiveLoss(pos_margin=1 - 0.1, neg_margin=1 - 0.7, distance=pml_distances.CosineSimilarity(),
                                     reducer=PML_REDUCERS[reduction]())
    ours = lambda e, l: contrastive_loss(e, l, pos_margin=0.1, neg_margin=0.7, metric="cosine", reduction=reduction)  # noqa: E731
    assert assert_same_as_pml(ours, pml, x, y) > 0
