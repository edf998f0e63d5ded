"""Batch-all triplet loss: sorted and mask methods against the loop reference, gradients, stats."""

from __future__ import annotations

import pytest
import torch

import loop_reference as ref
from losses import METHODS, METRICS, REDUCTIONS, batch_all_triplet_loss

CASES = ref.named_batches()


def _inputs(case: str, dtype=torch.float64, requires_grad=False):
    x, y = CASES[case]
    return torch.tensor(x, dtype=dtype, requires_grad=requires_grad), torch.tensor(y)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_loop_reference(case, metric, reduction, method):
    x, y = _inputs(case)
    for margin in (0.5, 1.0):
        got = batch_all_triplet_loss(x, y, margin=margin, metric=metric, reduction=reduction, method=method)
        expected = torch.tensor(ref.batch_all(*CASES[case], margin, metric, reduction), dtype=torch.float64)
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("reduction", ["mean", "mean_positive", "sum"])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", ["random", "unbalanced", "duplicates", "ties", "singletons_and_pairs"])
def test_sorted_gradient_equals_mask_gradient(case, metric, reduction):
    grads = []
    for method in METHODS:
        x, y = _inputs(case, requires_grad=True)
        batch_all_triplet_loss(x, y, margin=1.0, metric=metric, reduction=reduction, method=method).backward()
        grads.append(x.grad)
    assert torch.isfinite(grads[0]).all()
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=0)


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(metric):
    torch.manual_seed(0)
    x = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    for method in METHODS:
        fn = lambda e: batch_all_triplet_loss(e, y, margin=0.3, metric=metric, reduction="mean", method=method)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize("metric", METRICS)
def test_float32_sorted_close_to_float64(metric):
    """Prefix sums over sorted distances must not lose float32 accuracy on a larger batch."""
    torch.manual_seed(1)
    x = torch.randn(256, 32, dtype=torch.float64) * 3 + 5
    y = torch.arange(256) % 16
    for reduction in ("mean", "mean_positive", "sum"):
        exact = batch_all_triplet_loss(x, y, margin=0.2, metric=metric, reduction=reduction)  # float64
        single = batch_all_triplet_loss(x.float(), y, margin=0.2, metric=metric, reduction=reduction)
        assert single.dtype == torch.float32
        torch.testing.assert_close(single.double(), exact, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", list(CASES))
def test_stats_match_reference(case, metric, method):
    x, y = _inputs(case)
    _, stats = batch_all_triplet_loss(x, y, margin=0.5, metric=metric, method=method, return_stats=True)
    expected = ref.expected_stats(ref.batch_all(*CASES[case], 0.5, metric, "none"), *CASES[case], 0.5, metric)
    for field, value in expected.items():
        assert not getattr(stats, field).requires_grad
        assert getattr(stats, field).item() == pytest.approx(value, abs=1e-12), field
    # batch-all's own items are all valid triplets, active iff the margin is violated
    assert stats.active_fraction.item() == pytest.approx(stats.violation_rate.item())


def test_none_order_is_lexicographic_triplets():
    x, y = _inputs("random")
    by_mask = batch_all_triplet_loss(x, y, margin=1.0, metric="euclidean", reduction="none", method="mask")
    by_pairs = batch_all_triplet_loss(x, y, margin=1.0, metric="euclidean", reduction="none", method="sorted")
    assert by_mask.shape == (len(ref.valid_triplets(CASES["random"][1])),)
    torch.testing.assert_close(by_pairs, by_mask, atol=1e-12, rtol=0)


def test_mean_positive_ignores_inactive_triplets():
    """Two triplets, one inactive: mean_positive is the active loss, mean half of it."""
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    # triplets (0, 1, 2): relu(1 - 3 + 2.5) = 0.5 and (1, 0, 2): relu(1 - 2 + 2.5) = 1.5
    kwargs = dict(margin=2.5, metric="euclidean")
    assert batch_all_triplet_loss(x, y, reduction="sum", **kwargs).item() == pytest.approx(2.0)
    kwargs["margin"] = 1.5  # now (0, 1, 2) is exactly at the kink: loss 0
    assert batch_all_triplet_loss(x, y, reduction="mean_positive", **kwargs).item() == pytest.approx(0.5)
    assert batch_all_triplet_loss(x, y, reduction="mean", **kwargs).item() == pytest.approx(0.25)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    x, y = _inputs("random")
    cpu = batch_all_triplet_loss(x, y, margin=0.5, metric="euclidean")
    gpu = batch_all_triplet_loss(x.cuda(), y.cuda(), margin=0.5, metric="euclidean")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-10, rtol=0)


