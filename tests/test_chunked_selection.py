"""The pieces of the chunked comparison loops, against obvious loop references.

class_members, negative_rows, anchor_chunks and nearest_in_later_buckets (both its packed
float32 keys and its generic path), and the losses with chunks of a few rows, so that
several chunks with different padding skips run on small batches.
"""

from __future__ import annotations

import pytest
import torch

import losses.batch_all as batch_all_module
import losses.semi_hard as semi_hard_module
from losses import batch_all_triplet_loss, semi_hard_triplet_loss
from losses.distances import anchor_chunks, chunk_buffers, class_members, negative_rows, sorted_positive_distances
from losses.semi_hard import nearest_in_later_buckets


def _uneven_labels(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    sizes = (1, 1, 2, 3, 5, 9, 16)
    labels = torch.cat([torch.full((n,), 7 * c - 4) for c, n in enumerate(sizes)])
    return labels[torch.randperm(labels.shape[0], generator=g)]


@pytest.mark.parametrize("seed", range(3))
def test_class_members_lists_each_class_then_self(seed):
    labels = _uneven_labels(seed)
    members = class_members(labels)
    B = labels.shape[0]
    assert members.shape == (B, int(torch.unique(labels, return_counts=True)[1].max()))
    for i in range(B):
        same = [j for j in range(B) if labels[j] == labels[i]]
        row = members[i].tolist()
        assert row[: len(same)] == same  # the class, in index order, self included
        assert row[len(same):] == [i] * (len(row) - len(same))  # padding: the sample itself


def test_negative_rows_is_the_masked_copy():
    labels = _uneven_labels(1)
    B = labels.shape[0]
    d = torch.rand(B, B, generator=torch.Generator().manual_seed(0))
    rows = torch.tensor([5, 0, B - 1, 17])
    members = class_members(labels)
    expected = torch.where(labels[rows, None] != labels[None, :], d[rows], torch.inf)
    assert torch.equal(negative_rows(d, rows, members[rows]), expected)
    out = torch.full((rows.shape[0], B), -1.0)
    assert torch.equal(negative_rows(d, rows, members[rows], out=out), expected)
    assert torch.equal(out, expected)  # written into the buffer


@pytest.mark.parametrize("step", [1, 3, 8, 100])
def test_anchor_chunks_cover_every_anchor_and_skip_only_padding(step):
    labels = _uneven_labels(2)
    B = labels.shape[0]
    d = torch.rand(B, B, generator=torch.Generator().manual_seed(3))
    sorted_pos, _ = sorted_positive_distances(d + d.T, labels)
    P = sorted_pos.shape[1]
    order, chunks = anchor_chunks(sorted_pos, step)
    assert sorted(order.tolist()) == list(range(B))
    assert [start for start, _, _ in chunks] == list(range(0, B, step))
    for start, stop, skip in chunks:
        assert stop - start <= step
        rows = sorted_pos[order[start:stop]]
        assert torch.isneginf(rows[:, :skip]).all()  # skipped positions are padding in every row
        assert skip == P or torch.isfinite(rows[:, skip]).any()  # and no more than that


def _nearest_loop(q, bucket, P):
    exists = torch.zeros(q.shape[0], P, dtype=torch.bool)
    first = torch.zeros(q.shape[0], P, dtype=torch.long)
    for r in range(q.shape[0]):
        for j in range(P):
            best = None
            for n in range(q.shape[1]):
                value = float(q[r, n])
                if int(bucket[r, n]) > j and value != float("inf") and (best is None or value < best[0]):
                    best = (value, n)  # strict <: the first of ties stays
            if best is not None:
                exists[r, j], first[r, j] = True, best[1]
    return exists, first


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["packed", "generic"])
@pytest.mark.parametrize("seed", range(4))
def test_nearest_in_later_buckets_matches_the_loop(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    R, B, P = 6, 40, 5
    q = torch.randint(0, 6, (R, B), generator=g).to(dtype)  # integer values: many ties
    q[torch.rand(R, B, generator=g) < 0.2] = torch.inf  # not negatives
    q[torch.rand(R, B, generator=g) < 0.1] = -0.0  # the same as +0.0 for the order
    q[0] = torch.inf  # a row without negatives
    s = torch.randint(0, 6, (R, P), generator=g).to(dtype).sort(dim=1).values  # sorted positive distances
    s[2, :2] = -torch.inf  # padding
    s[1] = 10.0  # a row without a negative beyond its positives
    bucket = (s[:, :, None] < q[:, None, :]).sum(dim=1)  # (R, B) as the losses make it: monotone in q
    exists, first = nearest_in_later_buckets(q, bucket, P)
    exists_ref, first_ref = _nearest_loop(q, bucket, P)
    assert torch.equal(exists, exists_ref)
    assert torch.equal(first[exists], first_ref[exists_ref])
    keys = torch.empty(R, B, dtype=torch.long)
    assert torch.equal(nearest_in_later_buckets(q, bucket, P, keys=keys)[1][exists], first_ref[exists_ref])


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks of 3 anchors in every comparison loop: several chunks with different padding skips."""
    for module in (batch_all_module, semi_hard_module):
        monkeypatch.setattr(module, "chunk_rows", lambda batch_size, device: 3)


LOSSES = {
    "batch_all": lambda e, y: batch_all_triplet_loss(e, y, margin=0.5, metric="euclidean"),
    "semi_hard_tf": lambda e, y: semi_hard_triplet_loss(e, y, margin=0.5, metric="euclidean", semantics="tf",
                                                        reduction="mean"),
    "semi_hard_pml": lambda e, y: semi_hard_triplet_loss(e, y, margin=0.5, metric="euclidean", semantics="pml",
                                                         reduction="mean"),
}


def _value_and_grad(fn, x, y):
    e = x.clone().requires_grad_(True)
    loss = fn(e, y)
    (grad,) = torch.autograd.grad(loss, e)
    return loss.detach(), grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_are_the_same_in_chunks_of_three(name, dtype, request):
    labels = _uneven_labels(0)
    x = torch.randn(labels.shape[0], 3, generator=torch.Generator().manual_seed(5)).to(dtype)
    x[4] = x[9]  # a duplicate: exact ties
    whole = _value_and_grad(LOSSES[name], x, labels)
    request.getfixturevalue("tiny_chunks")
    chunked = _value_and_grad(LOSSES[name], x, labels)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(chunked, whole, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows, cols", [(3, 5), (4, 8), (1, 1)])
def test_chunk_buffers_are_disjoint_views_of_the_right_kind(rows, cols, dtype):
    floats, longs = chunk_buffers(rows, cols, dtype=dtype, device=torch.device("cpu"), floats=3, longs=2)
    assert [(b.shape, b.dtype) for b in floats] == [((rows, cols), dtype)] * 3
    assert [(b.shape, b.dtype) for b in longs] == [((rows, cols), torch.int64)] * 2
    for i, buffer in enumerate(floats):
        buffer.fill_(i + 0.5)
    for i, buffer in enumerate(longs):
        buffer.fill_(-(i + 1))
    assert [b.unique().tolist() for b in floats] == [[0.5], [1.5], [2.5]]  # no buffer overwrote another
    assert [b.unique().tolist() for b in longs] == [[-1], [-2]]
