"""Naive triplet loss on explicit triplets: loop reference, analytic gradient, gradcheck."""

from __future__ import annotations

import pytest
import torch

import loop_reference as ref
from losses import METRICS, REDUCTIONS, naive_triplet_loss


def _triplets(n: int, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 4, dtype=dtype, generator=g) for _ in range(3)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("metric", METRICS)
def test_matches_loop_reference(metric, reduction):
    a, p, n = _triplets(12)
    p[3] = a[3]  # a duplicate anchor/positive pair: distance 0
    for margin in (0.1, 1.0):
        got = naive_triplet_loss(a, p, n, margin=margin, metric=metric, reduction=reduction)
        expected = ref.naive(a.tolist(), p.tolist(), n.tolist(), margin, metric, reduction)
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), atol=1e-10, rtol=0)


def test_analytic_gradient_squared_euclidean():
    """Active triplets: dL/da = 2(n - p), dL/dp = 2(p - a), dL/dn = 2(a - n); inactive ones: 0."""
    a, p, n = (t.requires_grad_(True) for t in _triplets(16, seed=1))
    loss = naive_triplet_loss(a, p, n, margin=1.0, metric="squared_euclidean", reduction="sum")
    ga, gp, gn = torch.autograd.grad(loss, (a, p, n))
    with torch.no_grad():
        active = (((a - p) ** 2).sum(1) - ((a - n) ** 2).sum(1) + 1.0 > 0).to(a.dtype)[:, None]
        assert 0 < active.sum() < 16, "the batch must mix active and inactive triplets"
        torch.testing.assert_close(ga, 2 * (n - p) * active)
        torch.testing.assert_close(gp, 2 * (p - a) * active)
        torch.testing.assert_close(gn, 2 * (a - n) * active)


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(metric):
    a, p, n = (t.requires_grad_(True) for t in _triplets(6, seed=2))
    for reduction in ("mean", "mean_positive"):
        fn = lambda *t: naive_triplet_loss(*t, margin=0.5, metric=metric, reduction=reduction)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (a, p, n))


def test_duplicate_positive_gives_finite_gradient(dtype):
    a, p, n = _triplets(4, dtype=dtype)
    p = a.clone()
    a.requires_grad_(True)
    loss = naive_triplet_loss(a, p, n, margin=10.0, metric="euclidean")
    (grad,) = torch.autograd.grad(loss, a)
    assert torch.isfinite(grad).all()
    assert loss.dtype == dtype


def test_empty_batch_gives_attached_zero():
    a, p, n = (torch.zeros(0, 3, requires_grad=True) for _ in range(3))
    loss = naive_triplet_loss(a, p, n, margin=1.0, metric="euclidean")
    assert loss.item() == 0.0 and loss.requires_grad
    assert naive_triplet_loss(a, p, n, margin=1.0, metric="euclidean", reduction="none").shape == (0,)
