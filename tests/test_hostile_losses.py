"""Hostile inputs for every loss: rows of huge or tiny norm, and double backward (create_graph=True).

Each case is a function z (N, D) -> scalar loss of one variant, built from one tensor so
that gradients reach every input (for the reference-set losses z holds the anchors, then
the references). Huge and tiny norms: a float32 loss and its gradient equal the float64
ones wherever these are representable in float32, and a distance that is not (squared
distances of rows of norm 1e19) raises a ValueError naming float32 and float64. Double
backward: torch.autograd.gradgradcheck in float64, and Hessian-vector products of the
scaled (huge / tiny norm) path against float64.
"""

from __future__ import annotations

import pytest
import torch

from losses import (
    CombinedLoss,
    CrossBatchMemory,
    TripletWithIDLoss,
    batch_all_triplet_loss,
    batch_all_triplet_loss_refs,
    batch_hard_triplet_loss,
    batch_hard_triplet_loss_refs,
    cross_distances,
    naive_triplet_loss,
    paired_distances,
    pairwise_distances,
    semi_hard_triplet_loss,
    semi_hard_triplet_loss_refs,
)
from losses.memory import loss_against_memory

METRICS = ("euclidean", "squared_euclidean", "cosine")
REFS = 8  # references after the B anchors in z, for the reference-set cases


def _labels(kind: str, n: int) -> torch.Tensor:
    """"pk": 4 classes (3 for n = 12), P = n / classes - 1 <= 24, the direct-comparison paths;
    "wide": one class of n - 4 rows, P > 24, the windowed (binary search) paths."""
    if kind == "wide":
        return torch.tensor([0] * (n - 4) + [1] * 4)
    return torch.arange(n) % (3 if n == 12 else 4)


def _refs_labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 3


def _in_batch(fn, **settings):
    def loss(z, y, margin, metric):
        out = fn(z, y, margin=margin, metric=metric, **settings)
        return out.sum() if out.dim() else out  # reduction "none": the sum of the items

    return loss


def _soft(z, y, margin, metric):
    return batch_hard_triplet_loss(z, y, margin=None, soft=True, metric=metric)


def _naive(z, y, margin, metric):
    """Every valid triplet of the batch as explicit rows."""
    same = y[:, None] == y[None, :]
    pos = same & ~torch.eye(len(y), dtype=torch.bool)
    a, p, n = (pos[:, :, None] & ~same[:, None, :]).nonzero(as_tuple=True)
    return naive_triplet_loss(z[a], z[p], z[n], margin=margin, metric=metric, reduction="mean")


def _refs(fn, **settings):
    def loss(z, y, margin, metric):
        anchors, references = z[:-REFS], z[-REFS:]  # gradients to both
        return fn(anchors, y[:-REFS], references, _refs_labels(REFS), anchor_index_in_refs=None,
                  margin=margin, metric=metric, **settings)

    return loss


def _memory(fn, **settings):
    def loss(z, y, margin, metric):
        past, batch = z[-REFS:].detach(), z[:-REFS]  # the memory holds a detached earlier batch
        memory = CrossBatchMemory(32, z.shape[1], dtype=z.dtype)
        memory.enqueue(past, _refs_labels(REFS))
        return loss_against_memory(fn, memory, batch, y[:-REFS], margin=margin, metric=metric, **settings)

    loss.refs = fn, settings  # for a check with the memory's contents held fixed
    return loss


