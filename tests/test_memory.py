"""Losses against a reference set and the cross-batch memory: loop references, the in-batch case, state."""

from __future__ import annotations

import random

import pytest
import torch

import loop_reference_memory as ref
from losses import (
    batch_all_triplet_loss,
    batch_all_triplet_loss_refs,
    batch_hard_triplet_loss,
    batch_hard_triplet_loss_refs,
    cross_distances,
    semi_hard_triplet_loss,
    semi_hard_triplet_loss_refs,
)
from losses.memory import CrossBatchMemory, loss_against_memory, xbm_total

MARGIN = 0.5
METRICS = ("euclidean", "squared_euclidean", "cosine")
# name -> (refs function, in-batch function, loop reference, keyword settings)
VARIANTS = {
    "batch_all": (batch_all_triplet_loss_refs, batch_all_triplet_loss, ref.batch_all, {}),
    "batch_hard": (batch_hard_triplet_loss_refs, batch_hard_triplet_loss,
                   lambda *a, **k: ref.batch_hard(*a, soft=False, **k), {"soft": False}),
    "batch_hard_soft": (batch_hard_triplet_loss_refs, batch_hard_triplet_loss,
                        lambda *a, **k: ref.batch_hard(*a, soft=True, **k), {"soft": True}),
    "semi_hard_tf": (semi_hard_triplet_loss_refs, semi_hard_triplet_loss, ref.semi_hard_tf, {"semantics": "tf"}),
    "semi_hard_pml": (semi_hard_triplet_loss_refs, semi_hard_triplet_loss, ref.semi_hard_pml,
                      {"semantics": "pml"}),
}
REDUCTIONS = ("mean", "mean_positive", "sum")


def _margin(name):
    return None if name == "batch_hard_soft" else MARGIN


def _steps(seed: int, *, steps: int, batch: int, dim: int = 3, classes: int = 4, ties: bool = False):
    """-> [(x (batch, dim) float64, y (batch,))]: gaussian rows, or +-1/+-2 axis rows (exact ties),
    with rows repeated inside a step and from the step before (duplicates in the memory)."""
    rng = random.Random(seed)
    out, previous = [], None
    for _ in range(steps):
        if ties:
            rows = [[0.0] * dim for _ in range(batch)]
            for row in rows:
                row[rng.randrange(dim)] = float(rng.choice([-2, -1, 1, 2]))
        else:
            rows = [[rng.gauss(0.0, 1.0) for _ in range(dim)] for _ in range(batch)]
        labels = [rng.randrange(classes) for _ in range(batch)]
        rows[1], labels[1] = list(rows[0]), labels[0]  # a duplicate positive
        rows[2] = list(rows[3])  # a duplicate, possibly of another class
        if previous is not None:
            rows[-2], labels[-2] = list(previous[0][-1]), previous[1][-1]  # the same sample again, a step later
        previous = (rows, labels)
        out.append((torch.tensor(rows, dtype=torch.float64), torch.tensor(labels)))
    return out


@pytest.mark.parametrize("ties", [False, True], ids=["gauss", "ties"])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_memory_steps_match_the_loop_reference(name, metric, ties):
    fn, _, loop, fixed = VARIANTS[name]
    memory, loop_memory = CrossBatchMemory(10, 3, dtype=torch.float64), ref.LoopMemory(10)
    for step, (x, y) in enumerate(_steps(3, steps=5, batch=6, ties=ties)):  # 30 rows through 10 slots: wraps
        own = loop_memory.enqueue(x.tolist(), y.tolist())
        refs, ref_labels = loop_memory.contents()
        slots = memory.enqueue(x, y)
        assert slots.tolist() == own
        references, reference_labels = memory.contents()
        assert references.tolist() == refs and reference_labels.tolist() == ref_labels
        for reduction in REDUCTIONS:
            ours = fn(x, y, references, reference_labels, anchor_index_in_refs=slots, margin=_margin(name),
                      metric=metric, reduction=reduction, **fixed)
            expected = loop(x.tolist(), y.tolist(), refs, ref_labels, own, margin=_margin(name) or 0.0,
                            metric=metric, reduction=reduction)
            assert float(ours) == pytest.approx(expected, rel=1e-10, abs=1e-12), (step, reduction)


@pytest.mark.parametrize("layout", ["pk", "random"])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_in_batch_loss_is_the_references_equal_batch_case(name, metric, layout):
    fn, in_batch, _, fixed = VARIANTS[name]
    torch.manual_seed(0)
    B = 24
    y = torch.arange(B) // 4 if layout == "pk" else torch.randint(0, 5, (B,))
    x = torch.randn(B, 5, dtype=torch.float64, requires_grad=True)
    reduction = "mean_positive" if name != "batch_hard" else "mean"
    loss, stats = in_batch(x, y, margin=_margin(name), metric=metric, reduction=reduction, return_stats=True, **fixed)
    (grad,) = torch.autograd.grad(loss, x)
    loss_r, stats_r = fn(x, y, x, y, anchor_index_in_refs=torch.arange(B), margin=_margin(name), metric=metric,
                         reduction=reduction, return_stats=True, **fixed)
    (grad_r,) = torch.autograd.grad(loss_r, x)  # through the anchors and the references
    torch.testing.assert_close(loss_r, loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad_r, grad, rtol=1e-8, atol=1e-10)
    for field in ("active_fraction", "pos_ratio", "violation_rate", "num_items"):
        torch.testing.assert_close(getattr(stats_r, field), getattr(stats, field))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_gradients_to_anchors_and_references(name, metric):
    fn, _, _, fixed = VARIANTS[name]
    torch.manual_seed(1)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    r = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    y, yr = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    own = torch.tensor([3, -1, -1, 4, -1, 8])
    yr[own[own >= 0]] = y[own >= 0]

    def loss(x, r):
        return fn(x, y, r, yr, anchor_index_in_refs=own, margin=_margin(name), metric=metric,
                  reduction="sum", **fixed)

    assert torch.autograd.gradcheck(loss, (x, r))
    assert float(loss(x, r).detach()) > 0


