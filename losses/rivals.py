"""The triplet family's best-known rivals: Multi-Similarity, Circle, Contrastive and NT-Xent (InfoNCE) losses.

Each is a pure function of a labelled batch with its paper's defaults as named keyword
arguments (the defaults of pytorch-metric-learning 2.9, which they match exactly in value
and gradient: see the PML call beside each function). Pairs are every ordered (i, j),
i != j: positive when y_i == y_j, negative otherwise. No miner is applied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distances import METRICS, batch_distances
from .reductions import REDUCTIONS, reduce_losses
from .validation import check_choice, check_embeddings, check_flag, check_margin
from .validation import check_positive


def _cosine_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """embeddings (B, D), labels (B,) -> similarity (B, B) = cos(x_i, x_j), positives, negatives (B, B) bool."""
    dist, pos, neg = batch_distances(embeddings, labels, metric="cosine")  # dist = 1 - cos
    return 1.0 - dist, pos, neg


def multi_similarity_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """embeddings (B, D) float, labels (B,) int -> scalar, or (B,) for reduction="none".

    Wang et al. 2019 on cosine similarities s_ij; per anchor i (every anchor is an item):
    (1 / alpha) log(1 + sum_{p} exp(-alpha (s_ip - base))) + (1 / beta) log(1 + sum_{n} exp(beta (s_in - base))),
    a missing positive or negative set contributing 0. "mean" averages over the B anchors
    (PML's MeanReducer). Defaults alpha 2, beta 50, base 0.5. The paper's pair mining
    (PML's MultiSimilarityMiner, epsilon 0.1) is not applied.
    PML: MultiSimilarityLoss(alpha, beta, base) (CosineSimilarity, MeanReducer).
    """
    alpha = check_positive(alpha, name="alpha")
    beta = check_positive(beta, name="beta")
    base = check_margin(base, name="base")
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    sim, pos, neg = _cosine_batch(embeddings, labels)  # (B, B) x 3
    pos_term = _log1p_sum_exp(alpha * (base - sim), pos) / alpha  # (B,)
    neg_term = _log1p_sum_exp(beta * (sim - base), neg) / beta  # (B,)
    return reduce_losses(pos_term + neg_term, reduction=reduction, anchor=embeddings)


def _log1p_sum_exp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (B, B), mask (B, B) bool -> (B,) log(1 + sum_{j in mask_i} exp(x_ij)), stable; 0 for an empty row."""
    masked = x.masked_fill(~mask, -torch.inf)  # (B, B)
    one = torch.zeros_like(x[:, :1])  # (B, 1): the "1 +" as exp(0)
    return torch.logsumexp(torch.cat([masked, one], dim=1), dim=1)


def circle_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    m: float = 0.4,
    gamma: float = 80.0,
    reduction: str = "mean_positive",
) -> torch.Tensor:
    """embeddings (B, D) float, labels (B,) int -> scalar, or (A,) for reduction="none".

    Sun et al. 2020, pair form, on cosine similarities s. Items are the A anchors with a
    positive and a negative (in index order); per anchor
    softplus(logsumexp_p(-gamma a_p (s_p - (1 - m))) + logsumexp_n(gamma a_n (s_n - m))),
    with a_p = relu(1 + m - s_p) and a_n = relu(s_n + m) detached (as in the paper and PML).
    Defaults m 0.4, gamma 80 (the paper's fine-grained retrieval setting) and "mean_positive"
    (PML's AvgNonZeroReducer).
    PML: CircleLoss(m, gamma) (CosineSimilarity, AvgNonZeroReducer).
    """
    m = check_margin(m, name="m")
    gamma = check_positive(gamma, name="gamma")
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    sim, pos, neg = _cosine_batch(embeddings, labels)  # (B, B) x 3
    valid = pos.any(dim=1) & neg.any(dim=1)  # (B,)
    sim, pos, neg = sim[valid], pos[valid], neg[valid]  # (A, B): every row has a positive and a negative
    weight_p = torch.relu(1.0 + m - sim.detach())
    weight_n = torch.relu(sim.detach() + m)
    logit_p = (-gamma * weight_p * (sim - (1.0 - m))).masked_fill(~pos, -torch.inf)  # (A, B)
    logit_n = (gamma * weight_n * (sim - m)).masked_fill(~neg, -torch.inf)  # (A, B)
    per_anchor = F.softplus(torch.logsumexp(logit_p, dim=1) + torch.logsumexp(logit_n, dim=1))  # (A,)
    return reduce_losses(per_anchor, reduction=reduction, anchor=embeddings)


def contrastive_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    metric: str = "euclidean",
    normalize_embeddings: bool = True,
    reduction: str = "mean_positive",
) -> torch.Tensor:
    """embeddings (B, D) float, labels (B,) int -> scalar.

    Hadsell, Chopra, LeCun 2006, hinge form: relu(d_ij - pos_margin) over positive pairs
    plus relu(neg_margin - d_ij) over negative pairs, each set reduced on its own and the
    two results added (an empty set gives an attached 0). Defaults pos_margin 0,
    neg_margin 1, euclidean distance on L2-normalised embeddings, "mean_positive" per set
    (PML's defaults: LpDistance(normalize_embeddings=True), AvgNonZeroReducer); reduction
    is "mean_positive", "mean" or "sum".
    PML: ContrastiveLoss(pos_margin, neg_margin, distance=LpDistance(normalize_embeddings=..., power=1 or 2)).
    """
    pos_margin = check_margin(pos_margin, name="pos_margin")
    neg_margin = check_margin(neg_margin, name="neg_margin")
    check_choice(metric, name="metric", valid=METRICS)
    check_flag(normalize_embeddings, name="normalize_embeddings")
    check_choice(reduction, name="reduction", valid=tuple(r for r in REDUCTIONS if r != "none"))
    check_embeddings(embeddings)
    x = F.normalize(embeddings, dim=1) if normalize_embeddings else embeddings
    dist, pos, neg = batch_distances(x, labels, metric=metric)  # (B, B) x 3
    pos_loss = reduce_losses(torch.relu(dist[pos] - pos_margin), reduction=reduction, anchor=embeddings)
    neg_loss = reduce_losses(torch.relu(neg_margin - dist[neg]), reduction=reduction, anchor=embeddings)
    return pos_loss + neg_loss


