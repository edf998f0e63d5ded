"""What each loss of the grids reads of a run config and how it is built: its own keys (with
their defaults and checks), whether it takes the margin, its components (more than one are
weighted by `weighting`, each by its weight key under fixed weights), the constraints it puts
on the other keys, and its objective. The objectives (ablations/objectives.py) build the
losses; the config keeps, for a run, only the keys its dataset, encoder, loss and weighting
read (ablations/config.py).

The batch variants come from losses.registry.BATCH_VARIANT_CALLS (a new one there is a new value
of `loss` and of `id_variant`). Another new loss of the grids is its objective (a module of its
own, or a test's class) plus one LossSpec line in LOSS_SPECS naming it (ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ablations.keys import NON_NEGATIVE, POSITIVE, Key, above, names
from ablations.mining import MINING_KEYS
from losses.combined import CE_INPUTS, CE_KINDS
from losses.registry import BATCH_VARIANT_CALLS

MARGIN_SCHEDULES = ("constant", "linear")
# read by every loss that takes a margin; margin_start and margin_ramp_epochs only under a
# "linear" margin_schedule (ablations/config.py REFINES)
MARGIN_KEYS = (
    Key("margin", 0.2, "triplet margin (final value under a schedule)", NON_NEGATIVE),
    Key("margin_schedule", "constant", "constant | linear (ramp from margin_start)", choices=MARGIN_SCHEDULES),
    Key("margin_start", 0.0, "linear: margin at step 0", NON_NEGATIVE),
    Key("margin_ramp_epochs", 10, "linear: epochs to reach `margin`", POSITIVE),
)
# component -> the key of its weight under weighting = "fixed" (a user's loss's other
# components get weight 1)
WEIGHT_KEYS = {
    "triplet": Key("w_triplet", 1.0, "fixed weighting: weight of the triplet term", NON_NEGATIVE),
    "ce_pos": Key("w_pos", 1.0, "fixed weighting: CE on (anchor, positive) pairs (combined)", NON_NEGATIVE),
    "ce_neg": Key("w_neg", 1.0, "fixed weighting: CE on (anchor, negative) pairs (combined)", NON_NEGATIVE),
    "ce_id": Key("w_ce", 1.0, "fixed weighting: class CE (triplet_ce)", NON_NEGATIVE),
}


@dataclass(frozen=True)
class LossSpec:
    """One loss as the config and the training loop see it."""

    # (config, number of training classes) -> its objective module (ablations/objectives.py
    # says what an objective is), or "package.module:name" of such a callable: the built-in
    # losses name theirs, a floor above this one
    objective: str | Callable[[Any, int], Any] = ""
    keys: tuple[Key, ...] = ()            # its own keys, besides MARGIN_KEYS
    takes_margin: bool = True             # reads MARGIN_KEYS
    margin_of: str = ""                   # a key naming the loss whose margin rule it follows (triplet_ce's id_variant)
    components: tuple[str, ...] = ("triplet",)   # its terms, weighted by `weighting` when more than one
    explicit_triplets: bool = False       # trained on offline (anchor, positive, negative) triplets: `mining` applies
    cosine_only: bool = False             # defined on cosine similarity: its runs use metric = "cosine"
    batch_variant: bool = False           # a batch variant of the triplet loss (triplet_ce's id_variant, the memory's)
    rival: bool = False                   # a rival of the triplet losses (losses.rivals)

    def reads_margin(self, config: dict, specs: dict[str, LossSpec]) -> bool:
        """config dict -> whether this loss reads the margin keys under it."""
        return specs[config[self.margin_of]].takes_margin if self.margin_of else self.takes_margin

    @property
    def key_names(self) -> tuple[str, ...]:
        return names(self.keys)


def _batch_variants() -> tuple[str, ...]:
    return tuple(name for name, spec in LOSS_SPECS.items() if spec.batch_variant)


_OBJECTIVES = "ablations.objectives:"
_CE_KEYS = (Key("ce", "ce", 'combined/triplet_ce: "ce" | "focal" for the cross-entropy terms', choices=CE_KINDS),
            Key("focal_gamma", 2.0, 'ce = "focal": focusing exponent gamma (Lin et al.); 0 = CE', NON_NEGATIVE),
            Key("ce_input", "logits", 'combined/triplet_ce: "probabilities" is the documented bug, an ablation only',
                choices=CE_INPUTS))
_FOCAL_ALPHA = Key("focal_alpha", -1.0, 'ce = "focal", combined: class-1 weight alpha in (0, 1); -1 = none',
                   (lambda v: "" if v == -1.0 or 0.0 < v < 1.0 else "must be in (0, 1), or -1 for none",))
_ID_VARIANT = Key("id_variant", "batch_hard", "triplet_ce: batch variant beside the class CE",
                  choices=_batch_variants)


def _rival(name: str, *, cosine_only: bool, keys: tuple[Key, ...] = ()) -> LossSpec:
    """A rival of the triplet losses (losses.rivals): no margin, one component named after it."""
    return LossSpec(_OBJECTIVES + "rival_objective", keys, takes_margin=False, cosine_only=cosine_only,
                    components=(name,), rival=True)


LOSS_SPECS: dict[str, LossSpec] = {
    "naive": LossSpec(_OBJECTIVES + "naive_objective", MINING_KEYS, explicit_triplets=True),
    **{name: LossSpec(_OBJECTIVES + "batch_objective", takes_margin=not fixed.get("soft", False),
                      batch_variant=True)   # soft margin: no margin
       for name, (_, fixed) in BATCH_VARIANT_CALLS.items()},
    "combined": LossSpec(_OBJECTIVES + "combined_objective", MINING_KEYS + _CE_KEYS + (_FOCAL_ALPHA,),
                         explicit_triplets=True, components=("triplet", "ce_pos", "ce_neg")),
    "triplet_ce": LossSpec(_OBJECTIVES + "triplet_id_objective", _CE_KEYS + (_ID_VARIANT,),
                           margin_of="id_variant", components=("triplet", "ce_id")),
    "multi_similarity": _rival("multi_similarity", cosine_only=True),
    "circle": _rival("circle", cosine_only=True),
    "contrastive": _rival("contrastive", cosine_only=False),
    "ntxent": _rival("ntxent", cosine_only=True, keys=(
        Key("temperature", 0.07, "ntxent: temperature t of the softmax over s / t (PML's default)", (above(0),)),)),
}
