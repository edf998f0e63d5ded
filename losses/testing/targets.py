"""What a user's function is checked against: the reference, the battery and the known faults.

A target per kind of function:
- `TripletTarget`: a triplet variant (naive or a batch variant); the reference is our own
  loss in float64, the known faults are `family.Spec` switches.
- `CombinedTarget` (as_="combined"): the combining step of a triplet + pair-classifier
  objective, fn(triplet (), logits_pos (N, 2), logits_neg (M, 2), *, w_triplet, w_pos, w_neg)
  -> total, against w_triplet * triplet + w_pos * CE(logits_pos, 1) + w_neg * CE(logits_neg, 0)
  (losses.combined.pair_total, what CombinedLoss adds up). It finds softmax applied before
  the cross-entropy and loss weights that are hard-coded (ignored). The head and the
  triplet term are the user's own; check the triplet term with its variant.
- `RefsTarget` (as_="<batch variant>_refs", losses.testing.refs_target): the same variant
  between anchors and a reference set (a cross-batch memory), called like our *_refs losses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Union

import torch

from .. import naive_triplet_loss
from ..combined import pair_total
from ..distances import METRICS
from ..reductions import REDUCTIONS
from ..registry import BATCH_VARIANT_CALLS, VARIANTS
from ..validation import check_choice, check_margin
from .battery import Case, batch_cases, naive_cases
from .family import CHECKED_VARIANTS, Spec, family_loss
from .refs_target import REFS_VARIANTS, RefsTarget

Target = Union["TripletTarget", "CombinedTarget", "RefsTarget"]
VARIANT_NAMES = (*CHECKED_VARIANTS, "semi_hard", "combined", *REFS_VARIANTS, "semi_hard_refs")
DEFAULT_REDUCTION = {"naive": "mean", **{name: kw["reduction"] for name, (_, kw) in BATCH_VARIANT_CALLS.items()},
                     **{f"{name}_refs": kw["reduction"] for name, (_, kw) in BATCH_VARIANT_CALLS.items()}}
ITEMS = {"naive": "triplets", "batch_all": "triplets", "batch_hard": "anchors", "batch_hard_soft": "anchors",
         "semi_hard_tf": "positive pairs", "semi_hard_pml": "semi-hard triplets"}
REDUCTION_WORDS = {"mean": "the mean over all {}", "mean_positive": "the mean over the {} with loss > 0",
                   "sum": "the sum over the {}"}


def make_target(as_: str, *, metric: str, margin: float, reduction: str | None, semantics: str | None):
    """Checked settings -> TripletTarget, CombinedTarget or RefsTarget; bad settings raise ValueError."""
    check_choice(as_, name="as_", valid=VARIANT_NAMES)
    if as_ == "combined":
        return CombinedTarget()
    if as_.endswith("_refs"):
        batch = make_target(as_.removesuffix("_refs"), metric=metric, margin=margin, reduction=reduction,
                            semantics=semantics)
        return RefsTarget(batch)
    if as_ == "semi_hard":
        as_ = "semi_hard_" + check_choice(semantics, name="semantics", valid=("tf", "pml"))
    elif semantics is not None and not (as_.startswith("semi_hard") and as_.endswith(semantics)):
        raise ValueError(f"semantics={semantics!r} does not fit as_={as_!r}: semi_hard_tf takes 'tf', "
                         f"semi_hard_pml 'pml', other variants none")
    check_choice(metric, name="metric", valid=METRICS)
    reduction = DEFAULT_REDUCTION[as_] if reduction is None else reduction
    check_choice(reduction, name="reduction", valid=tuple(r for r in REDUCTIONS if r != "none"))
    margin = check_margin(margin)
    return TripletTarget(Spec(as_, margin, metric, reduction))


class TripletTarget:
    """A triplet variant under fixed settings (a Spec without faults)."""

    def probe(self, cases: list[Case], values: list[float | None]) -> list[str]:
        """Patterns found from fn's values alone (none for the triplet variants)."""
        return []

    required_keywords: tuple[str, ...] = ()
    per_case: dict = {}  # keywords whose value each battery case sets (none here)

    def __init__(self, spec: Spec):
        self.spec = spec
        self.variant = spec.variant
        self.input_names = "anchor, positive, negative" if spec.variant == "naive" else "embeddings, labels"
        self.items = ITEMS[spec.variant]
        self.selects = spec.variant in ("batch_hard", "batch_hard_soft", "semi_hard_tf")
        soft = spec.variant == "batch_hard_soft"
        self.settings = {"margin": None if soft else spec.margin, "metric": spec.metric, "reduction": spec.reduction}
        if spec.variant.startswith("semi_hard"):
            self.settings["semantics"] = spec.variant.removeprefix("semi_hard_")
        if spec.variant.startswith("batch_hard"):
            self.settings["soft"] = soft

    def cases(self, *, margin_settable: bool) -> list[Case]:
        make = naive_cases if self.variant == "naive" else batch_cases
        return make(self.spec.metric, margin_settable=margin_settable and self.variant != "batch_hard_soft")

    def compares_gradient(self, case: Case) -> bool:
        """Selections among exact ties may send the gradient to any of the tied items."""
        return not (case.exact and self.selects)

    def reference(self, case: Case) -> Callable:
        """case -> inputs -> our loss (float64) under the case's settings."""
        s = self.spec.but(margin=case.params.get("margin", self.spec.margin))
        kw = {"metric": s.metric, "reduction": s.reduction}
        if s.variant == "naive":
            return lambda inputs: naive_triplet_loss(*inputs, margin=s.margin, **kw)
        name, fixed = BATCH_VARIANT_CALLS[s.variant]  # the call the grids make, under the case's reduction
        fn, call = VARIANTS[name], {**fixed, **kw, "margin": None if fixed.get("soft") else s.margin}
        return lambda inputs: fn(*inputs, **call)

    def kink_reference(self, case: Case) -> Callable | None:
        """case -> inputs -> the reference with gradient 1 where a hinge is exactly 0 (None: no hinge)."""
        return None if self.variant == "batch_hard_soft" else self.candidate(case, {"kink": "one"})

    def candidate(self, case: Case, changes: dict) -> Callable:
        """case, Spec changes -> inputs -> the faulty loss."""
        spec = self.spec.but(margin=case.params.get("margin", self.spec.margin), **changes)
        return lambda inputs: family_loss(inputs, spec)

    def candidates(self) -> list[tuple[str, dict]]:
        """The known faults for this variant: (plain words, Spec changes)."""
        s, items = self.spec, self.items
        out = [(f"reduction: the value is {REDUCTION_WORDS[r].format(items)}, expected "
                f"{REDUCTION_WORDS[s.reduction].format(items)}", {"reduction": r})
               for r in REDUCTION_WORDS if r != s.reduction]
        out += _metric_faults(s.metric)
        if s.variant != "naive":
            out += [
                ("counts (a, a, n) triplets: the positive mask includes the diagonal (use y_p == y_a and p != a)",
                 {"positives": "with_diagonal"}),
                ("same-class pairs in the negative mask: negatives must have y_n != y_a, not just n != a",
                 {"negatives": "other_index"}),
                ("the anchor counts as its own negative (d_aa = 0): the negative mask is the complement of a "
                 "positive mask without the diagonal", {"negatives": "not_positive"}),
            ]
        if s.variant.startswith("batch_hard"):
            out += [("hardest positive detached: d_ap carries no gradient (choose the index on detached "
                     "distances, then take that distance with its gradient)", {"detach": "positive"}),
                    ("hardest negative detached: d_an carries no gradient", {"detach": "negative"})]
        if s.variant == "semi_hard_pml":
            out += [("semi-hard boundary: d_an == d_ap + margin handled the other way (PML keeps it: "
                     "d_an - d_ap <= margin)", {"upper": "strict"}),
                    ("semi-hard boundary: d_an == d_ap counted as semi-hard (PML requires d_an > d_ap)",
                     {"lower": "inclusive"}),
                    ("TF-Addons semi-hard semantics (one negative per positive pair) where PML's was asked",
                     {"variant": "semi_hard_tf"})]
        if s.variant == "semi_hard_tf":
            out += [("semi-hard boundary: d_an == d_ap handled the other way (TF-Addons takes the nearest "
                     "negative with d_an > d_ap, strictly)", {"lower": "inclusive"}),
                    ("PML semi-hard semantics (every triplet with d_ap < d_an <= d_ap + margin) where "
                     "TF-Addons' was asked", {"variant": "semi_hard_pml"})]
        return out


