"""Triplet loss combined with cross-entropy heads: a pair classifier (CombinedLoss) or a class classifier (TripletWithIDLoss).

Both are ``nn.Module``s because they hold a learnable head (add their parameters to the
optimizer). Each returns its unweighted components by name and weights nothing: a
``losses.weighting`` method combines them (fixed weights: ``make_weighting("fixed", ...)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .distances import METRICS, batch_distances
from .masks import hardest_pairs
from .naive import naive_triplet_loss
from .reductions import REDUCTIONS, reduce_losses
from .registry import VARIANTS
from .stats import TripletStats
from .validation import check_choice, check_embeddings, check_flag, check_labels
from .validation import check_margin, check_weight

CE_INPUTS = ("logits", "probabilities")
BATCH_VARIANTS = tuple(name for name in VARIANTS if name != "naive")
PAIR_RULES = ("hardest", "all")
SCALAR_REDUCTIONS = tuple(r for r in REDUCTIONS if r != "none")


@dataclass(frozen=True)
class CombinedOutput:
    """components: "triplet", "ce_pos", "ce_neg" -> unweighted 0-dim losses (attached);
    pair_accuracy: detached 0-dim share of pairs classified right (NaN without pairs);
    stats: the batch variant's TripletStats, None for explicit triplets."""

    components: dict[str, torch.Tensor]
    pair_accuracy: torch.Tensor
    stats: TripletStats | None


@dataclass(frozen=True)
class TripletWithIDOutput:
    """components: "triplet", "ce_id" -> unweighted 0-dim losses (attached); id_accuracy:
    detached 0-dim share of the batch classified right (NaN when empty); stats: the batch
    variant's TripletStats."""

    components: dict[str, torch.Tensor]
    id_accuracy: torch.Tensor
    stats: TripletStats | None


CE_KINDS = ("ce", "focal")


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ce_input: str,
    anchor: torch.Tensor,
    ce: str = "ce",
    focal_gamma: float = 2.0,
    focal_alpha: float | None = None,
) -> torch.Tensor:
    """logits (N, C) float, target (N,) int -> scalar mean CE; N = 0 gives an attached 0.

    ce_input="logits" is the correct CE. ce_input="probabilities" feeds softmax(logits) to the
    CE as if they were logits (the common nn.Softmax + nn.CrossEntropyLoss bug, which squashes
    the gradient): an explicit ablation switch only.
    ce="focal" (Lin et al. 2017) weights each item's -log p_t by (1 - p_t)^focal_gamma and,
    when focal_alpha is a number in (0, 1), by alpha_t = focal_alpha for target 1 and
    1 - focal_alpha otherwise (RetinaNet's binary balance); gamma 0 and alpha None is the CE.
    focal_gamma and focal_alpha are unused when ce="ce".
    """
    check_choice(ce, name="ce", valid=CE_KINDS)
    scores = logits if ce_input == "logits" else torch.softmax(logits, dim=1)
    if ce == "ce":
        per_item = F.cross_entropy(scores, target, reduction="none")  # (N,)
    else:
        log_p = F.log_softmax(scores, dim=1).gather(1, target[:, None])[:, 0]  # (N,) log p_t
        # 1 - p_t, kept above 0: at p_t == 1 the derivative of x^gamma (gamma < 1) is infinite (NaN gradient)
        miss = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)  # (N,)
        per_item = -miss.pow(focal_gamma) * log_p  # (N,)
        if focal_alpha is not None:
            per_item = per_item * torch.where(target == 1, focal_alpha, 1.0 - focal_alpha)
    return reduce_losses(per_item, reduction="mean", anchor=anchor)


def check_focal(ce: str, focal_gamma: float, focal_alpha: float | None) -> dict:
    """-> the cross_entropy keywords {ce, focal_gamma, focal_alpha}, validated (names in errors)."""
    check_choice(ce, name="ce", valid=CE_KINDS)
    gamma = check_weight(focal_gamma, name="focal_gamma")
    if focal_alpha is not None:
        alpha = check_margin(focal_alpha, name="focal_alpha")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"expected focal_alpha in (0, 1) or None, got {focal_alpha!r}")
        focal_alpha = alpha
    return {"ce": ce, "focal_gamma": gamma, "focal_alpha": focal_alpha}


