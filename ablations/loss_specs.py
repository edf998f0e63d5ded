"""What each loss of the grids reads of a run config: its own keys, whether it takes the margin,
its components (more than one are weighted by `weighting`) and the constraints it puts on the
other keys. The objectives (ablations/objectives.py) build the losses; the config keeps, for a
run, only the keys its dataset, encoder, loss and weighting read (ablations/config.py).

The batch variants come from losses.registry.BATCH_VARIANT_CALLS (a new one there is a new value
of `loss` and of `id_variant`); another new loss of the grids is one LossSpec here plus its
objective in ablations/objectives.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from losses.registry import BATCH_VARIANT_CALLS

# read by every loss that takes a margin; margin_start and margin_ramp_epochs only under a
# "linear" margin_schedule (ablations/config.py REFINES)
MARGIN_KEYS = ("margin", "margin_schedule", "margin_start", "margin_ramp_epochs")
# read by the losses trained on offline triplets; the mining_* keys only with mining != "none"
MINING_KEYS = ("mining", "mining_refresh_epochs", "mining_neighbours", "mining_random_rate",
               "mining_hard_start", "mining_hard_end")


@dataclass(frozen=True)
class LossSpec:
    """One loss as the config sees it."""

    keys: tuple[str, ...] = ()            # its own keys, besides MARGIN_KEYS
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


_CE_KEYS = ("ce", "focal_gamma", "ce_input")
LOSS_SPECS: dict[str, LossSpec] = {
    "naive": LossSpec(keys=MINING_KEYS, explicit_triplets=True),
    **{name: LossSpec(takes_margin=not fixed.get("soft", False), batch_variant=True)   # soft margin: no margin
       for name, (_, fixed) in BATCH_VARIANT_CALLS.items()},
    "combined": LossSpec(keys=MINING_KEYS + _CE_KEYS + ("focal_alpha",), explicit_triplets=True,
                         components=("triplet", "ce_pos", "ce_neg")),
    "triplet_ce": LossSpec(keys=_CE_KEYS + ("id_variant",), margin_of="id_variant",
                           components=("triplet", "ce_id")),
    # the rivals (losses.rivals): one component, named after the loss
    "multi_similarity": LossSpec(takes_margin=False, cosine_only=True, components=("multi_similarity",),
                                 rival=True),
    "circle": LossSpec(takes_margin=False, cosine_only=True, components=("circle",), rival=True),
    "contrastive": LossSpec(takes_margin=False, components=("contrastive",), rival=True),
    "ntxent": LossSpec(keys=("temperature",), takes_margin=False, cosine_only=True, components=("ntxent",),
                       rival=True),
}