# name -> (loss function, label kind, number of rows of z beyond the batch)
CASES = {
    "batch_all-sorted": (_in_batch(batch_all_triplet_loss), "pk", 0),
    "batch_all-sorted-mean": (_in_batch(batch_all_triplet_loss, reduction="mean"), "pk", 0),
    "batch_all-window": (_in_batch(batch_all_triplet_loss), "wide", 0),
    "batch_all-mask": (_in_batch(batch_all_triplet_loss, method="mask"), "pk", 0),
    "batch_all-none": (_in_batch(batch_all_triplet_loss, reduction="none"), "pk", 0),
    "batch_hard": (_in_batch(batch_hard_triplet_loss), "pk", 0),
    "batch_hard-soft": (_soft, "pk", 0),
    "semi_hard-tf": (_in_batch(semi_hard_triplet_loss, semantics="tf", reduction="mean"), "pk", 0),
    "semi_hard-pml": (_in_batch(semi_hard_triplet_loss, semantics="pml", reduction="mean_positive"), "pk", 0),
    "semi_hard-pml-mean": (_in_batch(semi_hard_triplet_loss, semantics="pml", reduction="mean"), "pk", 0),
    "semi_hard-pml-window": (_in_batch(semi_hard_triplet_loss, semantics="pml", reduction="sum"), "wide", 0),
    "semi_hard-pml-none": (_in_batch(semi_hard_triplet_loss, semantics="pml", reduction="none"), "pk", 0),
    "naive": (_naive, "pk", 0),
    "batch_all-refs": (_refs(batch_all_triplet_loss_refs), "pk", REFS),
    "batch_hard-refs": (_refs(batch_hard_triplet_loss_refs), "pk", REFS),
    "semi_hard-tf-refs": (_refs(semi_hard_triplet_loss_refs, semantics="tf", reduction="mean"), "pk", REFS),
    "semi_hard-pml-refs": (_refs(semi_hard_triplet_loss_refs, semantics="pml", reduction="sum"), "pk", REFS),
    "batch_all-memory": (_memory(batch_all_triplet_loss_refs), "pk", REFS),
    "semi_hard-tf-memory": (_memory(semi_hard_triplet_loss_refs, semantics="tf", reduction="mean"), "pk", REFS),
}


def _problem(case: str, batch: int, dim: int, seed: int = 0):
    """-> (loss function of z, z (N, D) float64 standard normal, labels (N,))."""
    fn, kind, extra = CASES[case]
    n = 30 if kind == "wide" else batch
    z = torch.randn(n + extra, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y = torch.cat([_labels(kind, n), _refs_labels(extra)]) if extra else _labels(kind, n)
    return fn, z, y


def _margin(metric: str, scale: float) -> float:
    """About a quarter of a typical distance of standard normal rows (D = 8) times scale."""
    return {"euclidean": scale, "squared_euclidean": 4 * scale * scale, "cosine": 0.2}[metric]


def _value_and_grad(fn, z, y, margin, metric):
    z = z.detach().requires_grad_(True)
    loss = fn(z, y, margin, metric)
    (grad,) = torch.autograd.grad(loss, z, allow_unused=True)
    return loss.detach(), torch.zeros_like(z) if grad is None else grad


# (metric, scale): rows of huge norm (the expansion |a|^2 + |b|^2 - 2ab overflows float32
# from about 1e18), and of tiny norm (their squares underflow); every distance representable
SCALES = [("euclidean", 1e19), ("euclidean", 1e20), ("euclidean", 1e30), ("euclidean", 1e-30),
          ("squared_euclidean", 3e17), ("squared_euclidean", 1e-15),
          ("cosine", 1e19), ("cosine", 1e30), ("cosine", 1e-30)]


@pytest.mark.parametrize("metric,scale", SCALES, ids=[f"{m}-{s:g}" for m, s in SCALES])
@pytest.mark.parametrize("case", list(CASES))
def test_float32_of_huge_or_tiny_norm_equals_float64(case, metric, scale):
    fn, z, y = _problem(case, 16, 8)
    z = z * scale
    margin = _margin(metric, scale)
    value64, grad64 = _value_and_grad(fn, z, y, margin, metric)
    value32, grad32 = _value_and_grad(fn, z.float(), y, margin, metric)
    assert torch.isfinite(value32) and bool(torch.isfinite(grad32).all())
    assert value64 != 0  # a case that tests something
    torch.testing.assert_close(value32.double(), value64, rtol=1e-4, atol=0.0)
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-3, atol=1e-4 * float(grad64.abs().max()))


# (metric, scale, dim): distances that float32 cannot hold
OVERFLOWS = [("squared_euclidean", 1e19, 8), ("euclidean", 5e37, 64)]


