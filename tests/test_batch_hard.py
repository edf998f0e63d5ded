"""Batch-hard triplet loss (hard and soft margin) against the loop reference, gradients, stats."""

from __future__ import annotations

import pytest
import torch

import loop_reference as ref
from losses import METRICS, REDUCTIONS, batch_hard_triplet_loss, paired_distances

CASES = ref.named_batches()
MARGINS = {"hard": 0.5, "soft": None}


def _inputs(case: str, dtype=torch.float64, requires_grad=False):
    x, y = CASES[case]
    return torch.tensor(x, dtype=dtype, requires_grad=requires_grad), torch.tensor(y)


@pytest.mark.parametrize("kind", list(MARGINS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_loop_reference(case, metric, reduction, kind):
    x, y = _inputs(case)
    soft = kind == "soft"
    got = batch_hard_triplet_loss(x, y, margin=MARGINS[kind], metric=metric, reduction=reduction, soft=soft)
    expected = ref.batch_hard(*CASES[case], MARGINS[kind], metric, reduction, soft)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", list(MARGINS))
@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(metric, kind):
    torch.manual_seed(0)
    x = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])

    def fn(e):
        return batch_hard_triplet_loss(e, y, margin=MARGINS[kind], metric=metric, soft=kind == "soft")

    assert torch.autograd.gradcheck(fn, (x,))


def test_gradient_reaches_only_the_hardest_pair():
    """Anchor 0: hardest positive 2 (d 2), hardest negative 3 (d 2.5); 1 and 4 get no gradient from it."""
    x = torch.tensor([[0.0], [1.0], [2.0], [2.5], [4.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1])
    per_anchor = batch_hard_triplet_loss(x, y, margin=1.0, metric="euclidean", reduction="none")
    assert per_anchor.shape == (5,)
    (grad,) = torch.autograd.grad(per_anchor[0], x)
    # d/dx of relu(|x0 - x2| - |x0 - x3| + 1) = relu(2 - 2.5 + 1) = 0.5 > 0
    assert per_anchor[0].item() == pytest.approx(0.5)
    torch.testing.assert_close(grad.flatten(), torch.tensor([0.0, 0.0, 1.0, -1.0, 0.0], dtype=torch.float64))


def test_soft_requires_margin_none():
    x, y = _inputs("random")
    with pytest.raises(ValueError, match="margin is unused when soft=True"):
        batch_hard_triplet_loss(x, y, margin=0.2, metric="euclidean", soft=True)
    with pytest.raises(ValueError, match="margin"):
        batch_hard_triplet_loss(x, y, margin=None, metric="euclidean", soft=False)


@pytest.mark.parametrize("kind", list(MARGINS))
@pytest.mark.parametrize("case", list(CASES))
def test_stats_match_reference(case, kind):
    x, y = _inputs(case)
    soft = kind == "soft"
    _, stats = batch_hard_triplet_loss(x, y, margin=MARGINS[kind], metric="euclidean", soft=soft, return_stats=True)
    items = ref.batch_hard(*CASES[case], MARGINS[kind], "euclidean", "none", soft)
    expected = ref.expected_stats(items, *CASES[case], MARGINS[kind] or 0.0, "euclidean")
    for field, value in expected.items():
        assert getattr(stats, field).item() == pytest.approx(value, abs=1e-12), field


@pytest.mark.parametrize("kind", list(MARGINS))
@pytest.mark.parametrize("metric", METRICS)
def test_float32_close_to_float64(metric, kind):
    x = torch.randn(128, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 3 + 5
    y = torch.arange(128) % 8
    kwargs = dict(margin=MARGINS[kind], metric=metric, soft=kind == "soft")
    single = batch_hard_triplet_loss(x.float(), y, **kwargs)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), batch_hard_triplet_loss(x, y, **kwargs), rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    x, y = _inputs("random")
    cpu = batch_hard_triplet_loss(x, y, margin=0.5, metric="cosine")
    gpu = batch_hard_triplet_loss(x.cuda(), y.cuda(), margin=0.5, metric="cosine")
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-10, rtol=0)



@pytest.mark.parametrize("metric", METRICS)
def test_tied_hardest_pairs_send_the_gradient_to_the_first(metric):
    """Copies of rows (same label): a tied farthest positive / nearest negative gets the gradient at its first index.

    The expected gradient comes from the loop reference's distances (equal inputs give equal
    Python floats), the first index attaining each max / min, and the paired distances.
    """
    g = torch.Generator().manual_seed(0)
    base = torch.randn(60, 6, dtype=torch.float64, generator=g)
    x = torch.cat([base[40:], base, base[:40]]).requires_grad_(True)  # copies before and after
    y = torch.cat([torch.arange(60)[40:], torch.arange(60), torch.arange(60)[:40]]) % 12
    loss = batch_hard_triplet_loss(x, y, margin=0.5, metric=metric, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    d = ref.distance_matrix(x.detach().tolist(), metric)
    labels = y.tolist()
    anchors, positives, negatives = [], [], []
    for a in range(len(labels)):
        pos = [j for j in range(len(labels)) if j != a and labels[j] == labels[a]]
        neg = [j for j in range(len(labels)) if labels[j] != labels[a]]
        anchors.append(a)
        positives.append(max(pos, key=lambda j: (d[a][j], -j)))  # first of the farthest
        negatives.append(min(neg, key=lambda j: (d[a][j], j)))  # first of the nearest
    assert any(d[a][p] == d[a][p2] for a, p in zip(anchors, positives) for p2 in range(len(labels))
               if p2 != p and p2 != a and labels[p2] == labels[a])  # the batch has tied hardest positives
    e = x.detach().clone().requires_grad_(True)
    gap = paired_distances(e[anchors], e[positives], metric=metric) - paired_distances(
        e[anchors], e[negatives], metric=metric)
    (expected,) = torch.autograd.grad(torch.relu(gap + 0.5).sum(), e)
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=1e-10)
