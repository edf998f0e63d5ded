"""The smallest failing batch of a batch-vs-memory case: shrink.py's greedy search over anchors and references.

`refs_shrink(case, fails)` tries, in this order, to drop anchors (halves first, then one
at a time), drop references (the same), drop embedding columns and round the values (to
integers, halves, one decimal); every change that still fails is kept. anchor_index_in_refs
follows the rows: a dropped anchor takes its entry with it, a dropped reference that was an
anchor's own entry leaves that anchor outside the memory (-1). A change that creates a tie
(two equal distances from one anchor) is skipped unless the case had ties already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from .battery import Case
from .refs_battery import SELF_KEYWORD
from .shrink import BUDGET, shrink


def refs_shrink(case: Case, fails: Callable[[Case], bool], *, budget: int = BUDGET) -> Case:
    """A failing batch-vs-references case -> a smaller one that still fails (`fails(case)` is assumed True)."""
    return shrink(case, fails, budget=budget, smaller=_smaller, ties=refs_ties)


def refs_ties(inputs: tuple[torch.Tensor, ...]) -> bool:
    """Two equal distances (squared euclidean or cosine) from one anchor to two references."""
    x, _, refs, _ = (t.double() if t.is_floating_point() else t for t in inputs)
    if refs.shape[0] < 2:
        return False
    for d in ((x[:, None] - refs[None]).pow(2).sum(-1), F.normalize(x, dim=1) @ F.normalize(refs, dim=1).T):
        rows = d.sort(dim=1).values  # (B, M)
        if bool((rows[:, 1:] == rows[:, :-1]).any()):
            return True
    return False


def _with(case: Case, inputs: tuple[torch.Tensor, ...], index: torch.Tensor | None, *, rounded: bool = False) -> Case:
    exact = refs_ties(inputs) if rounded or case.exact else False
    params = {**case.params, SELF_KEYWORD: index}
    return Case(f"{case.name}, shrunk", inputs, case.dtype, exact, case.duplicates, False, params, case.frozen)


def _subsets(n: int) -> Iterator[list[int]]:
    """The rows to keep of n: without a half, a quarter, ..., then without one row."""
    size = n // 2
    while size >= 1:
        for start in range(0, n, size):
            rows = [i for i in range(n) if not start <= i < start + size]
            if rows and len(rows) < n:
                yield rows
        size //= 2


def _smaller(case: Case) -> Iterator[Case]:
    """Every one-step simplification of case, the biggest first."""
    x, labels, refs, ref_labels = case.inputs
    index = case.params.get(SELF_KEYWORD)
    for rows in _subsets(x.shape[0]):
        kept = None if index is None else index[rows]
        yield _with(case, (x[rows], labels[rows], refs, ref_labels), kept)
    for cols in _subsets(refs.shape[0]):
        if index is None:
            kept = None
        else:  # old column -> new column, -1 where dropped
            new = torch.full((refs.shape[0] + 1,), -1, dtype=torch.long)
            new[torch.tensor(cols)] = torch.arange(len(cols))
            kept = new[index]  # index -1 reads new[-1] = -1
        yield _with(case, (x, labels, refs[cols], ref_labels[cols]), kept)
    D = x.shape[1]
    for j in range(D if D > 1 else 0):
        keep = [k for k in range(D) if k != j]
        yield _with(case, (x[:, keep], labels, refs[:, keep], ref_labels), index)
    for rounding in (lambda t: t.round(), lambda t: (2 * t).round() / 2, lambda t: t.round(decimals=1)):
        a, r = rounding(x), rounding(refs)
        if not (torch.equal(a, x) and torch.equal(r, refs)):
            yield _with(case, (a, labels, r, ref_labels), index, rounded=True)
