"""One readable mask-form implementation of every variant, with switches for the classic faults.

`family_loss(inputs, spec)` computes the loss a `Spec` describes with (B, B) and
(B, B, B) masks (small batches only). With the default switches it equals the
reference loss of `losses/`; each switch reproduces one mistake found in real code
(a mask that includes the diagonal, the other semi-hard boundary, a detached hardest
positive, ...). The checker evaluates these "known wrong" specs and names the one
that reproduces what a user's function returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..distances import _safe_sqrt
from ..reductions import reduce_losses

BATCH_VARIANTS = ("batch_all", "batch_hard", "batch_hard_soft", "semi_hard_tf", "semi_hard_pml")
CHECKED_VARIANTS = ("naive", *BATCH_VARIANTS)


@dataclass(frozen=True)
class Spec:
    """What one loss computes. The defaults of the switches are the correct rules.

    variant: one of CHECKED_VARIANTS; margin, metric, reduction as the losses take them;
        metric may also be "cosine_similarity" (the similarity used as if it were a distance).
    eps: added under the square root everywhere (0: the safe root, exactly 0 at distance 0).
    normalize: L2-normalise the embeddings before the distance.
    positives: "same_label" (y_p == y_a, p != a) | "with_diagonal" (p == a allowed).
    negatives: "other_label" (y_n != y_a) | "other_index" (n != a, any label) |
        "not_positive" (the complement of the positive mask: the anchor itself included).
    lower: semi-hard d_an > d_ap ("strict") | d_an >= d_ap ("inclusive").
    upper: PML semi-hard d_an <= d_ap + margin ("inclusive") | d_an < d_ap + margin ("strict").
    detach: batch-hard "" | "positive" | "negative": that hardest distance carries no gradient.
    kink: the hinge's gradient where it is exactly 0: "zero" (relu, ours) | "one" (clamp_min,
        F.triplet_margin_loss's): both are valid subgradients, not a fault.
    """

    variant: str
    margin: float
    metric: str
    reduction: str
    eps: float = 0.0
    normalize: bool = False
    positives: str = "same_label"
    negatives: str = "other_label"
    lower: str = "strict"
    upper: str = "inclusive"
    detach: str = ""
    kink: str = "zero"

    def but(self, **changes) -> Spec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def distances(u: torch.Tensor, v: torch.Tensor, spec: Spec) -> torch.Tensor:
    """u (..., D), v (..., D) broadcastable float -> (...) distances under spec (difference form)."""
    if spec.normalize:
        u, v = F.normalize(u, dim=-1), F.normalize(v, dim=-1)
    if spec.metric in ("cosine", "cosine_similarity"):
        cos = (F.normalize(u, dim=-1) * F.normalize(v, dim=-1)).sum(dim=-1)
        if spec.metric == "cosine_similarity":
            return cos
        equal = (u.detach() == v.detach()).all(dim=-1)
        return torch.where(equal, 0.0, (1.0 - cos).clamp(0.0, 2.0))
    sq = (u - v).pow(2).sum(dim=-1)
    if spec.metric == "squared_euclidean":
        return sq
    if spec.eps > 0:
        return torch.sqrt(sq + spec.eps)
    return _safe_sqrt(sq)


def hinge(x: torch.Tensor, spec: Spec) -> torch.Tensor:
    """max(x, 0), with gradient 0 (kink "zero") or 1 (kink "one") where x == 0."""
    return torch.relu(x) if spec.kink == "zero" else x.clamp_min(0.0)


def family_loss(inputs: tuple[torch.Tensor, ...], spec: Spec) -> torch.Tensor:
    """inputs (embeddings (B, D), labels (B,)) or, for naive, (anchor, positive, negative) (N, D) -> scalar."""
    items, _ = family_items(inputs, spec)
    return reduce_losses(items, reduction=spec.reduction, anchor=inputs[0])


def family_items(inputs: tuple[torch.Tensor, ...], spec: Spec, *, roles: bool = False):
    """inputs as family_loss -> (items (N,), rows (N, 3) long: (a, p, n) of each item), reduction="none" order.

    roles=True: inputs are (x_ap, x_p, x_an, x_n, labels) (naive: (a_ap, p, a_an, n)), four copies
    of the same rows: d_ap is computed from x_ap (the anchors' side) and x_p, d_an from x_an and
    x_n, so each copy's gradient is the part of the gradient that reaches it in that role.
    """
    if spec.variant == "naive":
        a_p, p, a_n, n = inputs if roles else (inputs[0], inputs[1], inputs[0], inputs[2])
        items = hinge(distances(a_p, p, spec) - distances(a_n, n, spec) + spec.margin, spec)
        rows = torch.arange(a_p.shape[0], device=a_p.device)
        return items, torch.stack([rows, rows, rows], dim=1)
    x_p, p, x_n, n, labels = inputs if roles else (inputs[0], inputs[0], inputs[0], inputs[0], inputs[1])
    B = x_p.shape[0]
    d_p = distances(x_p[:, None, :], p[None, :, :], spec)  # (B, B) d(a, p)
    d_n = d_p if not roles else distances(x_n[:, None, :], n[None, :, :], spec)  # (B, B) d(a, n), same values
    same = labels[:, None] == labels[None, :]  # (B, B)
    eye = torch.eye(B, dtype=torch.bool, device=x_p.device)
    pos = same if spec.positives == "with_diagonal" else same & ~eye
    neg = {"other_label": ~same, "other_index": ~eye, "not_positive": ~pos}[spec.negatives]
    return select_items(d_p, d_n, pos, neg, spec)


def select_items(d_p: torch.Tensor, d_n: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, spec: Spec):
    """(B, C) distances from each anchor to C candidate rows (d_p, d_n: the same values, computed in the
    positive and the negative role), (B, C) positive and negative masks -> (items (N,), rows (N, 3) long:
    (a, p, n), p and n candidate columns), reduction="none" order."""
    if spec.variant in ("batch_hard", "batch_hard_soft"):
        return _batch_hard(d_p, d_n, pos, neg, spec)
    if spec.variant == "semi_hard_tf":
        return _semi_hard_tf(d_p, d_n, pos, neg, spec)
    d_ap, d_an = d_p[:, :, None], d_n[:, None, :]  # (B, C, 1), (B, 1, C)
    keep = pos[:, :, None] & neg[:, None, :]  # (B, C, C) triplets (a, p, n)
    if spec.variant == "semi_hard_pml":
        above = d_an >= d_ap if spec.lower == "inclusive" else d_an > d_ap
        below = d_an < d_ap + spec.margin if spec.upper == "strict" else d_an <= d_ap + spec.margin
        keep = keep & above & below
    return hinge(d_ap - d_an + spec.margin, spec)[keep], keep.nonzero()


def _batch_hard(d_p: torch.Tensor, d_n: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, spec: Spec):
    """(B, B) distances (d_p, d_n: the same values) and masks -> ((A,) per-anchor losses, (A, 3) rows);
    ties go to the first index."""
    d = d_p.detach()
    valid = pos.any(dim=1) & neg.any(dim=1)  # (B,)
    hardest_pos = torch.where(pos, d, -torch.inf).argmax(dim=1, keepdim=True)  # (B, 1)
    hardest_neg = torch.where(neg, d, torch.inf).argmin(dim=1, keepdim=True)  # (B, 1)
    d_ap = d_p.gather(1, hardest_pos)[:, 0][valid]  # (A,)
    d_an = d_n.gather(1, hardest_neg)[:, 0][valid]  # (A,)
    rows = torch.stack([torch.arange(len(d), device=d.device), hardest_pos[:, 0], hardest_neg[:, 0]], 1)[valid]
    if spec.detach == "positive":
        d_ap = d_ap.detach()
    if spec.detach == "negative":
        d_an = d_an.detach()
    if spec.variant == "batch_hard_soft":
        return F.softplus(d_ap - d_an), rows
    return hinge(d_ap - d_an + spec.margin, spec), rows


def _semi_hard_tf(d_p: torch.Tensor, d_n: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, spec: Spec):
    """(B, B) -> per positive pair (a, p), row-major: the nearest negative farther than p, else the farthest
    (losses, (P, 3) rows)."""
    dd = d_p.detach()
    d_an = dd[:, None, :]  # (B, 1, B): [a, ., n]
    d_ap = dd[:, :, None]  # (B, B, 1): [a, p, .]
    farther = neg[:, None, :] & (d_an >= d_ap if spec.lower == "inclusive" else d_an > d_ap)  # (B, B, B)
    nearest = torch.where(farther, d_an, torch.inf).argmin(dim=2)  # (B, B)
    farthest = torch.where(neg, dd, -torch.inf).argmax(dim=1, keepdim=True)  # (B, 1)
    chosen = torch.where(farther.any(dim=2), nearest, farthest)  # (B, B) negative of pair (a, p)
    items = pos & neg.any(dim=1, keepdim=True)  # (B, B) pairs whose anchor has a negative
    pairs = items.nonzero()  # (P, 2)
    rows = torch.cat([pairs, chosen[pairs[:, 0], pairs[:, 1]][:, None]], dim=1)
    return hinge(d_p - d_n.gather(1, chosen) + spec.margin, spec)[items], rows
