"""Faulty triplet losses OUTSIDE the checker's fault family (losses.testing.family), in user styles.

No switch of the family reproduces any of these: the checker has to explain them with its
generic tools (the smallest failing batch, our items and the gradient's rows and roles, the
behaviour probes). UNKNOWN lists each with the variant it claims and the words of the report
that point at its real bug (tests/test_conformance_unknown.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from tests.conformance_gallery import _batch_all_from, _batch_hard_from, user_distances, user_masks


def hardest_positive_as_min(embeddings, labels, margin=0.2):
    """batch-hard whose "hardest" positive is the nearest one (min instead of max)."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    valid = pos.any(1) & neg.any(1)
    d_ap = torch.where(pos, dist, torch.inf).min(1).values
    d_an = torch.where(neg, dist, torch.inf).min(1).values
    return torch.relu(d_ap - d_an + margin)[valid].mean() if valid.any() else 0 * dist.sum()


def hardest_negative_as_max(embeddings, labels, margin=0.2):
    """batch-hard whose "hardest" negative is the farthest one (max instead of min)."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    valid = pos.any(1) & neg.any(1)
    d_ap = torch.where(pos, dist, -torch.inf).max(1).values
    d_an = torch.where(neg, dist, -torch.inf).max(1).values
    return torch.relu(d_ap - d_an + margin)[valid].mean() if valid.any() else 0 * dist.sum()


def relu_after_the_mean(embeddings, labels, margin=0.2):
    """batch-all: the hinge applied once, to the mean of d_ap - d_an + margin over the valid triplets."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    valid = pos[:, :, None] & neg[:, None, :]
    raw = (dist[:, :, None] - dist[:, None, :] + margin)[valid]
    return torch.relu(raw.mean()) if raw.numel() else 0 * dist.sum()


def mask_with_swapped_dimensions(embeddings, labels, margin=0.2):
    """batch-all whose (B, B, B) mask is built as [a, n, p] while the hinge is [a, p, n]."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    hinge = torch.relu(dist[:, :, None] - dist[:, None, :] + margin)  # [a, p, n]
    valid = pos[:, None, :] & neg[:, :, None]  # [a, n, p]: the bug
    losses = hinge[valid]
    count = int((losses > 0).sum())
    return losses.sum() / max(count, 1)


def margin_subtracted(embeddings, labels, margin=0.2):
    """batch-all with relu(d_ap - d_an - margin)."""
    return _batch_all_from(user_distances(embeddings), *user_masks(labels), -margin)


def semi_hard_takes_the_hardest_negative(embeddings, labels, margin=0.2):
    """TF semi-hard that takes the nearest negative, semi-hard or not."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    losses = []
    for a, p in pos.nonzero().tolist():
        if neg[a].any():
            n = torch.where(neg[a], dist[a], torch.inf).argmin()
            losses.append(torch.relu(dist[a, p] - dist[a, n] + margin))
    return torch.stack(losses).mean() if losses else 0 * dist.sum()


def semi_hard_fallback_nearest(embeddings, labels, margin=0.2):
    """TF semi-hard whose fallback (no negative farther than p) is the nearest negative, not the farthest."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    d_an = dist[:, None, :].expand(-1, len(labels), -1)  # (B, B, B) [a, p, n]
    farther = neg[:, None, :] & (d_an > dist[:, :, None])
    semi = torch.where(farther, d_an, torch.inf).min(2).values  # (B, B)
    nearest = torch.where(neg, dist, torch.inf).min(1, keepdim=True).values.expand_as(dist)  # the bug
    chosen = torch.where(farther.any(2), semi, nearest)
    items = pos & neg.any(1, keepdim=True)
    return torch.relu(dist - chosen + margin)[items].mean() if items.any() else 0 * dist.sum()


def cosine_without_normalising(embeddings, labels, margin=0.2):
    """batch-all "cosine" distance 1 - x @ x.T on rows that are not normalised."""
    dist = 1.0 - embeddings @ embeddings.T
    return _batch_all_from(dist, *user_masks(labels), margin)


def labels_broadcast_wrong(embeddings, labels, margin=0.2):
    """batch-all whose label mask is y[None] == y[None] (every pair same-class)."""
    same = (labels[None] == labels[None]).expand(len(labels), len(labels))
    pos = same & ~torch.eye(len(labels), dtype=torch.bool)
    return _batch_all_from(user_distances(embeddings), pos, ~same, margin) + 0 * embeddings.sum()


def d_an_detached(embeddings, labels, margin=0.2):
    """batch-all with d_an taken from a detached distance matrix (value right, gradient wrong)."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    hinge = torch.relu(dist[:, :, None] - dist.detach()[:, None, :] + margin)
    losses = hinge[pos[:, :, None] & neg[:, None, :]]
    return losses.sum() / max(int((losses > 0).sum()), 1)


