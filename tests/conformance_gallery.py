"""Deliberately wrong triplet-loss implementations, written the way tutorials and forum answers write them.

Each function carries one classic fault (named in its docstring); the checker must flag
each with the right diagnosis (tests/test_conformance_gallery.py). `user_distances` and
`user_masks` are the correct user-side helpers the faulty functions share, so that each
function differs from a correct one by its fault only. CORRECT holds user-style functions
without a fault, which must pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def user_distances(x, *, squared=False, safe=True):
    """x (B, D) -> (B, B) euclidean distances by the |a|^2 + |b|^2 - 2ab expansion (omoindrot's recipe)."""
    dot = x @ x.T
    sq = (dot.diagonal()[:, None] - 2.0 * dot + dot.diagonal()[None, :]).clamp_min(0.0)
    if squared:
        return sq
    if not safe:
        return torch.sqrt(sq)  # the fault of no_epsilon_in_sqrt
    zero = (sq == 0).to(x.dtype)
    return torch.sqrt(sq + zero * 1e-16) * (1.0 - zero)


def user_masks(labels):
    """labels (B,) -> positives (B, B) (same label, not self), negatives (B, B) (other label)."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    return same & ~eye, ~same


def _batch_all_from(dist, pos, neg, margin, *, mean_over_positive=True):
    hinge = torch.relu(dist[:, :, None] - dist[:, None, :] + margin)
    valid = pos[:, :, None] & neg[:, None, :]
    losses = hinge[valid]
    count = (losses > 0).sum() if mean_over_positive else losses.numel()
    return losses.sum() / max(int(count), 1)


def _batch_hard_from(dist, pos, neg, margin, *, detach_positive=False):
    valid = pos.any(1) & neg.any(1)
    d_ap = torch.where(pos, dist, -torch.inf).max(1).values
    d_an = torch.where(neg, dist, torch.inf).min(1).values
    if detach_positive:
        d_ap = d_ap.detach()
    return torch.relu(d_ap - d_an + margin)[valid].sum() / max(int(valid.sum()), 1) + 0.0 * dist.sum()


# ---- correct user implementations -----------------------------------------------------------

def correct_batch_all(embeddings, labels, margin=0.2):
    return _batch_all_from(user_distances(embeddings), *user_masks(labels), margin)


def correct_batch_hard(embeddings, labels, margin=0.2):
    return _batch_hard_from(user_distances(embeddings), *user_masks(labels), margin)


def correct_combined(triplet, logits_pos, logits_neg, *, w_triplet, w_pos, w_neg):
    ce_pos = F.cross_entropy(logits_pos, torch.ones(len(logits_pos), dtype=torch.long))
    ce_neg = F.cross_entropy(logits_neg, torch.zeros(len(logits_neg), dtype=torch.long))
    return w_triplet * triplet + w_pos * ce_pos + w_neg * ce_neg


# ---- one fault each ---------------------------------------------------------------------------

def no_epsilon_in_sqrt(embeddings, labels, margin=0.2):
    """sqrt of the squared distances with no safe gradient at 0 (the diagonal, duplicates)."""
    return _batch_all_from(user_distances(embeddings, safe=False), *user_masks(labels), margin)


def diagonal_in_positive_mask(embeddings, labels, margin=0.2):
    """positives = same label, the anchor itself included."""
    _, neg = user_masks(labels)
    return _batch_all_from(user_distances(embeddings), labels[:, None] == labels[None, :], neg, margin)


def same_class_in_negative_mask(embeddings, labels, margin=0.2):
    """negatives = every other point, whatever its label."""
    pos, _ = user_masks(labels)
    neg = ~torch.eye(len(labels), dtype=torch.bool)
    return _batch_hard_from(user_distances(embeddings), pos, neg, margin)


def mean_over_all_triplets(embeddings, labels, margin=0.2):
    """batch-all averaged over every valid triplet where the mean over active ones is asked."""
    return _batch_all_from(user_distances(embeddings), *user_masks(labels), margin, mean_over_positive=False)


def semi_hard_upper_boundary_strict(embeddings, labels, margin=0.2):
    """PML semi-hard, MeanReducer, with d_an < d_ap + margin (PML keeps d_an - d_ap == margin)."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    d_ap, d_an = dist[:, :, None], dist[:, None, :]
    keep = pos[:, :, None] & neg[:, None, :] & (d_an > d_ap) & (d_an < d_ap + margin)
    losses = torch.relu(d_ap - d_an + margin)[keep]
    return losses.sum() / max(losses.numel(), 1) + 0.0 * dist.sum()


def semi_hard_tf_lower_boundary_inclusive(embeddings, labels, margin=0.2):
    """TF semi-hard taking the nearest negative with d_an >= d_ap (TF-Addons: d_an > d_ap)."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    losses = []
    for a, p in pos.nonzero().tolist():
        if not neg[a].any():
            continue
        farther = neg[a] & (dist[a] >= dist[a, p])
        n = torch.where(farther, dist[a], torch.inf).argmin() if farther.any() else torch.where(neg[a], dist[a], -torch.inf).argmax()
        losses.append(torch.relu(dist[a, p] - dist[a, n] + margin))
    return torch.stack(losses).mean() if losses else 0.0 * dist.sum()


def squared_instead_of_euclidean(embeddings, labels, margin=0.2):
    """batch-hard on squared distances where euclidean is asked."""
    return _batch_hard_from(user_distances(embeddings, squared=True), *user_masks(labels), margin)


def hardest_positive_detached(embeddings, labels, margin=0.2):
    """batch-hard whose hardest positive distance is detached (no gradient pulls positives in)."""
    return _batch_hard_from(user_distances(embeddings), *user_masks(labels), margin, detach_positive=True)


def cosine_similarity_as_distance(embeddings, labels, margin=0.2):
    """batch-all 'cosine' with the similarity matrix used as if it were a distance."""
    x = F.normalize(embeddings, dim=1)
    return _batch_all_from(x @ x.T, *user_masks(labels), margin)


def nan_on_empty_batch(embeddings, labels, margin=0.2):
    """batch-all mean over active triplets with no guard: 0 / 0 when nothing is active or valid."""
    dist = user_distances(embeddings)
    pos, neg = user_masks(labels)
    losses = torch.relu(dist[:, :, None] - dist[:, None, :] + margin)[pos[:, :, None] & neg[:, None, :]]
    return losses.sum() / (losses > 0).sum()


def pml_default_distance(embeddings, labels, margin=0.2):
    """PML TripletMarginLoss with its default distance (L2-normalised embeddings) for a euclidean loss."""
    from pytorch_metric_learning import losses, reducers

    return losses.TripletMarginLoss(margin=margin, reducer=reducers.AvgNonZeroReducer())(embeddings, labels)


def softmax_before_cross_entropy(triplet, logits_pos, logits_neg, *, w_triplet, w_pos, w_neg):
    """nn.Softmax() in the head, then F.cross_entropy (which applies log-softmax again)."""
    return correct_combined(triplet, logits_pos.softmax(1), logits_neg.softmax(1), w_triplet=w_triplet,
                            w_pos=w_pos, w_neg=w_neg)


def hard_coded_loss_weight(triplet, logits_pos, logits_neg, *, w_triplet, w_pos, w_neg):
    """w_pos accepted but a literal 1.0 used in its place."""
    return correct_combined(triplet, logits_pos, logits_neg, w_triplet=w_triplet, w_pos=1.0, w_neg=w_neg)


def hard_coded_other_weight(triplet, logits_pos, logits_neg, *, w_triplet, w_pos, w_neg):
    """w_neg accepted but a literal 0.5 used in its place."""
    return correct_combined(triplet, logits_pos, logits_neg, w_triplet=w_triplet, w_pos=w_pos, w_neg=0.5)
