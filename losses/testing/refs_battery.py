"""The batches for a batch-vs-memory loss: anchors (B, D), labels (B,), references (M, D), reference_labels (M,).

Each case also holds, in params, the anchor_index_in_refs of the call: the reference that
IS each anchor (its own entry, just enqueued) or -1, or None when no anchor is among the
references (losses/memory.py). The cases cover what a memory does: the batch written
where the ring buffer wrapped (not at references[:B]), M != B, references of classes
absent from the batch, earlier copies of an anchor (ordinary positives at distance 0),
anchors of which only some are in the memory, ties, references with and without a
gradient, and memories that leave no valid item. Deterministic (fixed seeds).
"""

from __future__ import annotations

import torch

from .battery import EXACT_MARGIN, Case, exact_pool

SELF_KEYWORD = "anchor_index_in_refs"


def _memory(x, labels, old, old_labels, start):
    """The batch x (B, D) written into a memory of len(old) + B slots from slot `start` (wrapping), the other
    slots holding `old` -> references (M, D), reference_labels (M,), the slots of the batch (B,)."""
    B, M = x.shape[0], old.shape[0] + x.shape[0]
    slots = (start + torch.arange(B)) % M  # (B,)
    rest = torch.ones(M, dtype=torch.bool)
    rest[slots] = False
    refs = torch.empty(M, x.shape[1], dtype=x.dtype)
    ref_labels = torch.empty(M, dtype=labels.dtype)
    refs[slots], ref_labels[slots] = x, labels
    refs[rest], ref_labels[rest] = old, old_labels
    return refs, ref_labels, slots


def refs_cases(metric: str, *, margin_settable: bool) -> list[Case]:
    """Cases for the batch-vs-references variants (see the module docstring)."""
    g = torch.Generator().manual_seed(20261)
    randn = lambda *shape: torch.randn(*shape, dtype=torch.float64, generator=g)  # noqa: E731
    randint = lambda high, n: torch.randint(0, high, (n,), generator=g)  # noqa: E731
    pk = lambda b, k: torch.arange(b) % k  # noqa: E731
    exact = {"margin": EXACT_MARGIN} if margin_settable else {}

    def case(name, x, y, refs, ref_labels, index, **flags):
        params = {**(exact if flags.pop("exact_margin", False) else {}), SELF_KEYWORD: index}
        return Case(name, (x, y, refs, ref_labels), params=params, **flags)

    x, y = randn(8, 5), pk(8, 4)
    wrapped = _memory(x, y, randn(12, 5), randint(6, 12), start=16)  # classes 4 and 5 only in the memory
    outside_x, outside_y = randn(6, 4), pk(6, 3)
    outside = (randn(17, 4), randint(5, 17))  # M = 17, no anchor among the references
    some_x, some_y = randn(8, 4), pk(8, 4)
    some_refs, some_labels, some_slots = _memory(some_x[:4], some_y[:4], randn(8, 4), randint(5, 8), start=9)
    some_index = torch.cat([some_slots, torch.full((4,), -1)])  # anchors 4..7 are not in the memory
    pool = exact_pool()
    dup_x, dup_y = pool[[0, 1, 2, 3, 4, 5]], pk(6, 3)
    # earlier copies of the anchors (slots 0..5), other entries, then the anchors' own new entries
    dup_refs = torch.cat([dup_x, pool[[6, 7, 2]], dup_x])
    dup_labels = torch.cat([dup_y, torch.tensor([0, 4, 2]), dup_y])
    axes = torch.zeros(24, 3, dtype=torch.float64)
    axes[torch.arange(24), torch.randint(0, 3, (24,), generator=g)] = torch.tensor(
        [1.0, -2.0, 2.0, -1.0] * 6, dtype=torch.float64)
    same_x, same_y = randn(7, 3), torch.tensor([0, 0, 1, 1, 1, 2, 2])
    large_x, large_y = 1e3 * randn(8, 6), pk(8, 4)
    large = _memory(large_x, large_y, 1e3 * randn(8, 6), randint(5, 8), start=3)
    two_x, two_y = randn(4, 3), torch.tensor([0, 0, 1, 1])
    cases = [
        case("memory holding the batch where the ring buffer wrapped", x, y, *wrapped),
        case("memory without the batch (M = 17, B = 6)", outside_x, outside_y, *outside, None),
        case("some anchors in the memory, some not", some_x, some_y, some_refs, some_labels, some_index),
        case("earlier copies of the anchors in the memory", dup_x, dup_y, dup_refs, dup_labels,
             torch.arange(9, 15), exact=True, duplicates=True, exact_margin=True),
        case("exact ties (axis vectors), classes absent from the batch", axes[:9], pk(9, 3), axes[9:], pk(15, 5),
             None, exact=True, duplicates=True, exact_margin=True),
        case("references = the batch", same_x, same_y, same_x, same_y, torch.arange(7)),
        case("references without gradient (as a memory holds them)", x, y, *wrapped, frozen=(2,)),
        case("very large norms", large_x, large_y, *large),
        case("memory holding the batch, float32", x, y, *wrapped, dtype=torch.float32),
        case("memory without the batch, float32", outside_x, outside_y, *outside, None, dtype=torch.float32),
        case("only the anchors' own entries match their labels", two_x, torch.arange(4), two_x, torch.arange(4),
             torch.arange(4), empty=True),
        # anchor a's nearest references: its own entry (d = 0) and a copy of it moved by 0.003, of another class
        case("own entries next to negatives within the margin", two_x, torch.arange(4),
             torch.cat([two_x, two_x + 0.003]), torch.tensor([0, 1, 2, 3, 1, 0, 3, 2]), torch.arange(4)),
        case("no positive in the memory", two_x, two_y, randn(5, 3), torch.tensor([2, 3, 4, 2, 3]), None, empty=True),
        case("no negative in the memory", two_x, two_y, randn(5, 3), torch.zeros(5, dtype=torch.long), None,
             empty=True),
        case("M = 1", two_x, two_y, two_x[:1], two_y[:1], torch.tensor([0, -1, -1, -1]), empty=True),
    ]
    if metric != "cosine":  # integer vectors have inexact cosines: their ties would be rounding
        ints = torch.randint(-2, 3, (18, 3), generator=g).to(torch.float64)
        refs, ref_labels, slots = _memory(ints[:6], pk(6, 3), ints[6:], randint(4, 12), start=2)
        cases.insert(5, case("integer-valued embeddings", ints[:6], pk(6, 3), refs, ref_labels, slots,
                             exact=True, duplicates=True, exact_margin=True))
    return cases