@pytest.mark.parametrize("metric,scale,dim", OVERFLOWS, ids=[f"{m}-{s:g}" for m, s, _ in OVERFLOWS])
@pytest.mark.parametrize("case", list(CASES))
def test_float32_distances_beyond_its_range_raise_naming_the_dtype(case, metric, scale, dim):
    fn, z, y = _problem(case, 16, dim)
    z = (z * scale).float()
    assert bool(torch.isfinite(z).all())
    with pytest.raises(ValueError, match=r"exceed the torch\.float32 range.*float64"):
        fn(z, y, 1.0, metric)


@pytest.mark.parametrize("metric", METRICS)
def test_distance_functions_of_huge_norm_equal_float64(metric):
    g = torch.Generator().manual_seed(1)
    scale = 3e17 if metric == "squared_euclidean" else 1e30
    x, r = (torch.randn(n, 8, dtype=torch.float64, generator=g) * scale for n in (10, 7))
    for compute in (lambda a, b: pairwise_distances(a, metric=metric),
                    lambda a, b: cross_distances(a, b, metric=metric),
                    lambda a, b: paired_distances(a[:7], b, metric=metric)):
        d64 = compute(x, r)
        d32 = compute(x.float(), r.float())
        assert d32.dtype == torch.float32
        torch.testing.assert_close(d32.double(), d64, rtol=1e-5, atol=1e-6 * float(d64.max()))


@pytest.mark.parametrize("metric", METRICS)
def test_distances_of_rows_scaled_by_a_power_of_two_scale_with_them(metric):
    """Rows times 2^k give distances times 2^k (2^2k squared, 1 cosine): bit for bit within the
    normal range (nothing is scaled there; the rounded mean stays 0), to rounding beyond it."""
    x = torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) / 64
    power = {"euclidean": 1, "squared_euclidean": 2, "cosine": 0}[metric]
    d = pairwise_distances(x, metric=metric)
    for k in (3, -3):
        assert torch.equal(pairwise_distances(x * 2.0 ** k, metric=metric), d * 2.0 ** (power * k))
    for k in (-1000, 500 if metric == "squared_euclidean" else 1000):  # beyond the float64 expansion's range
        torch.testing.assert_close(pairwise_distances(x * 2.0 ** k, metric=metric), d * 2.0 ** (power * k),
                                   rtol=1e-12, atol=0.0)


# (metric, scale) with second derivatives representable in float32 (cosine's are about 1 / |x|^2)
HESSIAN_SCALES = [("euclidean", 1e30), ("euclidean", 1e-30), ("squared_euclidean", 2.0 ** 61), ("cosine", 1e-10)]


@pytest.mark.parametrize("metric,scale", HESSIAN_SCALES, ids=[f"{m}-{s:g}" for m, s in HESSIAN_SCALES])
@pytest.mark.parametrize("case", ["batch_all-sorted", "batch_all-window", "batch_hard", "semi_hard-tf", "naive",
                                  "batch_all-refs", "semi_hard-pml-refs"])
