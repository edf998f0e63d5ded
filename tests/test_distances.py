"""Pairwise and paired distances: loop reference, exact zeros, safe gradients at 0."""

from __future__ import annotations

import pytest
import torch

import loop_reference as ref
from losses import METRICS, paired_distances, pairwise_distances

CASES = ref.named_batches()


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", list(CASES))
def test_pairwise_matches_loop_reference(case, metric):
    x, _ = CASES[case]
    got = pairwise_distances(torch.tensor(x, dtype=torch.float64), metric=metric)
    expected = torch.tensor(ref.distance_matrix(x, metric), dtype=torch.float64)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("metric", METRICS)
def test_diagonal_and_duplicates_exactly_zero_with_finite_gradient(metric, dtype):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 8, dtype=dtype, generator=g) * 100 + 50  # large norms: cancellation-prone
    x = torch.cat([base, base[:2]]).requires_grad_(True)  # rows 5, 6 repeat rows 0, 1
    d = pairwise_distances(x, metric=metric)
    assert torch.equal(d.diagonal(), torch.zeros(7, dtype=dtype))
    assert d[0, 5].item() == 0.0 and d[6, 1].item() == 0.0
    assert (d >= 0).all()
    torch.testing.assert_close(d, d.T)  # a matrix product is symmetric up to rounding only
    (grad,) = torch.autograd.grad(d.sum(), x)
    assert torch.isfinite(grad).all()


def test_gradient_at_zero_distance_is_zero_like_cdist():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [4.0, 6.0]], dtype=torch.float64, requires_grad=True)
    (ours,) = torch.autograd.grad(pairwise_distances(x, metric="euclidean")[0, 1], x)
    assert torch.equal(ours, torch.zeros_like(x))
    (theirs,) = torch.autograd.grad(pairwise_distances(x, metric="euclidean")[0, 2], x)
    y = x.detach().clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(torch.cdist(y, y)[0, 2], y)
    torch.testing.assert_close(theirs, reference)


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(metric):
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: pairwise_distances(e, metric=metric), (x,))
    a, b = x[:3].detach().requires_grad_(True), x[3:].detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u, v: paired_distances(u, v, metric=metric), (a, b))


@pytest.mark.parametrize("metric", METRICS)
def test_paired_is_the_diagonal_of_pairwise(metric, dtype):
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(4, 5, dtype=dtype, generator=g), torch.randn(4, 5, dtype=dtype, generator=g)
    full = pairwise_distances(torch.cat([a, b]), metric=metric)[:4, 4:].diagonal()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(paired_distances(a, b, metric=metric), full, atol=tol, rtol=tol)


def test_metrics_agree_with_torch():
    x = torch.randn(9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    cdist = torch.cdist(x, x)
    torch.testing.assert_close(pairwise_distances(x, metric="euclidean"), cdist)
    torch.testing.assert_close(pairwise_distances(x, metric="squared_euclidean"), cdist**2)
    cos = torch.nn.functional.cosine_similarity(x[:, None], x[None, :], dim=2)
    torch.testing.assert_close(pairwise_distances(x, metric="cosine"), (1 - cos).fill_diagonal_(0))


def test_translation_does_not_cost_float32_accuracy():
    """The rounded batch mean is subtracted before the |a|^2 + |b|^2 - 2ab expansion."""
    x = torch.randn(32, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    exact = torch.cdist(x, x)
    shifted = pairwise_distances((x + 1000).float(), metric="euclidean").double()
    torch.testing.assert_close(shifted, exact, atol=2e-4, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("metric", METRICS)
def test_cuda_matches_cpu(metric):
    x = torch.randn(9, 4, dtype=torch.float64)
    torch.testing.assert_close(pairwise_distances(x.cuda(), metric=metric).cpu(), pairwise_distances(x, metric=metric))
