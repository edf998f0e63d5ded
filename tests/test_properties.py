"""Properties every batch variant must have, on hypothesis-drawn batches.

Embeddings are drawn on a grid of multiples of 1/4 in [-3, 3] (duplicates and exact ties
are frequent) and translations are integers, so every distance is exact in float64 and
the invariances hold exactly, not only up to rounding.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import loop_reference as ref
from losses import (
    METRICS,
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    negative_mask,
    positive_mask,
    semi_hard_triplet_loss,
    triplet_mask,
)

VARIANTS = {
    "batch_all-sorted": lambda x, y, **kw: batch_all_triplet_loss(x, y, method="sorted", **kw),
    "batch_all-mask": lambda x, y, **kw: batch_all_triplet_loss(x, y, method="mask", **kw),
    "batch_hard": lambda x, y, **kw: batch_hard_triplet_loss(x, y, **kw),
    "batch_hard-soft": lambda x, y, margin, **kw: batch_hard_triplet_loss(x, y, margin=None, soft=True, **kw),
    "semi_hard-tf": lambda x, y, **kw: semi_hard_triplet_loss(x, y, semantics="tf", **kw),
    "semi_hard-pml": lambda x, y, **kw: semi_hard_triplet_loss(x, y, semantics="pml", **kw),
}
SCALAR_REDUCTIONS = ("mean", "mean_positive", "sum")
PROPERTY = settings(max_examples=25, deadline=None)


@st.composite
def batches(draw, min_size=1, max_size=12):
    """(embeddings (B, D) float64 on a 1/4 grid, labels (B,) int64 from few classes)."""
    b = draw(st.integers(min_size, max_size))
    d = draw(st.integers(1, 3))
    values = draw(st.lists(st.integers(-12, 12), min_size=b * d, max_size=b * d))
    labels = draw(st.lists(st.integers(0, 3), min_size=b, max_size=b))
    x = torch.tensor(values, dtype=torch.float64).reshape(b, d) / 4
    return x, torch.tensor(labels)


def _loss(variant, x, y, metric, reduction, margin=0.5):
    return VARIANTS[variant](x, y, margin=margin, metric=metric, reduction=reduction)


@given(labels=st.lists(st.integers(0, 3), min_size=1, max_size=9))
@PROPERTY
def test_masks_are_exactly_the_valid_triplets(labels):
    y = torch.tensor(labels)
    expected = set(ref.valid_triplets(labels))
    assert set(map(tuple, triplet_mask(y).nonzero().tolist())) == expected
    b = len(labels)
    pairs = {(i, j) for i, j in itertools.product(range(b), repeat=2) if i != j and labels[i] == labels[j]}
    assert set(map(tuple, positive_mask(y).nonzero().tolist())) == pairs
    assert negative_mask(y).sum().item() == sum(1 for i in labels for j in labels if i != j)


@pytest.mark.parametrize("variant", list(VARIANTS))
@given(batch=batches(), metric=st.sampled_from(METRICS), reduction=st.sampled_from(SCALAR_REDUCTIONS))
@PROPERTY
def test_finite_non_negative_with_finite_gradients(variant, batch, metric, reduction):
    x, y = batch
    x.requires_grad_(True)
    loss = _loss(variant, x, y, metric, reduction)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and loss.item() >= 0
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("variant", list(VARIANTS))
@given(batch=batches(), metric=st.sampled_from(METRICS), reduction=st.sampled_from(SCALAR_REDUCTIONS), data=st.data())
@PROPERTY
def test_invariant_to_permutation_and_relabelling(variant, batch, metric, reduction, data):
    x, y = batch
    perm = torch.tensor(data.draw(st.permutations(range(len(y)))))
    relabel = torch.tensor(data.draw(st.permutations(range(4)))) * 10 - 7  # injective, negative ids too
    base = _loss(variant, x, y, metric, reduction)
    torch.testing.assert_close(_loss(variant, x[perm], y[perm], metric, reduction), base, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(_loss(variant, x, relabel[y], metric, reduction), base, atol=0, rtol=0)


@pytest.mark.parametrize("variant", list(VARIANTS))
@given(
    batch=batches(),
    metric=st.sampled_from(["euclidean", "squared_euclidean"]),
    shift=st.lists(st.integers(-1000, 1000), min_size=3, max_size=3),
)
@PROPERTY
def test_invariant_to_translation(variant, batch, metric, shift):
    x, y = batch
    t = torch.tensor(shift[: x.shape[1]], dtype=torch.float64)
    for reduction in SCALAR_REDUCTIONS:
        torch.testing.assert_close(
            _loss(variant, x + t, y, metric, reduction), _loss(variant, x, y, metric, reduction), atol=1e-12, rtol=1e-12
        )


@pytest.mark.parametrize("variant", list(VARIANTS))
@given(b=st.integers(1, 8), d=st.integers(1, 3), distinct=st.booleans(), seed=st.integers(0, 2**16))
@PROPERTY
def test_zero_and_attached_without_valid_triplet(variant, b, d, distinct, seed):
    """One class, or all labels distinct: no valid triplet, a 0 with zero gradient (never NaN)."""
    x = torch.randn(b, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    y = torch.arange(b) if distinct else torch.zeros(b, dtype=torch.long)
    for reduction in SCALAR_REDUCTIONS:
        loss = _loss(variant, x, y, "euclidean", reduction)
        assert loss.item() == 0.0 and loss.requires_grad
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.equal(grad, torch.zeros_like(x))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_attached_zero_keeps_the_dtype(variant, dtype):
    x = torch.randn(3, 2, dtype=dtype, requires_grad=True)
    loss = _loss(variant, x, torch.tensor([0, 1, 2]), "cosine", "mean")
    assert loss.dtype == dtype and loss.item() == 0.0 and loss.requires_grad


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("metric", METRICS)
def test_gradient_norm_is_differentiable_in_a_loss_weight(variant, metric):
    """GradNorm differentiates ||d(w L)/dx|| = w ||dL/dx|| with respect to w: finite and equal."""
    x = torch.randn(12, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7), requires_grad=True)
    y = torch.arange(12) % 3
    w = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(w * _loss(variant, x, y, metric, "mean"), x, create_graph=True)
    (dw,) = torch.autograd.grad(g.norm(), w)
    (plain,) = torch.autograd.grad(_loss(variant, x, y, metric, "mean"), x)
    assert plain.norm() > 0
    torch.testing.assert_close(dw, plain.norm())


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_half_precision_computes_in_float32(variant, metric, half):
    """Norm-200 half embeddings: finite loss (float32), the gradient in the input dtype.

    The value is the loss of the same numbers in float32 (half inputs are upcast before any
    distance: float16 squared distances of such rows overflow 65504); the gradient is that
    float32 gradient rounded to the input dtype.
    """
    g = torch.Generator().manual_seed(0)
    x = (torch.nn.functional.normalize(torch.randn(64, 32, generator=g)) * 200).to(half)
    y = torch.arange(64) % 8
    kwargs = {"margin": 0.2, "metric": metric, "reduction": "mean"}
    losses = []
    for dtype in (half, torch.float32):
        e = x.to(dtype).requires_grad_(True)
        loss = VARIANTS[variant](e, y, **kwargs)
        (grad,) = torch.autograd.grad(loss, e)
        losses.append((loss, grad))
    (loss, grad), (loss32, grad32) = losses
    assert loss.dtype == torch.float32 and grad.dtype == half
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert loss.item() > 0 or variant == "semi_hard-pml"
    torch.testing.assert_close(loss, loss32, rtol=0, atol=0)
    torch.testing.assert_close(grad, grad32.to(half), rtol=0, atol=0)