@pytest.mark.parametrize("semi_hard", [False, True], ids=["all", "semi-hard"])
@pytest.mark.parametrize("per_class", [3, 8, 20], ids=lambda k: f"K{k}")
def test_counted_and_window_hinge_sums_agree(semi_hard, per_class):
    from losses.batch_all import counted_hinge_sum, window_hinge_sum
    from losses.distances import batch_distances, class_members, count_sorted_below, sorted_positive_distances

    g = torch.Generator().manual_seed(per_class)
    labels = torch.arange(60) % (60 // per_class)
    x = torch.randint(-2, 3, (60, 4), generator=g).double().requires_grad_(True)  # many exact ties
    margin = 2.5  # integer squared distances: semi-hard windows hold some
    sums = []
    for counted in (True, False):
        dist, pos, neg = batch_distances(x, labels, metric="squared_euclidean")
        sorted_pos, pos_index = sorted_positive_distances(dist.detach(), labels)
        if counted:
            total, active, _ = counted_hinge_sum(dist, class_members(labels), sorted_pos, pos_index, margin=margin,
                                              semi_hard=semi_hard)
        else:
            d_an = torch.where(neg, dist.detach(), torch.inf)
            start = count_sorted_below(sorted_pos + margin, d_an, right=True)
            end = count_sorted_below(sorted_pos, d_an) if semi_hard else None
            total, active = window_hinge_sum(dist, sorted_pos, pos_index, margin=margin, start=start, end=end)
        (grad,) = torch.autograd.grad(total, x)
        sums.append((total, active, grad))
    assert sums[0][1].item() == sums[1][1].item() > 0
    torch.testing.assert_close(sums[0][0], sums[1][0], atol=1e-10, rtol=0)
    torch.testing.assert_close(sums[0][2], sums[1][2], atol=1e-10, rtol=0)


@pytest.mark.parametrize("reduction", ["sum", "mean", "mean_positive"])
def test_saved_gradient_is_reused_safely(reduction):
    """A plain backward passes the saved (B, B) gradient on without a copy; the graph stays reusable."""
    from losses import semi_hard_triplet_loss

    g = torch.Generator().manual_seed(3)
    x = torch.randn(48, 5, generator=g).requires_grad_(True)
    labels = torch.arange(48) % 6
    losses = {
        "batch_all": batch_all_triplet_loss(x, labels, margin=0.5, metric="euclidean", reduction=reduction),
        "semi_hard_pml": semi_hard_triplet_loss(x, labels, margin=0.5, metric="euclidean", semantics="pml",
                                                reduction=reduction),
    }
    for name, loss in losses.items():
        (first,) = torch.autograd.grad(loss, x, retain_graph=True)
        (second,) = torch.autograd.grad(loss, x, retain_graph=True)
        (weighted,) = torch.autograd.grad(2.5 * loss, x, retain_graph=True)
        (again,) = torch.autograd.grad(loss, x)
        assert first.abs().sum() > 0, name
        assert torch.equal(first, second) and torch.equal(first, again), name
        torch.testing.assert_close(weighted, 2.5 * first, rtol=1e-4, atol=1e-6)  # float32 sums in another order
