"""Probes of a failing triplet loss's behaviour, from its values on the battery's non-trivial batches.

Each probe calls the user's function on transformed inputs (or compares with our loss on
transformed inputs) and names the transformation that makes the two agree, when one does:
the margin (does it reach the function? which margin agrees?), a permutation of the rows
and a relabelling (invariances), L2-normalised rows, the distance squared or square-rooted,
labels seen as one class or as all distinct, positives and negatives swapped, a constant
factor, and a divisor (B, B^2, the number of items, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .battery import Case
from .family import family_items, family_loss

# value_of(inputs, margin) -> the user's value (float; None when it fails) on fresh copies of inputs
ValueOf = Callable[[tuple, float], "float | None"]


def _close(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= 1e-9 + 1e-6 * abs(b)


def probe(target, cases: list[Case], values: list[float | None], value_of: ValueOf, *, margin_passed: bool) -> list[str]:
    """Non-trivial float64 cases, the user's values on them -> plain-word findings."""
    pairs = [(c, v) for c, v in zip(cases, values) if v is not None]
    if not pairs:
        return []
    out = []
    spec_of = lambda c, **ch: target.spec.but(**{"margin": c.params.get("margin", target.spec.margin), **ch})  # noqa: E731
    ours = lambda c, inputs=None, **ch: float(family_loss(inputs or c.inputs, spec_of(c, **ch)))  # noqa: E731
    if all(_close(v, ours(c)) for c, v in pairs):
        return []
    naive = target.variant == "naive"
    soft = target.variant == "batch_hard_soft"
    if all(v == 0 for _, v in pairs):
        words = ("as ours is with every row in one class, or every row in its own class: the label masks leave no "
                 "valid item (y[None] == y[None]? use y[:, None] == y[None, :])" if not naive else
                 "no triplet is ever active")
        return [f"the value is 0 on every non-trivial batch ({len(pairs)}; ours is not), {words}"]
    first = pairs[0][0]
    m = first.params.get("margin", target.spec.margin)
    if not soft:
        out += _margin_probe(target, pairs, ours, value_of, first, m, margin_passed)
    x_first = first.inputs
    if not naive:
        x, y = x_first
        perm = torch.arange(len(y) - 1, -1, -1)
        permuted = value_of((x[perm], y[perm]), m)
        if permuted is not None and not _close(permuted, pairs[0][1]):
            out.append(f"not invariant to a permutation of the rows: {pairs[0][1]:.6g} on {first.name}, "
                       f"{permuted:.6g} with its rows reversed (ours does not change): the loss depends on the "
                       f"order of the batch (a loop over a range that skips rows, or labels compared by position)")
        relabelled = value_of((x, 3 * (int(y.max()) - y) + 5), m)
        if relabelled is not None and not _close(relabelled, pairs[0][1]):
            out.append(f"not invariant to relabelling: {pairs[0][1]:.6g} on {first.name}, {relabelled:.6g} with the "
                       f"labels renamed 3 * (max - y) + 5 (ours does not change): the label values are used, not "
                       f"only their equality (labels as indices, or a one-hot of fixed size)")
    agree = _transformations(target, pairs, ours, value_of, naive)
    out += agree
    return out


def _margin_probe(target, pairs, ours, value_of, first: Case, m: float, margin_passed: bool) -> list[str]:
    out = []
    other = m + 0.35
    if margin_passed:
        moved = value_of(first.inputs, other)
        if moved is not None and _close(moved, pairs[0][1]) and not _close(ours(first, margin=other), ours(first)):
            out.append(f"the value does not change with the margin ({pairs[0][1]:.6g} at margin {m:g} and at "
                       f"{other:g}, on {first.name}): the margin passed never reaches the computation (a "
                       f"hard-coded margin, or a parameter that is not used)")
    else:
        out.append("the function takes no margin parameter, so the checker cannot pass or vary it: every batch is "
                   f"checked at margin {target.spec.margin:g} (map it with --map margin=NAME if it has another name)")
    for words, margin_of in [("-margin", lambda c: -c.params.get("margin", target.spec.margin)),
                             *[(f"{k:g}", (lambda k: lambda c: k)(k)) for k in (1.0, 0.5, 0.1, 0.3, 0.05, 2.0, 0.0)]]:
        if all(_close(v, ours(c, margin=margin_of(c))) for c, v in pairs):
            if words == "-margin":
                out.append("agrees with ours at margin -margin on every non-trivial batch: the margin's sign is "
                           "flipped (d_ap - d_an - margin instead of d_ap - d_an + margin?)")
            else:
                out.append(f"agrees with ours at margin {words} on every non-trivial batch, whatever margin it is "
                           f"given: a hard-coded margin {words}")
            break
    return out