def negatives_detached(embeddings, labels, margin=0.2):
    """batch-hard whose negative side is measured to x.detach() (the anchors still get d_an's gradient)."""
    d_pos = user_distances(embeddings)
    sq = (embeddings[:, None, :] - embeddings.detach()[None, :, :]).pow(2).sum(-1)
    d_neg = torch.sqrt(sq + (sq == 0) * 1e-16) * (sq != 0)
    pos, neg = user_masks(labels)
    valid = pos.any(1) & neg.any(1)
    d_ap = torch.where(pos, d_pos, -torch.inf).max(1).values
    d_an = torch.where(neg, d_neg, torch.inf).min(1).values
    return torch.relu(d_ap - d_an + margin)[valid].sum() / max(int(valid.sum()), 1) + 0 * embeddings.sum()


def hard_coded_margin(embeddings, labels, margin=0.2):
    """batch-hard that takes `margin` but uses a literal 1.0."""
    return _batch_hard_from(user_distances(embeddings), *user_masks(labels), 1.0)


class TripletModule(torch.nn.Module):
    """An nn.Module batch-hard whose margin is fixed in __init__ (it never sees the checker's)."""

    def __init__(self, margin=0.5):
        super().__init__()
        self.margin = margin

    def forward(self, embeddings, labels):
        return _batch_hard_from(user_distances(embeddings), *user_masks(labels), self.margin)


module_with_its_own_margin = TripletModule(margin=0.5)


def divides_by_batch_size(embeddings, labels, margin=0.2):
    """batch-all summed over the triplets and divided by B."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    losses = torch.relu(dist[:, :, None] - dist[:, None, :] + margin)[pos[:, :, None] & neg[:, None, :]]
    return losses.sum() / len(labels)


def invalid_anchors_counted(embeddings, labels, margin=0.2):
    """batch-hard averaged over every anchor, those without a positive or a negative included."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    d_ap = torch.where(pos, dist, -torch.inf).max(1).values
    d_an = torch.where(neg, dist, torch.inf).min(1).values
    per = torch.relu(d_ap - d_an + margin)
    per = torch.where(torch.isfinite(per), per, 0.0)
    return per.mean() + 0 * dist.sum()


def loop_skips_last_anchor(embeddings, labels, margin=0.2):
    """batch-hard with a Python loop over range(B - 1): the last row is never an anchor."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    losses = []
    for a in range(len(labels) - 1):
        if pos[a].any() and neg[a].any():
            losses.append(torch.relu(dist[a][pos[a]].max() - dist[a][neg[a]].min() + margin))
    return torch.stack(losses).mean() if losses else 0 * dist.sum()


def label_zero_matches_all(embeddings, labels, margin=0.2):
    """batch-all whose same-class mask is y_a * y_b == y_a ** 2 (true for every b when y_a == 0)."""
    same = labels[:, None] * labels[None, :] == labels[:, None] ** 2
    pos = same & ~torch.eye(len(labels), dtype=torch.bool)
    return _batch_all_from(user_distances(embeddings), pos, ~same, margin) + 0 * embeddings.sum()


def naive_positive_negative_swapped(anchor, negative, positive, margin=0.2):
    """naive triplet loss whose signature reads (anchor, negative, positive)."""
    d_ap = (anchor - positive).norm(dim=1)
    d_an = (anchor - negative).norm(dim=1)
    return torch.relu(d_ap - d_an + margin).mean()


def naive_without_hinge(anchor, positive, negative, margin=0.2):
    """naive triplet loss without the relu: the mean of d_ap - d_an + margin."""
    d_ap = F.pairwise_distance(anchor, positive, eps=0.0)
    d_an = F.pairwise_distance(anchor, negative, eps=0.0)
    return (d_ap - d_an + margin).mean()


def batch_hard_without_hinge(embeddings, labels, margin=0.2):
    """batch-hard without the relu: negative per-anchor losses lower the mean."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    valid = pos.any(1) & neg.any(1)
    d_ap = torch.where(pos, dist, -torch.inf).max(1).values
    d_an = torch.where(neg, dist, torch.inf).min(1).values
    return (d_ap - d_an + margin)[valid].mean() if valid.any() else 0 * dist.sum()


