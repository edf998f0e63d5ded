"""The batches the checker runs: each built to expose one kind of bug.

Every batch is deterministic (fixed seeds). "Exact" batches hold values whose
distances are exact in float64 and float32 (small integers, axis vectors, and the
sign vectors (+-1, +-1, +-1, +-1), whose L2-normalised forms are exact too), so equal
distances are exactly equal in any implementation and the boundary rules
(d_an == d_ap, d_an == d_ap + margin with margin 1) are tested, not rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

EXACT_MARGIN = 1.0  # margin of the exact batches, when the function takes a margin


@dataclass(frozen=True)
class Case:
    """One batch: float64 `inputs` (embeddings, labels) or (anchor, positive, negative).

    dtype: the dtype the user's function receives (the reference is always float64).
    exact: distances exact, with ties; the tie-breaking gradient of a selection is
        not compared there (which of two tied negatives gets it is a free choice).
    duplicates: holds identical embeddings. empty: no valid item (the loss is 0).
    params: settings that replace the checked ones for this batch (e.g. margin 1), and the
        keywords that vary by batch (a memory's anchor_index_in_refs).
    frozen: positions of float inputs passed without requires_grad (a memory's detached
        references); their gradient is neither asked for nor compared.
    """

    name: str
    inputs: tuple[torch.Tensor, ...]
    dtype: torch.dtype = torch.float64
    exact: bool = False
    duplicates: bool = False
    empty: bool = False
    params: dict = field(default_factory=dict)
    frozen: tuple[int, ...] = ()


def exact_pool() -> torch.Tensor:
    """(8, 4) vectors with exact norms: two axis vectors (scaled 1 and 2) and sign vectors."""
    rows = [[1, 0, 0, 0], [0, 2, 0, 0], [1, 1, 1, 1], [1, -1, 1, -1], [-1, -1, 1, 1],
            [0, 0, -1, 0], [2, 2, -2, 2], [0, 0, 0, 2]]
    return torch.tensor(rows, dtype=torch.float64)


def batch_cases(metric: str, *, margin_settable: bool) -> list[Case]:
    """Cases for the batch variants (embeddings (B, D), labels (B,)); see the module docstring."""
    g = torch.Generator().manual_seed(20260)
    randn = lambda *shape: torch.randn(*shape, dtype=torch.float64, generator=g)  # noqa: E731
    pk = lambda b, k: torch.arange(b) % k  # noqa: E731
    exact = {"margin": EXACT_MARGIN} if margin_settable else {}
    pool = exact_pool()
    # within-class duplicates (rows 0 and 3) and cross-class ones (rows 0 and 10, 8 and 9, 2 and 7)
    dup_rows = pool[[0, 1, 2, 0, 3, 1, 4, 2, 5, 5, 0, 6]]
    axes = torch.zeros(15, 3, dtype=torch.float64)
    axes[torch.arange(15), torch.randint(0, 3, (15,), generator=g)] = torch.tensor(
        [1.0, -2.0, 2.0, -1.0, 1.0] * 3, dtype=torch.float64)
    pk_x = randn(16, 8)
    large = 1e3 * randn(12, 6)
    centres = 4.0 * torch.eye(3, 5, dtype=torch.float64)
    separated = centres[pk(12, 3)] + 0.1 * randn(12, 5)  # every hinge < 0: the loss is 0 with valid items
    near = randn(5, 3)
    near[4] = near[0] + 0.003  # a singleton within any margin of row 0: (a, a, n) triplets would count
    cases = [
        Case("P x K random", (pk_x, pk(16, 4))),
        Case("random labels", (randn(14, 5), torch.randint(0, 4, (14,), generator=g))),
        Case("duplicate embeddings", (dup_rows, pk(12, 3)), exact=True, duplicates=True, params=exact),
        Case("exact ties (axis vectors)", (axes, pk(15, 3)), exact=True, duplicates=True, params=exact),
        Case("singleton classes", (randn(9, 3), torch.tensor([0, 0, 1, 2, 2, 3, 4, 4, 5]))),
        Case("separated classes", (separated, pk(12, 3))),
        Case("singleton near a negative", (near, torch.tensor([0, 0, 1, 1, 2])), params=exact),
        Case("one class", (randn(6, 3), torch.full((6,), 7)), empty=True),
        Case("all classes distinct", (randn(6, 3), torch.arange(6)), empty=True),
        Case("B = 1", (randn(1, 3), torch.zeros(1, dtype=torch.long)), empty=True),
        Case("B = 2", (randn(2, 3), torch.zeros(2, dtype=torch.long)), empty=True),
        Case("very large norms", (large, pk(12, 3))),
        Case("very small norms", (1e-3 * randn(12, 6), pk(12, 3))),
        Case("P x K random, float32", (pk_x, pk(16, 4)), dtype=torch.float32),
        Case("very large norms, float32", (large, pk(12, 3)), dtype=torch.float32),
    ]
    if metric != "cosine":  # integer vectors have inexact cosines: their ties would be rounding
        ints = torch.randint(-2, 3, (12, 3), generator=g).to(torch.float64)
        cases.insert(4, Case("integer-valued embeddings", (ints, pk(12, 4)), exact=True, duplicates=True, params=exact))
    return cases


def naive_cases(metric: str, *, margin_settable: bool) -> list[Case]:
    """Cases for explicit triplets (anchor, positive, negative), each (N, D), from the batch cases.

    Each batch case gives its real triplets (`_triplets_of`); a batch without any gives
    none. "N = 1" and "N = 2" are the first one and two triplets of "P x K random".
    """
    cases = []
    for case in batch_cases(metric, margin_settable=margin_settable):
        x, labels = case.inputs
        a, p, n = _triplets_of(x, labels)
        if a.shape[0] == 0:
            continue  # "no valid triplet" does not exist for explicit triplets
        cases.append(Case(case.name, (a, p, n), case.dtype, case.exact, case.duplicates, False, case.params))
    first = cases[0]
    for k in (1, 2):
        cases.append(Case(f"N = {k}", tuple(t[:k] for t in first.inputs)))
    return cases


def _triplets_of(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, D), labels (B,) -> (a, p, n) (N, D) each: for every row i with a positive and a negative,
    the next row (cyclically) of i's class (never i) and the next row of another class.

    Rows without another row of their class, or without another class, give no triplet.
    """
    B = x.shape[0]
    if B < 2:
        return x[:0], x[:0], x[:0]
    rows = torch.arange(B)
    offsets = torch.arange(1, B)  # (B-1,) offsets 1..B-1, so the anchor itself is never chosen
    other = (rows[:, None] + offsets[None, :]) % B  # (B, B-1) the other rows, in cyclic order from i
    same = labels[other] == labels[:, None]  # (B, B-1)
    has_p, has_n = same.any(dim=1), (~same).any(dim=1)  # (B,)
    keep = has_p & has_n
    p = other.gather(1, same.to(torch.uint8).argmax(dim=1, keepdim=True))[:, 0]  # first same-class row
    n = other.gather(1, (~same).to(torch.uint8).argmax(dim=1, keepdim=True))[:, 0]  # first other-class row
    return x[keep], x[p[keep]], x[n[keep]]