def test_double_backward_of_huge_or_tiny_norm_equals_float64(case, metric, scale):
    """Hessian-vector products in float32, through the scaled path, equal float64 ones."""
    fn, z, y = _problem(case, 12, 3)
    v = torch.randn(z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    z, margin = z * scale, _margin(metric, scale)
    products = []
    for dtype in (torch.float32, torch.float64):
        e = z.to(dtype).requires_grad_(True)
        (g,) = torch.autograd.grad(fn(e, y, margin, metric), e, create_graph=True)
        (hv,) = torch.autograd.grad((g * v.to(dtype)).sum(), e)
        assert bool(torch.isfinite(hv).all())
        products.append(hv.double())
    assert products[1].abs().max() > 0
    torch.testing.assert_close(products[0], products[1], rtol=1e-3, atol=1e-4 * float(products[1].abs().max()))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", list(CASES))
def test_double_backward_is_exact(case, metric):
    """gradgradcheck in float64; random rows (no ties, no hinge at its kink)."""
    fn, z, y = _problem(case, 12, 3 if CASES[case][1] == "pk" else 2, seed=4)
    if case.endswith("-memory"):  # the loss treats the memory (the batch too, once enqueued) as constants
        loss_refs, settings = fn.refs
        memory = CrossBatchMemory(32, z.shape[1], dtype=z.dtype)
        memory.enqueue(z[-REFS:], _refs_labels(REFS))
        batch, labels = z[:-REFS], y[:-REFS]
        slots = memory.enqueue(batch, labels)
        references, reference_labels = memory.contents()
        assert torch.autograd.gradgradcheck(
            lambda e: loss_refs(e, labels, references, reference_labels, anchor_index_in_refs=slots, margin=0.5,
                                metric=metric, **settings), (batch.requires_grad_(True),))
    else:
        assert torch.autograd.gradgradcheck(lambda e: fn(e, y, 0.5, metric), (z.requires_grad_(True),))


@pytest.mark.parametrize("metric", METRICS)
def test_distance_functions_support_double_backward(metric):
    g = torch.Generator().manual_seed(5)
    x, r = (torch.randn(n, 3, dtype=torch.float64, generator=g).requires_grad_(True) for n in (6, 5))
    assert torch.autograd.gradgradcheck(lambda a: pairwise_distances(a, metric=metric), (x,))
    assert torch.autograd.gradgradcheck(lambda a, b: cross_distances(a, b, metric=metric), (x, r))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("variant", ["batch_all", "batch_hard", "semi_hard"])
def test_combined_losses_support_double_backward(variant, metric):
    params = {"semantics": "tf", "reduction": "mean"} if variant == "semi_hard" else {}
    z = torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6), requires_grad=True)
    y = torch.arange(12) % 3
    torch.manual_seed(0)
    combined = CombinedLoss(embedding_dim=3, metric=metric, variant=variant, variant_params=params).double()
    with_id = TripletWithIDLoss(variant=variant, metric=metric, num_classes=3, embedding_dim=3,
                                variant_params=params).double()

    def total(module):
        return lambda e: sum(module(e, y, margin=0.5, return_stats=False).components.values())

    assert torch.autograd.gradgradcheck(total(combined), (z,))
    assert torch.autograd.gradgradcheck(total(with_id), (z,))


@pytest.mark.parametrize("variant", ["batch_all", "batch_hard", "semi_hard"])
def test_stats_of_huge_norm_float32_equal_float64(variant):
    z = torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) * 1e19
    y = _labels("pk", 16)
    settings = {"semantics": "tf", "reduction": "mean"} if variant == "semi_hard" else {}
    fn = {"batch_all": batch_all_triplet_loss, "batch_hard": batch_hard_triplet_loss,
          "semi_hard": semi_hard_triplet_loss}[variant]
    stats = [fn(e, y, margin=1e19, metric="euclidean", return_stats=True, **settings)[1] for e in (z.float(), z)]
    for name in ("active_fraction", "pos_ratio", "violation_rate", "num_items"):
        assert getattr(stats[0], name).item() == pytest.approx(getattr(stats[1], name).item())
    assert 0 < stats[1].violation_rate.item() < 1


@pytest.mark.parametrize("metric", METRICS)
def test_memory_written_before_the_backward_leaves_the_gradient(metric):
    """The references' values are kept by the loss: enqueuing the next batch before backward changes nothing."""
    g = torch.Generator().manual_seed(8)
    past, batch, later = (torch.randn(12, 4, dtype=torch.float64, generator=g) for _ in range(3))
    y = torch.arange(12) % 3
    grads = []
    for write_before_backward in (False, True):
        memory = CrossBatchMemory(24, 4, dtype=torch.float64)
        memory.enqueue(past, y)
        e = batch.clone().requires_grad_(True)
        loss = loss_against_memory(batch_all_triplet_loss_refs, memory, e, y, margin=0.5, metric=metric)
        if write_before_backward:
            memory.enqueue(later, y)
        (grad,) = torch.autograd.grad(loss, e)
        grads.append(grad)
    assert grads[0].abs().max() > 0
    assert torch.equal(grads[0], grads[1])
