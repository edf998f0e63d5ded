"""The smallest failing batch: shrink a failing case while it still fails, and print it as Python.

`shrink(case, fails)` tries, greedily and in this order, to drop rows (halves first, then
one at a time), drop embedding columns, merge two classes, split a row into a class of its
own, renumber the labels 0, 1, ... and round the values (to integers, halves, one decimal,
then single entries to 0); every change that still fails is kept. It stops when no change
helps or after `budget` calls of `fails`. A change that creates a tie (two equal distances from one row, a
duplicate row) is skipped unless the case had ties already. Combined-loss cases are not shrunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .battery import Case

BUDGET = 120  # calls of `fails` at most (each calls the user's function once on a tiny batch)


def shrink(case: Case, fails: Callable[[Case], bool], *, budget: int = BUDGET,
           smaller: Callable[[Case], Iterator[Case]] | None = None,
           ties: Callable[[tuple[torch.Tensor, ...]], bool] | None = None) -> Case:
    """A failing case -> a smaller one that still fails (`fails(case)` is assumed True).

    smaller, ties: the one-step simplifications of a case and the tie test (default: those of
    the in-batch and naive cases, below)."""
    smaller, ties = smaller or _smaller, ties or has_ties
    calls = 0
    improved = True
    tied = ties(case.inputs)
    while improved and calls < budget:
        improved = False
        for candidate in smaller(case):
            if not tied and ties(candidate.inputs):
                continue  # a tie makes the items ambiguous and the selections' gradient incomparable
            calls += 1
            if fails(candidate):
                case, improved = candidate, True
                break
            if calls >= budget:
                break
    return case


def _with(case: Case, inputs: tuple[torch.Tensor, ...], *, rounded: bool = False) -> Case:
    """A shrunk case; rounded values are `exact` (ties compared as ties) when they hold a tie."""
    exact = has_ties(inputs) if rounded or case.exact else False
    return Case(f"{case.name}, shrunk", inputs, case.dtype, exact, case.duplicates, False, case.params)


def has_ties(inputs: tuple[torch.Tensor, ...]) -> bool:
    """Two equal distances (squared euclidean or cosine) from one row, or a duplicate row."""
    if len(inputs) == 3:
        a, p, n = (t.double() for t in inputs)
        sq = lambda u, v: (u - v).pow(2).sum(-1)  # noqa: E731
        cos = lambda u, v: torch.nn.functional.cosine_similarity(u, v, dim=-1)  # noqa: E731
        return bool((sq(a, p) == sq(a, n)).any() or (cos(a, p) == cos(a, n)).any())
    x = inputs[0].double()
    B = x.shape[0]
    off = ~torch.eye(B, dtype=torch.bool)
    if B > 2:
        unit = torch.nn.functional.normalize(x, dim=1)
        for d in ((x[:, None] - x[None]).pow(2).sum(-1), unit @ unit.T):
            rows = d[off].reshape(B, B - 1).sort(dim=1).values  # (B, B-1) each row's distances to the others
            if bool((rows[:, 1:] == rows[:, :-1]).any()):
                return True
    return bool(((x[:, None] == x[None]).all(-1) & off).any())


def _smaller(case: Case) -> Iterator[Case]:
    """Every one-step simplification of case, the biggest first."""
    triplets = len(case.inputs) == 3
    floats = case.inputs if triplets else case.inputs[:1]
    N, D = floats[0].shape
    keep_rows = lambda rows: _with(case, tuple(t[rows] for t in case.inputs))  # noqa: E731
    size = N // 2
    while size >= 1:
        for start in range(0, N, size):
            rows = [i for i in range(N) if not start <= i < start + size]
            if rows and len(rows) < N:
                yield keep_rows(rows)
        size //= 2
    for j in range(D if D > 1 else 0):
        cols = [k for k in range(D) if k != j]
        yield _with(case, tuple(t[:, cols] for t in floats) + (() if triplets else case.inputs[1:]))
    if not triplets:
        x, labels = case.inputs
        classes = labels.unique().tolist()
        for a in classes:
            for b in classes:
                if a < b:
                    yield _with(case, (x, torch.where(labels == b, a, labels)))
        for i in range(N):
            if int((labels == labels[i]).sum()) > 1:
                split = labels.clone()
                split[i] = int(labels.max()) + 1
                yield _with(case, (x, split))
        order: dict[int, int] = {}
        canonical = torch.tensor([order.setdefault(v, len(order)) for v in labels.tolist()], dtype=labels.dtype)
        if not torch.equal(canonical, labels):
            yield _with(case, (x, canonical))
    for rounding in (lambda t: t.round(), lambda t: (2 * t).round() / 2, lambda t: t.round(decimals=1)):
        rounded = tuple(rounding(t) for t in floats)
        if any(not torch.equal(r, t) for r, t in zip(rounded, floats)):
            yield _with(case, rounded + (() if triplets else case.inputs[1:]), rounded=True)
    for k, t in enumerate(floats):
        for i in range(N):
            for j in range(D):
                if t[i, j] != 0:
                    zeroed = t.clone()
                    zeroed[i, j] = 0.0
                    new = tuple(zeroed if m == k else u for m, u in enumerate(floats))
                    yield _with(case, new + (() if triplets else case.inputs[1:]), rounded=True)


def as_python(case: Case, call: str, *, variant_inputs: tuple[str, ...]) -> list[str]:
    """case, the call text (e.g. "your_loss(embeddings, labels, margin=0.2)") -> lines to paste in a test."""
    dtype = str(case.dtype)
    lines = ["import torch"]
    for name, t in zip(variant_inputs, case.inputs):
        if t.is_floating_point():
            rows = ", ".join("[" + ", ".join(_number(v) for v in row) + "]" for row in t.tolist())
            lines.append(f"{name} = torch.tensor([{rows}], dtype={dtype}, requires_grad=True)")
        else:
            lines.append(f"{name} = torch.tensor({t.tolist()})")
    lines.append(f"loss = {call}")
    return lines


def _number(v: float) -> str:
    return repr(float(v)) if v != int(v) else f"{int(v)}.0"
