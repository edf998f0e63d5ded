"""A batch-vs-memory variant as a checker target: the reference, a mask-form family and the known faults.

The user's function is called like ours (losses.batch_all_triplet_loss_refs and the
others): fn(anchors (B, D), labels (B,), references (M, D), reference_labels (M,), *,
anchor_index_in_refs (B,) int or None, margin, metric, reduction, ...) -> scalar, where
anchor_index_in_refs[a] is the reference that IS anchor a (its own entry in the memory,
never its positive) or -1, and None means no anchor is among the references.

`refs_family_items` is family.py's mask form over (B, M) candidate columns, with the
switches of the in-batch family (reduction, metric, masks, boundaries, detached hardest
distances) and those of a memory: the anchor's own entry kept or excluded by position,
positives or negatives taken from the batch instead of the references, references detached.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..reductions import reduce_losses
from ..registry import BATCH_VARIANT_CALLS, REFERENCE_VARIANTS
from .battery import Case
from .family import BATCH_VARIANTS, Spec, distances, select_items
from .refs_battery import SELF_KEYWORD, refs_cases

REFS_VARIANTS = tuple(f"{name}_refs" for name in BATCH_VARIANTS)
MEMORY_RULES = {"own": "excluded", "positives_from": "references", "negatives_from": "references",
                "references": "attached"}

MEMORY_FAULTS = [
    ("the anchor's own entry in the references counts as its positive (d = 0): exclude reference "
     f"{SELF_KEYWORD}[a] from anchor a's positives (PML CrossBatchMemory's self-comparison rule)", {"own": "kept"}),
    ("self comparisons excluded by position (reference a for anchor a, as if the batch were references[:B]): "
     f"exclude reference {SELF_KEYWORD}[a] instead; the batch lies where the ring buffer wrote it",
     {"own": "by_position"}),
    ("negatives taken from the batch only: an anchor's negatives must be the references of another class",
     {"negatives_from": "batch"}),
    ("positives taken from the batch only: an anchor's positives must be the references of its class",
     {"positives_from": "batch"}),
    ("the references are not used: this is the in-batch loss of the anchors",
     {"positives_from": "batch", "negatives_from": "batch"}),
    ("references detached inside the loss: no gradient reaches references that require one (the memory "
     "detaches what it stores; the loss itself must not)", {"references": "detached"}),
]


def refs_family_items(inputs: tuple[torch.Tensor, ...], index: torch.Tensor | None, spec: Spec, **rules: str):
    """inputs (anchors (B, D), labels (B,), references (M, D), reference_labels (M,)), anchor_index_in_refs
    (B,) or None, spec, MEMORY_RULES changes -> (items (N,), rows (N, 3) long), reduction="none" order.

    Columns 0..M-1 are the references; with positives or negatives from the batch, columns M..M+B-1
    are the anchors themselves."""
    rules = {**MEMORY_RULES, **rules}
    x, labels, refs, ref_labels = inputs
    if rules["references"] == "detached":
        refs = refs.detach()
    B, M = x.shape[0], refs.shape[0]
    own_index = torch.full((B,), -1) if index is None else index
    if rules["own"] == "by_position":
        own_index = torch.arange(B)
    own = torch.arange(M)[None, :] == own_index[:, None]  # (B, M) the anchor's own entry
    same = labels[:, None] == ref_labels[None, :]  # (B, M)
    pos = same if rules["own"] == "kept" or spec.positives == "with_diagonal" else same & ~own
    neg = {"other_label": ~same, "other_index": ~own, "not_positive": ~pos}[spec.negatives]
    d = distances(x[:, None, :], refs[None, :, :], spec)  # (B, M)
    if "batch" in (rules["positives_from"], rules["negatives_from"]):
        in_batch = labels[:, None] == labels[None, :]  # (B, B)
        no_ref, no_row = torch.zeros(B, M, dtype=torch.bool), torch.zeros(B, B, dtype=torch.bool)
        d = torch.cat([d, distances(x[:, None, :], x[None, :, :], spec)], dim=1)  # (B, M + B)
        from_batch = rules["positives_from"] == "batch"
        pos = torch.cat([no_ref, in_batch & ~torch.eye(B, dtype=torch.bool)] if from_batch else [pos, no_row], 1)
        neg = torch.cat([no_ref, ~in_batch] if rules["negatives_from"] == "batch" else [neg, no_row], 1)
    return select_items(d, d, pos, neg, spec)


def refs_family_loss(inputs: tuple[torch.Tensor, ...], index: torch.Tensor | None, spec: Spec, **rules: str):
    """As refs_family_items, reduced -> scalar."""
    items, _ = refs_family_items(inputs, index, spec, **rules)
    return reduce_losses(items, reduction=spec.reduction, anchor=inputs[0])


class RefsTarget:
    """A batch-vs-references variant under fixed settings: `batch` is the in-batch TripletTarget whose
    settings, items and faults it shares; the memory's own faults are MEMORY_FAULTS."""

    input_names = "anchors, labels, references, reference_labels"
    required_keywords = (SELF_KEYWORD,)
    per_case = {SELF_KEYWORD: None}  # keywords whose value each battery case sets

    def __init__(self, batch):
        self.batch, self.spec = batch, batch.spec
        self.variant = f"{batch.variant}_refs"
        self.items, self.selects, self.settings = batch.items, batch.selects, batch.settings

    def probe(self, cases: list[Case], values: list[float | None]) -> list[str]:
        return []

    def cases(self, *, margin_settable: bool) -> list[Case]:
        return refs_cases(self.spec.metric, margin_settable=margin_settable and self.variant != "batch_hard_soft_refs")

    def compares_gradient(self, case: Case) -> bool:
        return self.batch.compares_gradient(case)

    def reference(self, case: Case) -> Callable:
        """case -> inputs -> our *_refs loss (float64) under the case's settings."""
        s = self.spec.but(margin=case.params.get("margin", self.spec.margin))
        name, fixed = BATCH_VARIANT_CALLS[s.variant]
        call = {**fixed, "metric": s.metric, "reduction": s.reduction,
                "margin": None if fixed.get("soft") else s.margin, SELF_KEYWORD: case.params.get(SELF_KEYWORD)}
        return lambda inputs: REFERENCE_VARIANTS[name](*inputs, **call)

    def kink_reference(self, case: Case) -> Callable | None:
        return None if self.variant == "batch_hard_soft_refs" else self.candidate(case, {"kink": "one"})

    def candidate(self, case: Case, changes: dict) -> Callable:
        rules = {k: v for k, v in changes.items() if k in MEMORY_RULES}
        spec = self.spec.but(margin=case.params.get("margin", self.spec.margin),
                             **{k: v for k, v in changes.items() if k not in MEMORY_RULES})
        index = case.params.get(SELF_KEYWORD)
        return lambda inputs: refs_family_loss(inputs, index, spec, **rules)

    def candidates(self) -> list[tuple[str, dict]]:
        """The in-batch faults (the diagonal one is the memory's own-entry fault here), then MEMORY_FAULTS."""
        shared = [(w, ch) for w, ch in self.batch.candidates() if ch != {"positives": "with_diagonal"}]
        return shared + MEMORY_FAULTS
