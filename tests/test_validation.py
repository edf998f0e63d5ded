"""Bad input raises ValueError naming the argument and what was received."""

from __future__ import annotations

import math

import pytest
import torch

from losses import (
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    get_variant,
    naive_triplet_loss,
    pairwise_distances,
    semi_hard_triplet_loss,
    triplet_mask,
    VARIANTS,
)

X = torch.randn(4, 3)
Y = torch.tensor([0, 0, 1, 1])
BATCH_CALLS = {
    "batch_all": lambda x, y, **kw: batch_all_triplet_loss(x, y, **{"margin": 0.2, "metric": "euclidean", **kw}),
    "batch_hard": lambda x, y, **kw: batch_hard_triplet_loss(x, y, **{"margin": 0.2, "metric": "euclidean", **kw}),
    "semi_hard": lambda x, y, **kw: semi_hard_triplet_loss(
        x, y, **{"margin": 0.2, "metric": "euclidean", "semantics": "tf", "reduction": "mean", **kw}
    ),
}
BAD = [
    ("shape", lambda: (torch.randn(4, 3, 2), Y), {}, r"expected embeddings of shape \(B, D\), got \(4, 3, 2\)"),
    ("1-d", lambda: (torch.randn(4), Y), {}, r"embeddings of shape \(B, D\), got \(4,\)"),
    ("empty", lambda: (torch.randn(0, 3), Y[:0]), {}, r"at least 1 row\(s\) and 1 column, got \(0, 3\)"),
    ("no-columns", lambda: (torch.randn(4, 0), Y), {}, r"at least 1 row\(s\) and 1 column, got \(4, 0\)"),
    ("int-embeddings", lambda: (torch.ones(4, 3, dtype=torch.long), Y), {}, "floating dtype, got torch.int64"),
    ("nan", lambda: (X.clone().index_fill_(0, torch.tensor([1]), math.nan), Y), {}, "holds 3 non-finite"),
    ("inf", lambda: (X.clone().index_fill_(1, torch.tensor([0]), math.inf), Y), {}, "holds 4 non-finite"),
    ("labels-2d", lambda: (X, Y[None]), {}, r"labels of shape \(B,\), got \(1, 4\)"),
    ("labels-float", lambda: (X, Y.float()), {}, "integer dtype, got torch.float32"),
    ("labels-length", lambda: (X, Y[:3]), {}, "labels of length 4 .*got 3"),
    ("labels-list", lambda: (X, [0, 0, 1, 1]), {}, "labels to be a torch.Tensor, got list"),
    ("meta", lambda: (X.to("meta"), Y), {}, r"embeddings with values, got a tensor on the meta device \(shape \(4, 3\)"),
    ("labels-meta", lambda: (X, Y.to("meta")), {}, "labels with values, got a tensor on the meta device"),
    ("margin-nan", lambda: (X, Y), {"margin": math.nan}, "margin to be finite, got nan"),
    ("margin-str", lambda: (X, Y), {"margin": "0.2"}, "margin to be a finite real number, got '0.2'"),
    ("margin-negative", lambda: (X, Y), {"margin": -1}, "margin to be >= 0 .*got -1.0"),
    ("margin-inf", lambda: (X, Y), {"margin": math.inf}, "margin to be finite, got inf"),
    ("margin-beyond-float32", lambda: (X, Y), {"margin": 1e39}, "margin to be finite in float32 .*got 1e"),
    ("metric", lambda: (X, Y), {"metric": "l2"}, "unknown metric 'l2'; valid: 'euclidean', 'squared_euclidean', 'cosine'"),
    ("reduction", lambda: (X, Y), {"reduction": "avg"}, "unknown reduction 'avg'; valid: 'mean', 'mean_positive'"),
    ("stats-flag", lambda: (X, Y), {"return_stats": 1}, "return_stats to be a bool, got 1"),
]


@pytest.mark.parametrize("variant", list(BATCH_CALLS))
@pytest.mark.parametrize("inputs, kwargs, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_batch_variants_reject(variant, inputs, kwargs, message):
    x, y = inputs()
    with pytest.raises(ValueError, match=message):
        BATCH_CALLS[variant](x, y, **kwargs)


def test_variant_specific_choices():
    with pytest.raises(ValueError, match="unknown method 'fast'; valid: 'sorted', 'mask'"):
        batch_all_triplet_loss(X, Y, margin=0.2, metric="cosine", method="fast")
    with pytest.raises(ValueError, match="unknown semantics 'keras'; valid: 'tf', 'pml'"):
        semi_hard_triplet_loss(X, Y, margin=0.2, metric="cosine", semantics="keras", reduction="mean")
    with pytest.raises(ValueError, match="soft to be a bool"):
        batch_hard_triplet_loss(X, Y, margin=None, metric="cosine", soft="yes")
    with pytest.raises(TypeError):  # margin and metric are required keyword arguments
        batch_all_triplet_loss(X, Y, margin=0.2)


def test_naive_rejects_mismatched_triplets():
    a = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"anchor \(4, 3\), positive \(4, 3\), negative \(5, 3\)"):
        naive_triplet_loss(a, a, torch.randn(5, 3), margin=0.1, metric="euclidean")
    with pytest.raises(ValueError, match="negative holds 1 non-finite"):
        naive_triplet_loss(a, a, a.clone().index_put_((torch.tensor(2), torch.tensor(1)), torch.tensor(math.nan)),
                           margin=0.1, metric="cosine")
    with pytest.raises(ValueError, match=r"expected positive of shape \(B, D\)"):
        naive_triplet_loss(a, a[0], a, margin=0.1, metric="euclidean")


def test_distances_and_masks_reject():
    with pytest.raises(ValueError, match=r"expected x of shape \(B, D\), got \(2, 2, 2\)"):
        pairwise_distances(torch.randn(2, 2, 2), metric="euclidean")
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        pairwise_distances(X, metric="manhattan")
    with pytest.raises(ValueError, match="integer dtype, got torch.bool"):
        triplet_mask(torch.tensor([True, False]))


def test_registry():
    assert set(VARIANTS) == {"naive", "batch_all", "batch_hard", "semi_hard"}
    assert get_variant("batch_hard") is batch_hard_triplet_loss
    with pytest.raises(ValueError, match="unknown variant 'hard'; valid: 'naive', 'batch_all', 'batch_hard', 'semi_hard'"):
        get_variant("hard")


@pytest.mark.parametrize("margin, message", [(-1, ">= 0"), (-1e-9, ">= 0"), (1e39, "float32"),
                                             (math.nan, "finite")],
                         ids=["negative", "tiny-negative", "beyond-float32", "nan"])
def test_every_triplet_loss_rejects_what_the_grid_rejects(margin, message):
    from losses import CombinedLoss

    a = torch.randn(4, 3)
    with pytest.raises(ValueError, match=f"margin.*{message}"):
        naive_triplet_loss(a, a, a, margin=margin, metric="euclidean")
    combined = CombinedLoss(embedding_dim=3, metric="euclidean")
    with pytest.raises(ValueError, match=f"margin.*{message}"):
        combined(X, Y, margin=margin)
    with pytest.raises(ValueError, match=f"margin.*{message}"):
        combined.forward_triplets(a, a, a, margin=margin)


def test_margin_zero_and_large_finite_margins_are_accepted():
    for margin in (0, 0.0, 1e30):
        loss = batch_all_triplet_loss(X, Y, margin=margin, metric="euclidean")
        assert torch.isfinite(loss)