def ntxent_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 0.07,
    reduction: str = "mean",
) -> torch.Tensor:
    """embeddings (B, D) float, labels (B,) int -> scalar, or (P,) for reduction="none".

    NT-Xent / InfoNCE (Oord et al. 2018, SimCLR's Chen et al. 2020) with labels, on cosine
    similarities s. Items are the P positive pairs (a, p), a != p, in row-major order; each
    -log(exp(s_ap / t) / (exp(s_ap / t) + sum_{n: y_n != y_a} exp(s_an / t))) =
    logaddexp(logsumexp_n(s_an / t), s_ap / t) - s_ap / t, 0 when the anchor has no negative
    (not F.softplus, which returns its input unchanged above 20: an error of e^-20 per pair).
    "mean" averages over the positive pairs (PML's MeanReducer, its default).
    Default temperature 0.07 (PML's; SimCLR uses 0.1 to 0.5).
    PML: NTXentLoss(temperature) (CosineSimilarity, MeanReducer).
    """
    temperature = check_positive(temperature, name="temperature")
    check_choice(reduction, name="reduction", valid=REDUCTIONS)
    sim, pos, neg = _cosine_batch(embeddings, labels)  # (B, B) x 3
    logits = sim / temperature  # (B, B)
    negatives = torch.logsumexp(logits.masked_fill(~neg, -torch.inf), dim=1)  # (B,) -inf without negatives
    anchor, positive = pos.nonzero(as_tuple=True)  # (P,) row-major
    positive_logits = logits[anchor, positive]  # (P,)
    per_pair = torch.logaddexp(negatives[anchor], positive_logits) - positive_logits  # (P,)
    return reduce_losses(per_pair, reduction=reduction, anchor=embeddings)
