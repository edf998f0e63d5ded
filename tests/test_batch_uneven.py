"""Uneven classes (1 to 40 members) through every code path of the batch variants.

Two label sets: classes of 1 to 16 members (at most 15 positives: the direct-comparison
path, P <= DIRECT_COUNT_MAX) and of 1 to 40 (39 positives: the binary-search path of
batch-all and semi-hard "pml"), shuffled. Values against the loop reference in float64;
gradients against the readable paths (batch-all's mask method, reduction="none" summed)
and, for the pair-choosing variants, against torch.autograd.gradcheck.
"""

from __future__ import annotations

import pytest
import torch

import loop_reference as ref
from losses import batch_all_triplet_loss, batch_hard_triplet_loss, semi_hard_triplet_loss
from losses.distances import DIRECT_COUNT_MAX

MARGIN = 0.5
CLASS_SIZES = {"direct": (1, 1, 2, 3, 5, 9, 16), "search": (1, 2, 4, 7, 26, 40)}


def _batch(path: str, seed: int = 0):
    sizes = CLASS_SIZES[path]
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), 10 * c + 3) for c, n in enumerate(sizes)])
    order = torch.randperm(labels.shape[0], generator=g)
    x = torch.randn(labels.shape[0], 3, dtype=torch.float64, generator=g)  # D = 3: semi-hard windows are full
    return x, labels[order]


def _value_and_grad(fn, x, y):
    e = x.clone().requires_grad_(True)
    loss = fn(e, y)
    (grad,) = torch.autograd.grad(loss, e)
    return loss, grad


def test_label_sets_reach_both_paths():
    assert max(CLASS_SIZES["direct"]) - 1 <= DIRECT_COUNT_MAX < max(CLASS_SIZES["search"]) - 1


@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean"])
@pytest.mark.parametrize("path", list(CLASS_SIZES))
def test_batch_all(path, metric):
    x, y = _batch(path)
    expected = ref.batch_all(x.tolist(), y.tolist(), MARGIN, metric, "none")
    for reduction in ("sum", "mean", "mean_positive"):
        def sorted_(e, labels):
            return batch_all_triplet_loss(e, labels, margin=MARGIN, metric=metric, reduction=reduction)

        def mask(e, labels):
            return batch_all_triplet_loss(e, labels, margin=MARGIN, metric=metric, reduction=reduction, method="mask")

        loss, grad = _value_and_grad(sorted_, x, y)
        loss_mask, grad_mask = _value_and_grad(mask, x, y)
        assert loss.item() == pytest.approx(ref.reduce(expected, reduction), rel=1e-10)
        torch.testing.assert_close(loss, loss_mask, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(grad, grad_mask, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean"])
@pytest.mark.parametrize("path", list(CLASS_SIZES))
def test_semi_hard_pml(path, metric):
    x, y = _batch(path)
    expected = ref.semi_hard_pml(x.tolist(), y.tolist(), MARGIN, metric, "none")
    assert len(expected) > 100

    def per_item(e, labels):
        return semi_hard_triplet_loss(e, labels, margin=MARGIN, metric=metric, semantics="pml", reduction="none").sum()

    _, grad_items = _value_and_grad(per_item, x, y)
    for reduction in ("sum", "mean", "mean_positive"):
        def ours(e, labels):
            return semi_hard_triplet_loss(e, labels, margin=MARGIN, metric=metric, semantics="pml", reduction=reduction)

        loss, grad = _value_and_grad(ours, x, y)
        assert loss.item() == pytest.approx(ref.reduce(expected, reduction), rel=1e-10)
        if reduction == "sum":
            torch.testing.assert_close(grad, grad_items, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean"])
@pytest.mark.parametrize("path", list(CLASS_SIZES))
def test_semi_hard_tf_and_batch_hard(path, metric):
    x, y = _batch(path)
    xs, ys = x.tolist(), y.tolist()
    cases = {
        "tf": (lambda e: semi_hard_triplet_loss(e, y, margin=MARGIN, metric=metric, semantics="tf", reduction="mean"),
               ref.semi_hard_tf(xs, ys, MARGIN, metric, "mean")),
        "hard": (lambda e: batch_hard_triplet_loss(e, y, margin=MARGIN, metric=metric, reduction="mean"),
                 ref.batch_hard(xs, ys, MARGIN, metric, "mean", False)),
    }
    for fn, expected in cases.values():
        e = x.clone().requires_grad_(True)
        assert fn(e).item() == pytest.approx(expected, rel=1e-10)
        if path == "direct":  # the choice is stable under gradcheck's 1e-6 steps (no exact ties in normal data)
            assert torch.autograd.gradcheck(fn, (e,), eps=1e-6, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["float64", "float16"])
@pytest.mark.parametrize("path", list(CLASS_SIZES))
def test_cuda_matches_cpu(path, dtype):
    """Every variant on the GPU (its chunk sizes differ) against the CPU, values and gradients."""
    x, y = _batch(path)
    x = x.to(dtype)
    variants = [
        lambda e, labels: batch_all_triplet_loss(e, labels, margin=MARGIN, metric="euclidean"),
        lambda e, labels: batch_hard_triplet_loss(e, labels, margin=MARGIN, metric="euclidean"),
        lambda e, labels: semi_hard_triplet_loss(e, labels, margin=MARGIN, metric="euclidean", semantics="tf",
                                                 reduction="mean"),
        lambda e, labels: semi_hard_triplet_loss(e, labels, margin=MARGIN, metric="euclidean", semantics="pml",
                                                 reduction="mean_positive"),
    ]
    for fn in variants:
        loss, grad = _value_and_grad(fn, x, y)
        loss_gpu, grad_gpu = _value_and_grad(fn, x.cuda(), y.cuda())
        tol = 1e-10 if dtype == torch.float64 else 1e-3
        torch.testing.assert_close(loss_gpu.cpu(), loss, atol=tol, rtol=tol)
        torch.testing.assert_close(grad_gpu.cpu(), grad, atol=tol, rtol=tol)


@pytest.mark.parametrize("path", list(CLASS_SIZES))
def test_semi_hard_tf_float32_packed_keys(path):
    """float32 takes the packed-key selection (float64 the generic one): same value, same gradient."""
    x, y = _batch(path)
    x = x * 8  # integer-rounded below: exact float32 distances, many ties
    x32 = x.round().float()

    def tf(e):
        return semi_hard_triplet_loss(e, y, margin=MARGIN, metric="squared_euclidean", semantics="tf",
                                      reduction="mean")

    loss32, grad32 = _value_and_grad(lambda e, labels: tf(e), x32, y)
    loss64, grad64 = _value_and_grad(lambda e, labels: tf(e), x32.double(), y)
    assert loss32.item() == pytest.approx(ref.semi_hard_tf(x32.double().tolist(), y.tolist(), MARGIN,
                                                           "squared_euclidean", "mean"), rel=1e-6)
    torch.testing.assert_close(loss32.double(), loss64, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-6, atol=1e-6)