@pytest.mark.parametrize("reduction", ["mean", "mean_positive", "sum", "none"])
def test_batch_all_refs_sorted_equals_mask_method(reduction):
    torch.manual_seed(2)
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    r = torch.randn(30, 4, dtype=torch.float64)
    y, yr = torch.randint(0, 3, (7,)), torch.randint(0, 3, (30,))
    values = []
    for method in ("sorted", "mask"):
        out = batch_all_triplet_loss_refs(x, y, r, yr, anchor_index_in_refs=None, margin=1.0, metric="euclidean",
                                          reduction=reduction, method=method)
        values.append((out, torch.autograd.grad(out.sum(), x)[0]))
    torch.testing.assert_close(values[0][0], values[1][0])
    torch.testing.assert_close(values[0][1], values[1][1])


def test_memory_state_dict_resumes_exactly():
    steps = _steps(5, steps=6, batch=4)
    first = CrossBatchMemory(7, 3, dtype=torch.float64)
    for x, y in steps[:3]:
        first.enqueue(x, y)
    resumed = CrossBatchMemory(7, 3, dtype=torch.float64)
    resumed.load_state_dict(first.state_dict())
    for x, y in steps[3:]:
        a = loss_against_memory(batch_all_triplet_loss_refs, first, x, y, margin=MARGIN, metric="euclidean")
        b = loss_against_memory(batch_all_triplet_loss_refs, resumed, x, y, margin=MARGIN, metric="euclidean")
        assert torch.equal(a, b)
    assert all(torch.equal(u, v) for u, v in zip(first.state_dict().values(), resumed.state_dict().values()))
    assert int(first.filled) == 7 and int(first.pointer) == 24 % 7


def test_memory_before_it_is_full_uses_the_filled_part_only():
    memory = CrossBatchMemory(100, 2)
    x, y = torch.randn(8, 2), torch.arange(8) % 4
    slots = memory.enqueue(x, y)
    references, labels = memory.contents()
    assert slots.tolist() == list(range(8)) and torch.equal(references, x) and torch.equal(labels, y)


def test_xbm_total_is_batch_plus_weighted_memory():
    assert float(xbm_total(torch.tensor(1.5), torch.tensor(2.0), weight=0.25)) == 2.0
    with pytest.raises(ValueError, match="weight"):
        xbm_total(torch.tensor(1.0), torch.tensor(1.0), weight=-1.0)


def test_bad_memory_and_reference_inputs_raise_naming_them():
    memory = CrossBatchMemory(4, 3)
    with pytest.raises(ValueError, match="memory_size = 4"):
        memory.enqueue(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="dimension 3"):
        memory.enqueue(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="memory size"):
        CrossBatchMemory(0, 3)
    x, y = torch.randn(3, 2), torch.tensor([0, 0, 1])
    r, yr = torch.randn(5, 2), torch.tensor([0, 1, 0, 1, 0])
    call = dict(margin=0.2, metric="euclidean")
    with pytest.raises(ValueError, match=r"anchor_index_in_refs must lie in \[-1, 5\)"):
        batch_all_triplet_loss_refs(x, y, r, yr, anchor_index_in_refs=torch.tensor([0, 5, -1]), **call)
    with pytest.raises(ValueError, match="label differs"):
        batch_all_triplet_loss_refs(x, y, r, yr, anchor_index_in_refs=torch.tensor([1, -1, -1]), **call)
    with pytest.raises(ValueError, match="two anchors"):
        batch_hard_triplet_loss_refs(x, y, r, yr, anchor_index_in_refs=torch.tensor([0, 0, -1]), **call)
    with pytest.raises(ValueError, match=r"reference_labels of shape \(5,\)"):
        semi_hard_triplet_loss_refs(x, y, r, yr[:4], anchor_index_in_refs=None, semantics="tf",
                                    reduction="mean", **call)
    with pytest.raises(ValueError, match="one dimension D"):
        cross_distances(x, torch.randn(5, 3), metric="euclidean")


def test_an_anchor_whose_only_positive_is_itself_has_no_triplet():
    x, r = torch.randn(2, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    r[0] = x[0]
    y, yr = torch.tensor([0, 1]), torch.tensor([0, 1, 1])
    own = torch.tensor([0, -1])
    loss, stats = batch_hard_triplet_loss_refs(x, y, r, yr, anchor_index_in_refs=own, margin=0.2,
                                               metric="euclidean", reduction="sum", return_stats=True)
    assert int(stats.num_items) == 1  # anchor 1 only: anchor 0's one class entry is its own
    expected = ref.batch_hard(x.tolist(), y.tolist(), r.tolist(), yr.tolist(), own.tolist(), 0.2, "euclidean",
                              "sum", False)
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_int32_labels_against_an_int64_memory():
    torch.manual_seed(4)
    x, r = torch.randn(6, 3, dtype=torch.float64), torch.randn(12, 3, dtype=torch.float64)
    y, yr = torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(12) % 3
    call = dict(anchor_index_in_refs=None, margin=MARGIN, metric="euclidean", semantics="tf", reduction="mean")
    assert float(semi_hard_triplet_loss_refs(x, y.int(), r, yr, **call)) == \
        float(semi_hard_triplet_loss_refs(x, y, r, yr, **call))
