"""RunConfig -> the objective of a run: named, unweighted component losses + batch stats.

Two kinds of objective, chosen by the loss:
- batch objectives (`explicit_triplets = False`) see a P x K batch:
  `forward(embeddings (B, E), labels (B,), margin) -> StepLoss`;
  batch_all, batch_hard, batch_hard_soft, semi_hard_tf, semi_hard_pml,
  triplet_ce (batch variant + class cross-entropy) and the rival losses.
- explicit-triplet objectives (`explicit_triplets = True`) see offline
  (anchor, positive, negative) triplets (random or mined, see ablations.mining):
  `forward_triplets(a (T, E), p (T, E), n (T, E), margin) -> StepLoss`;
  naive and combined (triplet + pair-classifier cross-entropy).

The weighting (losses.weighting) then combines the components; an objective with
one component is trained on it unweighted.

Reductions follow each variant's reference: batch_all averages over active
triplets ("mean_positive", PML / Moindrot), batch_hard over anchors ("mean",
Hermans et al.), semi_hard_tf over positive pairs ("mean", TF-Addons),
semi_hard_pml over active triplets ("mean_positive", PML), naive over triplets;
batch_hard_soft (softplus(d_ap - d_an), Hermans et al.) has no margin.
Stats for the rivals (which select no triplets) are pos_ratio and
violation_rate of the batch's triplets at the run's margin; active_fraction is NaN.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

import losses
from losses.memory import CrossBatchMemory, loss_against_memory, xbm_total
from losses.registry import BATCH_VARIANT_CALLS, REFERENCE_VARIANTS
from ablations.config import FIXED_WEIGHT_KEYS, WEIGHTING_PARAMS, RunConfig
from ablations.loss_specs import LOSS_SPECS
from ablations.plugins import import_object, is_import_string, loss_components, loss_plugin

RIVAL_CALLS = {"multi_similarity": "multi_similarity_loss", "circle": "circle_loss",
               "contrastive": "contrastive_loss", "ntxent": "ntxent_loss"}
STAT_NAMES = ("active_fraction", "pos_ratio", "violation_rate")


@dataclass
class StepLoss:
    components: dict[str, torch.Tensor]  # name -> 0-dim unweighted loss (attached)
    stats: dict[str, float]              # STAT_NAMES -> float (NaN where undefined)
    extras: dict[str, float] = dataclasses.field(default_factory=dict)  # e.g. pair_accuracy


def _stats_dict(stats) -> dict[str, float]:
    return {name: float(getattr(stats, name)) for name in STAT_NAMES}


def batch_variant(name: str, *, metric: str):
    """Variant name -> fn(embeddings, labels, margin) -> (loss, TripletStats)."""
    registry_name, fixed = BATCH_VARIANT_CALLS[name]
    fn = losses.VARIANTS[registry_name]
    soft = fixed.get("soft", False)

    def call(embeddings, labels, margin):
        return fn(embeddings, labels, margin=None if soft else margin, metric=metric,
                  return_stats=True, **fixed)

    return call


class BatchObjective(nn.Module):
    """One batch variant; component "triplet"."""

    explicit_triplets = False
    components = ("triplet",)

    def __init__(self, variant: str, *, metric: str):
        super().__init__()
        self.variant = batch_variant(variant, metric=metric)

    def forward(self, embeddings, labels, margin: float) -> StepLoss:
        loss, stats = self.variant(embeddings, labels, margin)
        return StepLoss({"triplet": loss}, _stats_dict(stats))


class RivalObjective(nn.Module):
    """Multi-Similarity, Circle, Contrastive or NT-Xent loss with its paper defaults (NT-Xent:
    the run's temperature); one component, named after the loss ("multi_similarity", ...)."""

    explicit_triplets = False

    def __init__(self, name: str, *, metric: str, temperature: float):
        super().__init__()
        self.fn = getattr(losses, RIVAL_CALLS[name])
        self.components = LOSS_SPECS[name].components
        # multi_similarity, circle and ntxent are cosine by definition (config forces metric);
        # contrastive takes the run's metric
        self.kwargs = {"metric": metric} if name == "contrastive" else {}
        if name == "ntxent":
            self.kwargs = {"temperature": temperature}
        self.stats_of = batch_variant("batch_all", metric=metric)

    def forward(self, embeddings, labels, margin: float) -> StepLoss:
        loss = self.fn(embeddings, labels, **self.kwargs)
        return StepLoss({self.components[0]: loss}, batch_stats(self.stats_of, embeddings, labels, margin))


def batch_stats(stats_of, embeddings, labels, margin: float) -> dict[str, float]:
    """pos_ratio and violation_rate of the batch's triplets at `margin`; active_fraction NaN
    (a loss that selects no triplets has none)."""
    _, stats = stats_of(embeddings.detach(), labels, margin)
    return {**_stats_dict(stats), "active_fraction": float("nan")}


class PluginObjective(nn.Module):
    """A user's batch loss "package.module:function" (ablations.plugins); its components are
    "loss" for a scalar, or the names of the dict it returns. Its TripletStats when it returns
    them, otherwise those of `batch_stats`."""

    explicit_triplets = False

    def __init__(self, text: str, *, metric: str):
        super().__init__()
        self.text = text
        plugin = loss_plugin(text)
        self.fn, self.components = plugin.fn, plugin.components
        self.kwargs = {"metric": metric} if "metric" in plugin.keywords else {}
        self.takes_margin = "margin" in plugin.keywords
        self.stats_of = batch_variant("batch_all", metric=metric)

    def forward(self, embeddings, labels, margin: float) -> StepLoss:
        out = self.fn(embeddings, labels, **self.kwargs, **({"margin": margin} if self.takes_margin else {}))
        stats = out[1] if isinstance(out, tuple) else None
        components = loss_components(out, text=self.text)
        if tuple(components) != self.components:
            raise ValueError(f"loss {self.text!r} returned components {tuple(components)}, "
                             f"first {self.components}: they must not change between calls")
        if stats is None:
            return StepLoss(components, batch_stats(self.stats_of, embeddings, labels, margin))
        return StepLoss(components, _stats_dict(stats))


class TripletIdObjective(nn.Module):
    """Batch variant + class cross-entropy over the training classes; "triplet", "ce_id"."""

    explicit_triplets = LOSS_SPECS["triplet_ce"].explicit_triplets
    components = LOSS_SPECS["triplet_ce"].components

    def __init__(self, variant: str, *, metric: str, num_classes: int, embedding_dim: int,
                 ce_input: str, focal: dict | None = None):
        super().__init__()
        registry_name, params = BATCH_VARIANT_CALLS[variant]
        self.soft = params.get("soft", False)
        self.loss = losses.TripletWithIDLoss(
            variant=registry_name, variant_params=params, metric=metric,
            num_classes=num_classes, embedding_dim=embedding_dim, ce_input=ce_input, **(focal or {}))

    def forward(self, embeddings, labels, margin: float) -> StepLoss:
        out = self.loss(embeddings, labels, margin=None if self.soft else margin,
                        return_stats=True)
        return StepLoss(out.components, _stats_dict(out.stats), {"id_accuracy": float(out.id_accuracy)})


class NaiveObjective(nn.Module):
    """naive_triplet_loss on explicit triplets; component "triplet"; stats over the triplets."""

    explicit_triplets = LOSS_SPECS["naive"].explicit_triplets
    components = LOSS_SPECS["naive"].components

    def __init__(self, *, metric: str):
        super().__init__()
        self.metric = metric

    def forward_triplets(self, a, p, n, margin: float) -> StepLoss:
        loss = losses.naive_triplet_loss(a, p, n, margin=margin, metric=self.metric)
        return StepLoss({"triplet": loss}, explicit_triplet_stats(a, p, n, margin=margin,
                                                                   metric=self.metric))


class CombinedObjective(nn.Module):
    """CombinedLoss on explicit triplets: "triplet", "ce_pos", "ce_neg" (+ pair accuracy)."""

    explicit_triplets = LOSS_SPECS["combined"].explicit_triplets
    components = LOSS_SPECS["combined"].components

    def __init__(self, *, metric: str, embedding_dim: int, ce_input: str, focal: dict | None = None):
        super().__init__()
        self.metric = metric
        # the pair classifier is linear on concat(u, v, |u - v|, u * v)
        self.loss = losses.CombinedLoss(embedding_dim=embedding_dim, metric=metric,
                                        ce_input=ce_input, hidden_dim=None, triplet_reduction="mean",
                                        **(focal or {}))

    def forward_triplets(self, a, p, n, margin: float) -> StepLoss:
        out = self.loss.forward_triplets(a, p, n, margin=margin)
        stats = explicit_triplet_stats(a, p, n, margin=margin, metric=self.metric)
        return StepLoss(out.components, stats, {"pair_accuracy": float(out.pair_accuracy)})


def explicit_triplet_stats(a, p, n, *, margin: float, metric: str) -> dict[str, float]:
    """a, p, n (T, E) -> active_fraction (naive hinge > 0), pos_ratio, violation_rate."""
    with torch.no_grad():
        d_ap = losses.paired_distances(a, p, metric=metric)  # (T,)
        d_an = losses.paired_distances(a, n, metric=metric)  # (T,)
        if len(d_ap) == 0:
            return dict.fromkeys(STAT_NAMES, 0.0)
        violation = float((d_ap + margin > d_an).double().mean())
        return {"active_fraction": violation,  # the naive hinge is > 0 exactly on violations
                "pos_ratio": float((d_ap < d_an).double().mean()),
                "violation_rate": violation}


def build_objective(config: RunConfig, *, num_classes: int) -> nn.Module:
    """RunConfig, number of training classes -> objective module (may hold learnable heads):
    a user's loss ("package.module:function"), or what the loss's LossSpec.objective builds."""
    if is_import_string(config.loss):
        return PluginObjective(config.loss, metric=config.metric)
    if config.loss not in LOSS_SPECS:
        raise ValueError(f"loss: unknown {config.loss!r}; valid: {', '.join(LOSS_SPECS)}")
    build = LOSS_SPECS[config.loss].objective
    return (import_object(build, key="loss") if isinstance(build, str) else build)(config, num_classes)


# The builders the built-in LossSpecs name (ablations/loss_specs.py): (config, classes) -> objective.
def batch_objective(config: RunConfig, num_classes: int) -> BatchObjective:
    return BatchObjective(config.loss, metric=config.metric)


def rival_objective(config: RunConfig, num_classes: int) -> RivalObjective:
    return RivalObjective(config.loss, metric=config.metric, temperature=config.temperature)


def _focal(config: RunConfig) -> dict:
    return {"ce": config.ce, "focal_gamma": config.focal_gamma,
            "focal_alpha": None if config.focal_alpha == -1.0 else config.focal_alpha}


def triplet_id_objective(config: RunConfig, num_classes: int) -> TripletIdObjective:
    return TripletIdObjective(config.id_variant, metric=config.metric, num_classes=num_classes,
                              embedding_dim=config.embedding_dim, ce_input=config.ce_input,
                              focal={**_focal(config), "focal_alpha": None})


def naive_objective(config: RunConfig, num_classes: int) -> NaiveObjective:
    return NaiveObjective(metric=config.metric)


def combined_objective(config: RunConfig, num_classes: int) -> CombinedObjective:
    return CombinedObjective(metric=config.metric, embedding_dim=config.embedding_dim,
                             ce_input=config.ce_input, focal=_focal(config))


class MemoryTerm(nn.Module):
    """A run's cross-batch memory (memory_size > 0) and its term: each step from memory_start_epoch
    on, the step's embeddings are enqueued (PML's order), then the "triplet" component becomes
    triplet + memory_weight * (the same variant between the step's embeddings and the memory),
    XBM's loss(batch, batch) + w * loss(batch, memory). The variant: the run's batch variant,
    triplet_ce's id_variant, batch_all for the explicit-triplet losses (naive, combined: the
    step's distinct rows of its triplets, with their labels). The memory is made at the first
    step, with the embeddings' dimension."""

    def __init__(self, config: RunConfig):
        super().__init__()
        variant = config.id_variant if config.loss == "triplet_ce" else (
            config.loss if config.loss in BATCH_VARIANT_CALLS else "batch_all")
        registry_name, self.fixed = BATCH_VARIANT_CALLS[variant]
        self.fn = REFERENCE_VARIANTS[registry_name]
        self.soft = self.fixed.get("soft", False)
        self.size, self.weight, self.start_epoch = config.memory_size, config.memory_weight, config.memory_start_epoch
        self.metric = config.metric
        self.memory: CrossBatchMemory | None = None

    def add_to(self, triplet: torch.Tensor, embeddings, labels, margin: float, *, epoch: int) -> torch.Tensor:
        """triplet () the batch term, embeddings (B, E), labels (B,) -> the step's triplet component."""
        if epoch < self.start_epoch:
            return triplet
        if self.memory is None:
            self.memory = CrossBatchMemory(self.size, embeddings.shape[1]).to(embeddings.device)
        memory_loss = loss_against_memory(self.fn, self.memory, embeddings, labels, metric=self.metric,
                                          margin=None if self.soft else margin, **self.fixed)
        return xbm_total(triplet, memory_loss, weight=self.weight)


def build_memory_term(config: RunConfig) -> MemoryTerm | None:
    """RunConfig -> its MemoryTerm, or None when memory_size = 0 (or for a baseline)."""
    return MemoryTerm(config) if config.memory_size > 0 else None


def weighting_params(config: RunConfig, components: tuple[str, ...]) -> dict:
    """The keyword arguments of losses.weighting.make_weighting for the config's method.

    fixed: the weights w_triplet, w_pos, w_neg, w_ce of the components of those names
    (1 for other names: a user's loss); the other methods: their parameters from the
    config (ablations.config.WEIGHTING_PARAMS).
    """
    if config.weighting == "fixed":
        key = {c: w for w, c in FIXED_WEIGHT_KEYS.items()}
        return {"weights": {c: getattr(config, key[c]) if c in key else 1.0 for c in components}}
    return {kw: getattr(config, key) for key, kw in WEIGHTING_PARAMS.get(config.weighting, ())}