def _transformations(target, pairs, ours, value_of, naive: bool) -> list[str]:
    out = []
    metric = target.spec.metric
    unit = lambda inputs: tuple(F.normalize(t, dim=-1) if t.is_floating_point() else t for t in inputs)  # noqa: E731
    checks = [("it equals ours on L2-normalised rows: it normalises the embeddings itself (a cosine-style or "
               "normalised distance where the unnormalised one was asked)", lambda c: ours(c, unit(c.inputs)), None)]
    checks.append(("it is right on L2-normalised rows only: it assumes unit-norm embeddings (e.g. 1 - x @ x.T "
                   "without normalising the rows first)", lambda c: ours(c, unit(c.inputs)), lambda c: unit(c.inputs)))
    if metric == "euclidean":
        checks.append(("it equals ours with the distance squared: it skips the square root",
                       lambda c: ours(c, metric="squared_euclidean"), None))
    if metric == "squared_euclidean":
        checks.append(("it equals ours with the distance square-rooted: it takes a square root that was not asked",
                       lambda c: ours(c, metric="euclidean"), None))
    if naive:
        checks.append(("it equals ours with positive and negative swapped: the arguments are read in another "
                       "order (anchor, negative, positive?)", lambda c: ours(c, (c.inputs[0], c.inputs[2], c.inputs[1])),
                       None))
    else:
        same = lambda c: (c.inputs[0], torch.zeros_like(c.inputs[1]))  # noqa: E731
        distinct = lambda c: (c.inputs[0], torch.arange(len(c.inputs[1])))  # noqa: E731
        checks.append(("it equals ours with every row in one class: every pair is seen as same-class, so the label "
                       "comparison does not build a (B, B) mask (y[None] == y[None]? use y[:, None] == y[None, :])",
                       lambda c: ours(c, same(c)), None))
        checks.append(("it equals ours with every row in its own class: no pair is seen as same-class (labels "
                       "compared after a cast, or against the wrong axis)", lambda c: ours(c, distinct(c)), None))
    for words, expected, transform in checks:
        if transform is None:
            ok = all(_close(v, expected(c)) for c, v in pairs)
        else:
            ok = all(_close(value_of(transform(c), c.params.get("margin", target.spec.margin)), expected(c))
                     for c, _ in pairs)
        if ok:
            out.append(words)
    if target.variant not in ("semi_hard_pml", "batch_hard_soft"):
        out += _hinge_probes(target, pairs, naive)
    ratio = _constant_factor(pairs, ours)
    if ratio is not None:
        out.append(ratio)
    divisor = _divisor(target, pairs, naive)
    if divisor is not None:
        out.append(divisor)
    return out


def _constant_factor(pairs, ours) -> str | None:
    factors = [(v / r) for c, v in pairs if (r := ours(c)) != 0]
    if len(factors) < 2 or any(abs(f - factors[0]) > 1e-6 * abs(factors[0]) for f in factors) or abs(factors[0] - 1) < 1e-6:
        return None
    if abs(factors[0] + 1) < 1e-6:
        return "it is minus ours on every non-trivial batch: the sign of the loss is flipped"
    return f"it is {factors[0]:.6g} times ours on every non-trivial batch: a constant factor (a fixed divisor or weight)"


def _divisor(target, pairs, naive: bool) -> str | None:
    """The value is the sum of our items divided by some count other than ours."""
    named = []
    for c, v in pairs:
        spec = target.spec.but(margin=c.params.get("margin", target.spec.margin))
        items, rows = family_items(c.inputs, spec)
        total = float(items.sum())
        B = c.inputs[0].shape[0]
        counts = {"the batch size B": B, "B^2": B * B, "B^3": B ** 3, "B (B - 1)": B * (B - 1),
                  f"the number of {target.items} (loss 0 included)": len(items),
                  f"the number of {target.items} with loss > 0": int((items > 0).sum()),
                  "the number of anchors with an item": len(set(rows[:, 0].tolist())) if len(rows) else 0}
        if not naive:
            labels = c.inputs[1]
            same = labels[:, None] == labels[None, :]
            counts["the number of positive pairs"] = int(same.sum()) - B
            counts["the number of valid (a, p, n) triplets"] = int(((same.sum(1) - 1) * (~same).sum(1)).sum())
        named.append((v, total, counts))
    own = {"mean": f"the number of {target.items} (loss 0 included)",
           "mean_positive": f"the number of {target.items} with loss > 0", "sum": None}[target.spec.reduction]
    for name in named[0][2]:
        if name == own:
            continue
        if all(counts[name] > 0 and _close(v, total / counts[name]) for v, total, counts in named if total != 0) \
                and sum(1 for _, total, _ in named if total != 0) >= 2:
            return (f"it is the sum over our {target.items} divided by {name}; ours divides by "
                    f"{own or 'nothing (a sum)'}")
    return None


def _hinge_probes(target, pairs, naive: bool) -> list[str]:
    """Our items' raw d_ap - d_an (selections that do not depend on the margin) under other hinges."""
    big = 1e6

    def raw(c):
        spec = target.spec.but(margin=big)
        items, _ = family_items(c.inputs, spec)
        return items - big, c.params.get("margin", target.spec.margin)

    def reduce(per):
        if per.numel() == 0:
            return 0.0
        if target.spec.reduction == "sum":
            return float(per.sum())
        count = per.numel() if target.spec.reduction == "mean" else int((per > 0).sum())
        return float(per.sum()) / count if count else 0.0

    checks = [("it equals ours without the hinge per item: items with d_ap - d_an + margin < 0 count with their "
               "negative value (the relu / clamp_min(0) is missing)", lambda r, m: reduce(r + m)),
              ("it equals the hinge applied once, after the reduction: relu(mean(d_ap - d_an + margin)) instead of "
               "the mean of relu(d_ap - d_an + margin) per item", lambda r, m: max(reduce(r + m), 0.0)
               if r.numel() else 0.0)]
    if not naive and target.variant == "batch_all":
        checks.append(("it equals ours with the roles of positive and negative exchanged, relu(d_an - d_ap + margin): "
                       "a (B, B, B) mask whose p and n axes are swapped against the hinge's [a, p, n]",
                       lambda r, m: reduce(torch.relu(-r + m))))
    out = []
    for words, value in checks:
        if all(_close(v, value(*raw(c))) for c, v in pairs):
            out.append(words)
    return out