def cdist_fill_diagonal(embeddings, labels, margin=0.2):
    """batch-all on torch.cdist with an in-place fill_diagonal_: backward fails."""
    dist = torch.cdist(embeddings, embeddings)
    dist.fill_diagonal_(0.0)
    return _batch_all_from(dist, *user_masks(labels), margin)


def semi_hard_pml_without_lower_bound(embeddings, labels, margin=0.2):
    """PML semi-hard keeping every d_an < d_ap + margin (the hard negatives d_an <= d_ap too)."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    d_ap, d_an = dist[:, :, None], dist[:, None, :]
    keep = pos[:, :, None] & neg[:, None, :] & (d_an <= d_ap + margin)
    losses = torch.relu(d_ap - d_an + margin)[keep]
    return losses.sum() / max(int((losses > 0).sum()), 1) + 0 * dist.sum()


@dataclass(frozen=True)
class Unknown:
    """A gallery entry: fn, the variant it claims, check_loss options, words that name its real bug."""

    fn: object
    as_: str
    points_at: tuple[str, ...]  # any of these in the report: it points at the real bug
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)


UNKNOWN = [
    Unknown(hardest_positive_as_min, "batch_hard", ("nearer) instead of row",)),
    Unknown(hardest_negative_as_max, "batch_hard", ("farther) instead of row",)),
    Unknown(relu_after_the_mean, "batch_all", ("the hinge applied once, after the reduction",), {"reduction": "mean"}),
    Unknown(mask_with_swapped_dimensions, "batch_all", ("roles of positive and negative exchanged",)),
    Unknown(margin_subtracted, "batch_all", ("margin's sign is flipped",)),
    Unknown(semi_hard_takes_the_hardest_negative, "semi_hard_tf", ("nearer) instead of row",)),
    Unknown(semi_hard_fallback_nearest, "semi_hard_tf", ("nearer) instead of row",)),
    Unknown(cosine_without_normalising, "batch_all", ("it is right on L2-normalised rows only",), {"metric": "cosine"}),
    Unknown(labels_broadcast_wrong, "batch_all", ("every row in one class",)),
    Unknown(d_an_detached, "batch_all", ("the gradient through d_an is missing",)),
    Unknown(negatives_detached, "batch_hard", ("the gradient reaching the negatives is 0",)),
    Unknown(hard_coded_margin, "batch_hard", ("a hard-coded margin 1",)),
    Unknown(module_with_its_own_margin, "batch_hard", ("a hard-coded margin 0.5",)),
    Unknown(divides_by_batch_size, "batch_all", ("divided by the batch size B",)),
    Unknown(invalid_anchors_counted, "batch_hard", ("divided by the batch size B",)),
    Unknown(loop_skips_last_anchor, "batch_hard", ("not invariant to a permutation",)),
    Unknown(label_zero_matches_all, "batch_all", ("not invariant to relabelling",)),
    Unknown(naive_positive_negative_swapped, "naive", ("positive and negative swapped",)),
    Unknown(naive_without_hinge, "naive", ("without the hinge per item",)),
    Unknown(batch_hard_without_hinge, "batch_hard", ("without the hinge per item",)),
    Unknown(cdist_fill_diagonal, "batch_all", ("backward",)),
    Unknown(semi_hard_pml_without_lower_bound, "semi_hard_pml", ("[hard: d_an",)),
]