def pair_components(
    triplet: torch.Tensor, logits_pos: torch.Tensor, logits_neg: torch.Tensor, *, ce_input: str, **focal
) -> dict[str, torch.Tensor]:
    """triplet () float, logits_pos (N, 2), logits_neg (M, 2) float -> {"triplet", "ce_pos", "ce_neg"}.

    ce_pos = CE(logits_pos, 1), ce_neg = CE(logits_neg, 0), each the mean over its pairs;
    `focal` are cross_entropy's ce, focal_gamma, focal_alpha.
    """
    ones = torch.ones(logits_pos.shape[0], dtype=torch.long, device=logits_pos.device)
    zeros = torch.zeros(logits_neg.shape[0], dtype=torch.long, device=logits_neg.device)
    return {
        "triplet": triplet,
        "ce_pos": cross_entropy(logits_pos, ones, ce_input=ce_input, anchor=logits_pos, **focal),
        "ce_neg": cross_entropy(logits_neg, zeros, ce_input=ce_input, anchor=logits_neg, **focal),
    }


def pair_total(
    triplet: torch.Tensor,
    logits_pos: torch.Tensor,
    logits_neg: torch.Tensor,
    *,
    weights: Mapping[str, float],
    ce_input: str,
    **focal,
) -> torch.Tensor:
    """triplet () float, logits_pos (N, 2), logits_neg (M, 2), weights {"triplet", "ce_pos", "ce_neg"} -> scalar.

    The combined objective's definition, sum of weights[c] * pair_components(...)[c]: the
    reference of losses.testing's combined target (training weights the components through
    losses.weighting).
    """
    components = pair_components(triplet, logits_pos, logits_neg, ce_input=ce_input, **focal)
    return sum(weights[name] * value for name, value in components.items())


def _accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logits (N, C), target (N,) -> detached 0-dim share of argmax == target (NaN when N = 0)."""
    with torch.no_grad():
        if target.numel() == 0:
            return torch.full((), float("nan"), dtype=logits.dtype, device=logits.device)
        return (logits.argmax(dim=1) == target).to(logits.dtype).mean()


def _check_dim(x: torch.Tensor, *, name: str, embedding_dim: int) -> None:
    if x.shape[1] != embedding_dim:
        raise ValueError(f"expected {name} of dimension {embedding_dim} (embedding_dim), got {x.shape[1]}")


def _check_size(value: object, *, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected {name} to be an int >= 1, got {value!r}")
    return value


def _check_variant_params(params: Mapping[str, object] | None) -> dict[str, object]:
    """params dict of the batch variant's other keyword arguments -> a copy; reserved names raise."""
    params = dict(params or {})
    reserved = sorted(set(params) & {"margin", "metric", "return_stats"})
    if reserved:
        raise ValueError(f"variant_params must not set {reserved}: margin is a call argument, metric a constructor one")
    if params.get("reduction") == "none":
        raise ValueError("variant_params: reduction 'none' gives per-item losses, a component must be a scalar")
    return params


def _run_variant(variant, embeddings, labels, *, margin, metric, params, return_stats):
    """-> (loss, TripletStats or None) from the batch variant."""
    out = VARIANTS[variant](embeddings, labels, margin=margin, metric=metric, return_stats=check_flag(return_stats, name="return_stats"), **params)
    return out if return_stats else (out, None)


class PairClassifier(nn.Module):
    """u (N, E), v (N, E) float -> (N, 2) logits from concat(u, v, |u - v|, u * v).

    hidden_dim None: one linear layer (4E -> 2); an int: linear (4E -> hidden) + ReLU + linear (-> 2).
    Logit 1 is "same class", logit 0 "different class".
    """

    def __init__(self, *, embedding_dim: int, hidden_dim: int | None):
        super().__init__()
        E = _check_size(embedding_dim, name="embedding_dim")
        if hidden_dim is None:
            self.net = nn.Linear(4 * E, 2)
        else:
            H = _check_size(hidden_dim, name="hidden_dim")
            self.net = nn.Sequential(nn.Linear(4 * E, H), nn.ReLU(), nn.Linear(H, 2))

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        features = torch.cat([u, v, (u - v).abs(), u * v], dim=1)  # (N, 4E)
        return self.net(features)  # (N, 2)


