"""Pairwise and paired distances: loop reference, exact zeros, safe gradients at 0."""

from __future__ import annotations

import pytest
import torch

import loop_reference as ref
from losses import METRICS, paired_distances, pairwise_distances
from losses.distances import count_sorted_below

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
    assert torch.equal(d, d.T)  # exactly symmetric
    (grad,) = torch.autograd.grad(d.sum(), x)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("batch_size", [7, 300])
@pytest.mark.parametrize("metric", METRICS)
def test_exactly_symmetric_and_equal_rows_give_identical_distances(metric, dtype, batch_size, device):
    """Bitwise: d == d.T, and rows that repeat have the same distances to every row.

    Guaranteed by construction (a + b == b + a, copied rows), not by the matrix product:
    a BLAS may round x_i . x_j and x_j . x_i, or two equal rows, differently (blocking, GPU).
    """
    g = torch.Generator().manual_seed(batch_size)
    base = torch.randn(batch_size, 16, dtype=dtype, generator=g) * 30 + 5
    x = torch.cat([base, base[: batch_size // 3]])[torch.randperm(batch_size + batch_size // 3, generator=g)]
    d = pairwise_distances(x.to(device), metric=metric).cpu()
    assert torch.equal(d, d.T)
    _, group = torch.unique(x, dim=0, return_inverse=True)
    first = torch.zeros(int(group.max()) + 1, dtype=torch.long).scatter_reduce(
        0, group, torch.arange(x.shape[0]), "amin", include_self=False)[group]  # first row equal to each row
    assert (first != torch.arange(x.shape[0])).sum() == batch_size // 3
    assert torch.equal(d, d[first])


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


@pytest.mark.parametrize("width", [1, 7, 15, 16, 40], ids=lambda w: f"P{w}")
@pytest.mark.parametrize("right", [False, True], ids=["left", "right"])
def test_count_sorted_below_equals_searchsorted(width, right):
    g = torch.Generator().manual_seed(width)
    values = torch.randint(-3, 4, (150, width), generator=g).double().sort(dim=1).values  # ties
    values[:10, : width // 2] = -torch.inf  # padding in front, as sorted_positive_distances gives
    queries = torch.randint(-4, 5, (150, 90), generator=g).double()
    queries[::7, ::5] = torch.inf
    queries[::11, ::3] = -torch.inf
    got = count_sorted_below(values, queries, right=right)
    assert got.dtype == torch.long
    assert torch.equal(got, torch.searchsorted(values, queries, right=right))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("copies", [2, 40], ids=["few-equal", "many-equal"])  # 40: more than 8 B candidate pairs
def test_equal_rows_exactly_zero_and_near_equal_rows_not(metric, copies, dtype):
    g = torch.Generator().manual_seed(copies)
    base = torch.randn(4, 16, dtype=dtype, generator=g) * 30 + 10
    near = base[:1].clone()
    near[0, 3] = torch.nextafter(near[0, 3], torch.tensor(torch.inf, dtype=dtype))  # one ulp apart
    x = torch.cat([base.repeat(copies, 1), near])  # row i equals row i + 4k; the last row is near row 0
    d = pairwise_distances(x, metric=metric)
    group = torch.arange(x.shape[0]) % 4
    same = group[:, None] == group[None, :]
    same[-1, :] = same[:, -1] = False
    same[-1, -1] = True
    assert torch.equal(d[same], torch.zeros(int(same.sum()), dtype=dtype))
    assert torch.equal(paired_distances(x[4:-1], x[:-5], metric=metric), torch.zeros(x.shape[0] - 5, dtype=dtype))
    if metric != "cosine":  # the difference form resolves one ulp; the near row is not taken for equal
        assert (paired_distances(x[-1:], x[:1], metric=metric) > 0).item()