def _metric_faults(metric: str) -> list[tuple[str, dict]]:
    if metric == "cosine":
        return [("cosine similarity used as a distance with the wrong sign (similar pairs must get small "
                 "distances: use 1 - cos, or s_an - s_ap + margin)", {"metric": "cosine_similarity"})]
    other = "squared_euclidean" if metric == "euclidean" else "euclidean"
    words = {"squared_euclidean": "squared distance", "euclidean": "euclidean (square-rooted) distance"}
    out = [(f"{words[other]} where {metric.replace('_', ' ')} was asked", {"metric": other}),
           (f"embeddings L2-normalised before the distance (PML's default LpDistance(normalize_embeddings=True)); "
            f"pass the distance explicitly", {"normalize": True})]
    if metric == "euclidean":
        out += [(f"epsilon {eps:g} added under the square root: distances below about {math.sqrt(eps):.0e} are "
                 f"distorted (add it only where the distance is 0)", {"eps": eps}) for eps in (1e-6, 1e-8, 1e-12)]
    return out


class CombinedTarget:
    """The combining step of a triplet + pair-classifier cross-entropy objective (module docstring)."""

    variant = "combined"
    items = "pairs"
    selects = False
    required_keywords = ("w_triplet", "w_pos", "w_neg")
    per_case: dict = {}
    input_names = "triplet, logits_pos, logits_neg"

    def __init__(self):
        self.settings = {"w_triplet": 1.0, "w_pos": 1.0, "w_neg": 1.0}

    def cases(self, *, margin_settable: bool) -> list[Case]:
        g = torch.Generator().manual_seed(7)
        logits = lambda n, scale: scale * torch.randn(n, 2, dtype=torch.float64, generator=g)  # noqa: E731
        pos, neg = logits(6, 2.0), logits(5, 2.0)
        triplet = torch.tensor(0.37, dtype=torch.float64)
        weights = [(1.0, 1.0, 1.0), (0.5, 1.0, 1.0), (1.0, 2.5, 1.0), (1.0, 1.0, 0.25)]
        cases = [Case(f"weights {w}", (triplet, pos, neg), params=dict(zip(self.settings, w))) for w in weights]
        cases.append(Case("large logits", (triplet, logits(6, 20.0), logits(6, 20.0))))
        cases.append(Case("weights (1.0, 1.0, 1.0), float32", (triplet, pos, neg), dtype=torch.float32))
        return cases

    def compares_gradient(self, case: Case) -> bool:
        return True

    def kink_reference(self, case: Case) -> None:
        return None

    def reference(self, case: Case) -> Callable:
        return self.candidate(case, {})

    def candidate(self, case: Case, changes: dict) -> Callable:
        w = {**self.settings, **case.params}
        weights = {"triplet": w["w_triplet"], "ce_pos": w["w_pos"], "ce_neg": w["w_neg"]}
        for name in changes.get("ignored", ()):
            weights[name] = 1.0
        ce_input = changes.get("ce_input", "logits")
        return lambda inputs: pair_total(*inputs, weights=weights, ce_input=ce_input)

    def probe(self, cases: list[Case], values: list[float | None]) -> list[str]:
        """Weights that change nothing: the same total with weight 1 and another value (the others at 1)."""
        by_weights = {tuple(c.params.values()): v for c, v in zip(cases, values) if c.params}  # (w_t, w_p, w_n) -> value
        unit = by_weights.get((1.0, 1.0, 1.0))
        out = []
        for i, name in enumerate(self.settings):
            for weights, value in by_weights.items():
                varied_alone = weights[i] != 1.0 and all(w == 1.0 for j, w in enumerate(weights) if j != i)
                if varied_alone and unit is not None and value == unit:
                    out.append(f"hard-coded loss weight: {name} has no effect (the same total for {name} = 1 "
                               f"and {name} = {weights[i]})")
        return out

    def candidates(self) -> list[tuple[str, dict]]:
        out = [("softmax before cross-entropy: the CE receives probabilities instead of logits (its gradient is "
                "squashed; F.cross_entropy applies log-softmax itself)", {"ce_input": "probabilities"})]
        keys = {"triplet": "w_triplet", "ce_pos": "w_pos", "ce_neg": "w_neg"}
        out += [(f"hard-coded loss weight: {keys[name]} is ignored (the value is that of weight 1)",
                 {"ignored": (name,)}) for name in keys]
        out.append(("hard-coded loss weights: w_triplet, w_pos and w_neg are all ignored",
                    {"ignored": tuple(keys)}))
        return out