class CombinedLoss(nn.Module):
    """Triplet loss + pair-classifier cross-entropy; components "triplet", "ce_pos", "ce_neg".

    ce_pos = CE(classifier(a, p), 1), ce_neg = CE(classifier(a, n), 0), each averaged over
    its pairs; ``pair_accuracy`` is the accuracy over both sets. The components come back
    unweighted: combine them with a ``losses.weighting`` method, e.g. fixed weights
    ``make_weighting("fixed", components=("triplet", "ce_pos", "ce_neg"), weights={...})``
    gives w_triplet * triplet + w_pos * ce_pos + w_neg * ce_neg.

    Two forms:
    - ``forward_triplets(anchor, positive, negative, margin=...)``: explicit triplets; the
      triplet term is ``naive_triplet_loss`` (reduction ``triplet_reduction``), the pairs are
      the rows' (a, p) and (a, n).
    - ``forward(embeddings, labels, margin=...)``: a P x K batch; the triplet term is the
      batch ``variant`` (its own selection, ``variant_params`` as its keyword arguments), the
      classifier's pairs follow ``pairs``: "hardest" = per anchor with a positive and a
      negative, its farthest positive and nearest negative (``losses.masks.hardest_pairs``,
      batch-hard's selection, under ``metric``, on detached distances); "all" = every
      positive pair (a, p), a != p, and every negative pair (O(B^2 E) memory: small batches).

    embedding_dim: E. metric: the triplet term's and the "hardest" selection's distance.
    ce_input: "logits" (default, correct) or "probabilities" (the documented bug, an
    ablation switch).
    hidden_dim: None (linear head, default) or the hidden width of a one-hidden-layer head.
    ce: "ce" (default) or "focal" for both CE terms, with focal_gamma and focal_alpha (see
    ``cross_entropy``; unused with "ce").
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        metric: str,
        ce_input: str = "logits",
        hidden_dim: int | None = None,
        triplet_reduction: str = "mean",
        variant: str = "batch_hard",
        variant_params: Mapping[str, object] | None = None,
        pairs: str = "hardest",
        ce: str = "ce",
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
    ):
        super().__init__()
        self.focal = check_focal(ce, focal_gamma, focal_alpha)
        self.embedding_dim = _check_size(embedding_dim, name="embedding_dim")
        self.metric = check_choice(metric, name="metric", valid=METRICS)
        self.ce_input = check_choice(ce_input, name="ce_input", valid=CE_INPUTS)
        self.triplet_reduction = check_choice(triplet_reduction, name="triplet_reduction", valid=SCALAR_REDUCTIONS)
        self.variant = check_choice(variant, name="variant", valid=BATCH_VARIANTS)
        self.variant_params = _check_variant_params(variant_params)
        self.pairs = check_choice(pairs, name="pairs", valid=PAIR_RULES)
        self.classifier = PairClassifier(embedding_dim=self.embedding_dim, hidden_dim=hidden_dim)

    def forward_triplets(
        self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, *, margin: float
    ) -> CombinedOutput:
        """anchor (N, E), positive (N, E), negative (N, E) float -> CombinedOutput."""
        triplet = naive_triplet_loss(
            anchor, positive, negative, margin=margin, metric=self.metric, reduction=self.triplet_reduction
        )  # validates the three tensors
        _check_dim(anchor, name="anchor", embedding_dim=self.embedding_dim)
        return self._combine(triplet, anchor, positive, anchor, negative, stats=None)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, *, margin: float | None, return_stats: bool = True
    ) -> CombinedOutput:
        """embeddings (B, E) float, labels (B,) int -> CombinedOutput (triplets formed as documented).

        return_stats=False skips the variant's TripletStats (stats None; they cost O(B^2 log B)).
        """
        triplet, stats = _run_variant(
            self.variant, embeddings, labels, margin=margin, metric=self.metric, params=self.variant_params, return_stats=return_stats
        )  # validates embeddings and labels
        _check_dim(embeddings, name="embeddings", embedding_dim=self.embedding_dim)
        a_pos, p, a_neg, n = self._pair_indices(embeddings, labels)
        return self._combine(triplet, embeddings[a_pos], embeddings[p], embeddings[a_neg], embeddings[n], stats=stats)

    def _pair_indices(self, embeddings: torch.Tensor, labels: torch.Tensor):
        """-> (anchor, positive) and (anchor, negative) index vectors under the ``pairs`` rule."""
        dist, pos, neg = batch_distances(embeddings.detach(), labels, metric=self.metric)  # (B, B) x 3
        if self.pairs == "all":
            return (*pos.nonzero(as_tuple=True), *neg.nonzero(as_tuple=True))
        valid, farthest_pos, nearest_neg = hardest_pairs(dist, pos, neg)  # (B,), (A,), (A,)
        anchors = valid.nonzero(as_tuple=True)[0]  # (A,)
        return anchors, farthest_pos, anchors, nearest_neg

    def _combine(self, triplet, a_pos, p, a_neg, n, *, stats) -> CombinedOutput:
        logits_pos = self.classifier(a_pos, p)  # (N, 2)
        logits_neg = self.classifier(a_neg, n)  # (M, 2)
        components = pair_components(triplet, logits_pos, logits_neg, ce_input=self.ce_input, **self.focal)
        target = torch.cat([logits_pos.new_ones(len(logits_pos), dtype=torch.long),
                            logits_neg.new_zeros(len(logits_neg), dtype=torch.long)])  # on the logits' device
        accuracy = _accuracy(torch.cat([logits_pos, logits_neg]), target)
        return CombinedOutput(components, accuracy, stats)


class TripletWithIDLoss(nn.Module):
    """Batch triplet variant + class cross-entropy (the re-identification "ID loss" recipe).

    A linear classifier (E -> num_classes) on the embedding, CE on the class labels, beside
    the batch ``variant`` (``variant_params`` as its keyword arguments, e.g.
    {"semantics": "tf", "reduction": "mean"} for semi_hard, {"soft": True} for batch_hard
    with margin=None). Components "triplet", "ce_id", unweighted (combine them with a
    ``losses.weighting`` method; fixed weights give w_triplet * triplet + w_ce * ce_id);
    ``id_accuracy`` is the classifier's accuracy on the batch. Labels must lie in [0, num_classes).
    ce_input as in CombinedLoss ("probabilities" is the documented bug, an ablation switch).
    ce: "ce" (default) or "focal" with focal_gamma (focal_alpha must be None: its binary class
    balance has no meaning for C classes).
    """

    def __init__(
        self,
        *,
        variant: str,
        metric: str,
        num_classes: int,
        embedding_dim: int,
        ce_input: str = "logits",
        variant_params: Mapping[str, object] | None = None,
        ce: str = "ce",
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
    ):
        super().__init__()
        if focal_alpha is not None:
            raise ValueError(f"focal_alpha must be None for TripletWithIDLoss (a binary class balance), got {focal_alpha!r}")
        self.focal = check_focal(ce, focal_gamma, None)
        self.variant = check_choice(variant, name="variant", valid=BATCH_VARIANTS)
        self.variant_params = _check_variant_params(variant_params)
        self.metric = check_choice(metric, name="metric", valid=METRICS)
        self.num_classes = _check_size(num_classes, name="num_classes")
        self.embedding_dim = _check_size(embedding_dim, name="embedding_dim")
        self.ce_input = check_choice(ce_input, name="ce_input", valid=CE_INPUTS)
        self.classifier = nn.Linear(self.embedding_dim, self.num_classes)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, *, margin: float | None, return_stats: bool = True
    ) -> TripletWithIDOutput:
        """embeddings (B, E) float, labels (B,) int in [0, num_classes) -> TripletWithIDOutput.

        return_stats=False skips the variant's TripletStats (stats None).
        """
        check_embeddings(embeddings)
        check_labels(labels, batch_size=embeddings.shape[0], device=embeddings.device)
        _check_dim(embeddings, name="embeddings", embedding_dim=self.embedding_dim)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"expected labels in [0, {self.num_classes}) (num_classes), got range [{int(labels.min())}, {int(labels.max())}]"
            )
        triplet, stats = _run_variant(
            self.variant, embeddings, labels, margin=margin, metric=self.metric, params=self.variant_params, return_stats=return_stats
        )
        logits = self.classifier(embeddings)  # (B, num_classes)
        components = {"triplet": triplet, "ce_id": cross_entropy(logits, labels, ce_input=self.ce_input, anchor=logits, **self.focal)}
        return TripletWithIDOutput(components, _accuracy(logits, labels), stats)
