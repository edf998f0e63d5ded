"""Distance matrices (pairwise and paired) and the per-anchor sorted positive distances."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .validation import check_choice, check_embeddings, check_same_shape

METRICS = ("euclidean", "squared_euclidean", "cosine")


def pairwise_distances(x: torch.Tensor, *, metric: str) -> torch.Tensor:
    """x (B, D) float -> (B, B) distances; diagonal and duplicate rows exactly 0, finite gradients.

    "euclidean" is sqrt(|x_i - x_j|^2), "squared_euclidean" |x_i - x_j|^2, "cosine"
    1 - cos(x_i, x_j) (rows L2-normalised, clamped to [0, 2]). The squared distance uses
    the expansion |a|^2 + |b|^2 - 2ab (O(B^2) memory and a matrix product; the difference
    form needs a (B, B, D) tensor), clamped at 0, after subtracting the rounded batch mean
    (which leaves distances unchanged and shrinks the cancellation error for translated
    batches). Rows that are exactly equal get exactly 0 (the expansion would leave a
    rounding residue of about eps * |x|^2), and the square root is safe at 0: its
    gradient there is 0, as for torch.cdist, never NaN. Backward is one matrix product
    (a custom autograd Function); second derivatives with respect to x are not provided
    (a gradient that depends on a loss weight, as in GradNorm, is).
    """
    check_embeddings(x, name="x")
    check_choice(metric, name="metric", valid=METRICS)
    return _pairwise_distances(x, metric=metric)


def paired_distances(a: torch.Tensor, b: torch.Tensor, *, metric: str) -> torch.Tensor:
    """a (N, D) float, b (N, D) float -> (N,) distances d(a_i, b_i) (difference form, exact)."""
    check_embeddings(a, name="a", min_rows=0)
    check_embeddings(b, name="b", min_rows=0)
    check_same_shape(a=a, b=b)
    check_choice(metric, name="metric", valid=METRICS)
    return _paired_distances(a, b, metric=metric)


def _paired_distances(a: torch.Tensor, b: torch.Tensor, *, metric: str) -> torch.Tensor:
    """a (N, D), b (N, D) -> (N,), unchecked."""
    if metric == "cosine":
        cos = (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(dim=1)  # (N,)
        return (1.0 - cos).clamp(0.0, 2.0)
    sq = (a - b).pow(2).sum(dim=1)  # (N,)
    return _safe_sqrt(sq) if metric == "euclidean" else sq


def _pairwise_distances(x: torch.Tensor, *, metric: str) -> torch.Tensor:
    """x (B, D) -> (B, B), unchecked."""
    if metric == "cosine":
        x = F.normalize(x, dim=1)
        d = (1.0 - x @ x.T).clamp(0.0, 2.0)  # (B, B)
        return d.masked_fill(_equal_rows(x.detach()), 0.0)
    return _EuclideanDistances.apply(x, metric == "euclidean")


class _EuclideanDistances(torch.autograd.Function):
    """x (B, D) -> (B, B) euclidean (root=True) or squared euclidean distances.

    Forward: |a|^2 + |b|^2 - 2ab on the batch centred by its rounded mean, clamped at 0,
    exactly 0 for equal rows, in place on one (B, B) buffer. Backward: with W = dL/d(d^2)
    (0 where the distance is 0: the safe root), dL/dx = 2 ((rowsum W + colsum W) x - (W + W^T) x),
    one matrix product instead of a graph of (B, B) temporaries.
    """

    @staticmethod
    def forward(ctx, x, root):
        xc = x.detach() - torch.round(x.detach().mean(dim=0))  # (B, D), distances unchanged
        sq = (xc * xc).sum(dim=1)  # (B,)
        d = (sq[:, None] + sq[None, :]).sub_(xc @ xc.T, alpha=2.0).clamp_min_(0.0)  # (B, B)
        d.masked_fill_(_equal_rows(xc), 0.0)
        if root:
            d.sqrt_()
        ctx.save_for_backward(xc, d)
        ctx.root = root
        return d

    @staticmethod
    def backward(ctx, grad):
        xc, d = ctx.saved_tensors
        positive = d > 0
        # 0 where d == 0 (safe root); inv is a finite constant, so a double backward through grad stays finite
        inv = torch.where(positive, 0.5 / d, 0.0) if ctx.root else positive.to(d.dtype)
        w = grad * inv  # (B, B) dL/d(d^2)
        w_sym = w + w.T  # (B, B)
        return 2.0 * (w_sym.sum(dim=1, keepdim=True) * xc - w_sym @ xc), None


def _equal_rows(x: torch.Tensor) -> torch.Tensor:
    """x (B, D) -> (B, B) bool, True where rows i and j are exactly equal (diagonal included)."""
    _, group = torch.unique(x, dim=0, return_inverse=True)  # (B,)
    return group[:, None] == group[None, :]


def _safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    """sq (...) >= 0 -> sqrt(sq), with value and gradient exactly 0 where sq == 0."""
    zero = sq == 0
    return torch.where(zero, 0.0, torch.sqrt(torch.where(zero, 1.0, sq)))


def sorted_positive_distances(dist: torch.Tensor, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dist (B, B), positives (B, B) bool -> (values (B, P), index (B, P) int64), P = max(1, most positives).

    Row a holds the anchor's positive distances d(a, p) ascending, after -inf padding
    in front when a has fewer than P positives; index holds the matching p (any
    column for padding). Differentiable through `values`. In P x K batches P = K - 1,
    so binary searches in these rows cost log K, far less than sorting the negatives.
    """
    width = max(int(positives.sum(dim=1).max()), 1) if positives.numel() else 1
    padded = torch.where(positives, dist, -torch.inf)  # (B, B)
    values, index = torch.topk(padded, k=width, dim=1, largest=True, sorted=True)  # descending
    return values.flip(1), index.flip(1)


def batch_distances(
    embeddings: torch.Tensor, labels: torch.Tensor, *, metric: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """embeddings (B, D) float, labels (B,) int -> dist (B, B), positives (B, B) bool, negatives (B, B) bool.

    Validates both inputs and the metric; the shared first step of every batch variant.
    """
    from .masks import negative_mask, positive_mask
    from .validation import check_labels

    check_embeddings(embeddings)
    check_labels(labels, batch_size=embeddings.shape[0], device=embeddings.device)
    check_choice(metric, name="metric", valid=METRICS)
    return _pairwise_distances(embeddings, metric=metric), positive_mask(labels), negative_mask(labels)
