"""Where a triplet loss goes wrong: the items of a (small) batch and the gradient's rows and roles.

`role_gradients` splits our gradient by role with four copies of the rows (anchors on the
d_ap side, positives, anchors on the d_an side, negatives; losses.testing.family.family_items
with roles=True), so a user's gradient can be matched against "ours without the part through
d_an" and the like. `describe` lists, on one batch, our items in reduction="none" order with
what is special about them, and the rows whose gradient differs with their roles.
"""

from __future__ import annotations

import itertools

import torch

from ..reductions import reduce_losses
from .battery import Case
from .family import Spec, distances, family_items

# a component set of our gradient -> what it means when a user's gradient equals it
ROLE_HYPOTHESES = [
    (("a_p", "p"), "the gradient through d_an is missing: the negatives get none and the anchors are not pushed "
                   "away from them (yours equals ours without the d_an term): is d_an detached?"),
    (("a_n", "n"), "the gradient through d_ap is missing: the positives get none and the anchors are not pulled "
                   "towards them (yours equals ours without the d_ap term): is d_ap detached?"),
    (("a_p", "p", "a_n"), "the gradient reaching the negatives is 0 (the anchors still get theirs from d_an): is "
                          "the negatives' embedding detached?"),
    (("a_p", "a_n", "n"), "the gradient reaching the positives is 0 (the anchors still get theirs from d_ap): is "
                          "the positives' embedding detached?"),
    (("p", "n"), "the anchors get no gradient (the positives and negatives do): is the anchor side detached, "
                 "e.g. a distance to anchor.detach()?"),
    ((), "no gradient reaches any row, although the value is right: the value is computed outside autograd "
         "(a detached copy, .item() or NumPy) and re-attached as a constant"),
]


def spec_of(target, case: Case) -> Spec:
    return target.spec.but(margin=case.params.get("margin", target.spec.margin))


def role_gradients(target, case: Case) -> dict[str, list[torch.Tensor]]:
    """case -> {"a_p", "p", "a_n", "n": our gradient reaching that role, laid out as case's float inputs}."""
    spec = spec_of(target, case)
    if target.variant == "naive":
        a, p, n = (t.detach().double() for t in case.inputs)
        copies = tuple(t.clone().requires_grad_(True) for t in (a, p, a, n))
        layout = {"a_p": 0, "p": 1, "a_n": 0, "n": 2}
        shapes = [a, p, n]
        items, _ = family_items(copies, spec, roles=True)
    else:
        x, labels = case.inputs
        copies = tuple(x.detach().double().clone().requires_grad_(True) for _ in range(4))
        layout = {"a_p": 0, "p": 0, "a_n": 0, "n": 0}
        shapes = [x]
        items, _ = family_items((*copies, labels), spec, roles=True)
    loss = reduce_losses(items, reduction=spec.reduction, anchor=copies[0])
    grads = torch.autograd.grad(loss, copies, allow_unused=True) if loss.requires_grad else [None] * 4
    out = {}
    for (role, slot), copy, g in zip(layout.items(), copies, grads):
        parts = [torch.zeros_like(t, dtype=torch.float64) for t in shapes]
        parts[slot] = torch.zeros_like(copy) if g is None else g.detach()
        out[role] = parts
    return out


def close(grads, reference, *, scale: float) -> bool:
    return all(float((g - r).abs().max()) <= 1e-9 + 1e-6 * scale if g.numel() else True
               for g, r in zip(grads, reference))


def gradient_hypothesis(target, failing: list[tuple[Case, list[torch.Tensor]]]) -> str | None:
    """[(case whose value is right but gradient wrong, the user's gradients)] -> the role hypothesis that
    explains every one, or a constant factor, or None."""
    if not failing:
        return None
    parts = [(role_gradients(target, case), grads) for case, grads in failing]
    for roles, words in ROLE_HYPOTHESES:
        if all(_matches_roles(split, grads, roles) for split, grads in parts):
            return words
    factors = []
    for split, grads in parts:
        ours = torch.cat([sum(split[r][k] for r in split).flatten() for k in range(len(grads))])
        yours = torch.cat([g.flatten() for g in grads])
        if float(ours.norm()) == 0:
            return None
        c = float(yours @ ours / (ours @ ours))
        if float((yours - c * ours).abs().max()) > 1e-9 + 1e-6 * float(ours.abs().max()):
            return None
        factors.append(c)
    if max(factors) - min(factors) <= 1e-6 * max(abs(f) for f in factors):
        c = factors[0]
        if abs(c + 1) < 1e-6:
            return "the gradient is ours with the opposite sign (the value is right): a sign flipped in a custom backward"
        return (f"the gradient is {c:.6g} times ours on every failing batch although the value is right: part of "
                f"the value is detached (e.g. a count or a normaliser that depends on the embeddings)")
    return (f"the gradient is proportional to ours on each failing batch, by a factor that varies "
            f"({min(factors):.3g} to {max(factors):.3g}): a detached normaliser")


def _matches_roles(split, grads, roles) -> bool:
    reference = [sum((split[r][k] for r in roles), torch.zeros_like(grads[k])) for k in range(len(grads))]
    total = [sum(split[r][k] for r in split) for k in range(len(grads))]
    scale = max(float(t.abs().max()) for t in total)
    return scale > 0 and close(grads, reference, scale=scale) and not close(grads, total, scale=scale)


def describe(target, case: Case, value: float | None, grads, ref_value: float, ref_grads) -> list[str]:
    """One (small) failing batch -> lines: value vs gradient, our items with what is special, the rows
    whose gradient differs with their roles in our items."""
    spec = spec_of(target, case)
    inputs = tuple(t.detach().double() if t.is_floating_point() else t for t in case.inputs)
    items, rows = family_items(inputs, spec)
    naive = target.variant == "naive"
    x = None if naive else inputs[0]
    labels = None if naive else inputs[1]
    lines = []
    value_ok = value is not None and abs(value - ref_value) <= 1e-9 + 1e-6 * abs(ref_value)
    grad_diff = None
    if grads is not None:
        scale = max(float(r.abs().max()) if r.numel() else 0.0 for r in ref_grads)
        grad_diff = [(g - r).abs().amax(dim=1) > 1e-9 + 1e-6 * scale for g, r in zip(grads, ref_grads)]
    grad_ok = grad_diff is not None and not any(bool(d.any()) for d in grad_diff)
    what = ("the value and the gradient both differ" if not value_ok and grad_diff is not None and not grad_ok
            else "the value differs" + (" (the gradient agrees)" if grad_ok else "") if not value_ok
            else "the value agrees but the gradient differs")
    yours = "-" if value is None else f"{value:.6g}"
    lines.append(f"{what}: yours {yours}, ours {ref_value:.6g}")
    kinds = {"naive": "triplets (a, p, n) by row", "batch_all": "triplets (a, p, n)",
             "batch_hard": "anchors (a, hardest p, hardest n)", "batch_hard_soft": "anchors (a, hardest p, hardest n)",
             "semi_hard_tf": "positive pairs (a, p, chosen n)", "semi_hard_pml": "semi-hard triplets (a, p, n)"}
    shown = [(tuple(r.tolist()), float(v)) for r, v in zip(rows, items.detach())]
    active = [s for s in shown if s[1] > 0] if target.variant == "batch_all" else shown
    if not shown:
        lines.append(f"ours has no {target.items} in this batch (the loss is 0)")
    else:
        listed = [f"{r} {v:.6g}{_special(r, inputs, spec, naive)}" for r, v in active[:8]]
        more = len(active) - len(listed)
        rest = f" (+{more} more)" if more > 0 else ""
        zeros = f"; {len(shown) - len(active)} more with loss 0" if len(active) < len(shown) else ""
        lines.append(f"our {kinds[target.variant]}, reduction='none' order: " + "; ".join(listed) + rest + zeros)
    if not naive:
        notes = _batch_notes(x, labels)
        if notes:
            lines.append("this batch: " + "; ".join(notes))
    if grad_diff is not None and not grad_ok:
        lines += _gradient_rows(target, inputs, rows, items, grads, ref_grads, grad_diff, naive)
    return lines


def _special(r, inputs, spec: Spec, naive: bool) -> str:
    """' [tie d_ap == d_an, duplicate rows]' or ''."""
    a, p, n = r
    if naive:
        ua, up, un = inputs[0][a], inputs[1][p], inputs[2][n]
        d_ap, d_an = float(distances(ua, up, spec)), float(distances(ua, un, spec))
        dup = torch.equal(ua, up) or torch.equal(ua, un) or torch.equal(up, un)
    else:
        x = inputs[0]
        d_ap, d_an = float(distances(x[a], x[p], spec)), float(distances(x[a], x[n], spec))
        dup = torch.equal(x[a], x[p]) or torch.equal(x[a], x[n]) or torch.equal(x[p], x[n])
    marks = []
    if d_ap == d_an:
        marks.append("tie d_ap == d_an")
    if spec.variant != "batch_hard_soft" and d_an == d_ap + spec.margin:
        marks.append("on the margin d_an == d_ap + margin")
    if dup:
        marks.append("duplicate rows")
    return f" [{', '.join(marks)}]" if marks else ""


def _batch_notes(x: torch.Tensor, labels: torch.Tensor) -> list[str]:
    out = []
    counts = {int(c): int((labels == c).sum()) for c in labels.unique()}
    single = [i for i, c in enumerate(labels.tolist()) if counts[c] == 1]
    if single:
        out.append(f"row(s) {single} alone in their class (no positive)")
    if len(counts) == 1:
        out.append("one class (no negative)")
    dups = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x)) if torch.equal(x[i], x[j])]
    if dups:
        out.append("duplicate rows " + ", ".join(f"{i} = {j}" for i, j in dups))
    return out


def _gradient_rows(target, inputs, rows, items, grads, ref_grads, grad_diff, naive) -> list[str]:
    names = ("anchor", "positive", "negative") if naive else ("x",)
    lines = []
    used = [(tuple(r.tolist()), float(v)) for r, v in zip(rows, items.detach())]
    for k, (diff, g, r) in enumerate(zip(grad_diff, grads, ref_grads)):
        bad = diff.nonzero()[:, 0].tolist()
        if not bad:
            continue
        parts = []
        scale = max(float(t.abs().max()) if t.numel() else 0.0 for t in ref_grads)
        tiny = 1e-9 + 1e-6 * scale
        for i in bad[:6]:
            roles = _roles(i, used, naive, k)
            ours_zero = float(r[i].abs().max()) <= tiny
            yours_zero = float(g[i].abs().max()) <= tiny
            label = f"{names[k]} row {i}" if naive else f"row {i}" + (f" (class {int(inputs[1][i])})")
            if ours_zero and not yours_zero:
                where = roles or "in no item of ours with loss > 0"
                parts.append(f"{label} gets a gradient from yours but none from ours (in ours it is {where}"
                             f"{_unchosen(target, i, inputs, used) if not naive else ''})")
            elif yours_zero and not ours_zero:
                parts.append(f"{label} gets no gradient from yours; ours sends it one as {roles}")
            else:
                parts.append(f"{label} ({roles or 'no role'}): yours {_vec(g[i])}, ours {_vec(r[i])}")
        lines.append(f"gradient differs on {len(bad)} of {len(diff)} rows: " + "; ".join(parts))
    return lines


def _roles(i: int, used, naive: bool, k: int) -> str:
    if naive:
        return ", ".join(f"{('anchor', 'positive', 'negative')[k]} of triplet {j}" for j, (r, v) in enumerate(used)
                         if r[k] == i and v > 0)
    words = []
    for role, name in ((0, "anchor"), (1, "positive"), (2, "negative")):
        of = sorted({r[0] for r, v in used if r[role] == i and v > 0})
        if of:
            words.append(name if role == 0 else f"{name} of anchor(s) {of}")
    return ", ".join(words)


def _unchosen(target, i: int, inputs, used) -> str:
    """Why row i gets no gradient of ours: the positive / negative of some anchor, not the one ours selects."""
    if target.variant not in ("batch_hard", "batch_hard_soft", "semi_hard_tf", "semi_hard_pml"):
        return ""
    labels = inputs[1]
    anchors = sorted({r[0] for r, _ in used})
    pos_of = [a for a in anchors if a != i and labels[a] == labels[i] and all(r[1] != i for r, _ in used if r[0] == a)]
    neg_of = [a for a in anchors if labels[a] != labels[i] and all(r[2] != i for r, _ in used if r[0] == a)]
    words = []
    if pos_of:
        chosen = sorted({r[1] for r, _ in used if r[0] in pos_of})
        words.append(f"a positive of anchor(s) {pos_of} that ours does not select (ours: rows {chosen})")
    if neg_of:
        chosen = sorted({r[2] for r, _ in used if r[0] in neg_of})
        words.append(f"a negative of anchor(s) {neg_of} that ours does not select (ours: rows {chosen})")
    return ("; " + "; ".join(words)) if words else ""


def _vec(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in t.tolist()[:6]) + ("" if t.numel() <= 6 else ", ...") + "]"


MAX_COMBINATIONS = 4096


def item_search(target, case: Case, value: float | None) -> str | None:
    """On a small batch: the items (by rows) yours must hold to give its value, where they differ from ours.

    Selections (batch_hard: the positive and negative of each anchor; semi_hard_tf: the negative of
    each pair) are searched per item; sets (batch_all, semi_hard_pml: which valid triplets count)
    over the subsets of the valid triplets. Values only, under our reduction; None when nothing fits
    or the search is too large.
    """
    if value is None or target.variant in ("naive",):
        return None
    spec = spec_of(target, case)
    x, labels = (t.detach().double() if t.is_floating_point() else t for t in case.inputs)
    d = distances(x[:, None, :], x[None, :, :], spec)  # (B, B)
    items, rows = family_items((x, labels), spec)
    ours = [tuple(r) for r in rows.tolist()]
    same = labels[:, None] == labels[None, :]
    B = len(labels)
    pos = [[p for p in range(B) if same[a, p] and p != a] for a in range(B)]
    neg = [[n for n in range(B) if not same[a, n]] for a in range(B)]
    hinge = (lambda t: torch.nn.functional.softplus(t)) if target.variant == "batch_hard_soft" else torch.relu
    m = 0.0 if target.variant == "batch_hard_soft" else spec.margin

    def reduced(triplets) -> float:
        if not triplets:
            return 0.0
        t = torch.tensor(triplets)
        per = hinge(d[t[:, 0], t[:, 1]] - d[t[:, 0], t[:, 2]] + m)
        if spec.reduction == "sum":
            return float(per.sum())
        count = len(per) if spec.reduction == "mean" else int((per > 0).sum())
        return float(per.sum()) / count if count else 0.0

    fits = lambda v: abs(v - value) <= 1e-9 + 1e-6 * abs(value)  # noqa: E731
    if fits(reduced(ours)):
        return None
    if target.variant in ("batch_hard", "batch_hard_soft", "semi_hard_tf"):
        choices = [[(a, p2, n2) for p2 in (pos[a] if target.variant != "semi_hard_tf" else [p]) for n2 in neg[a]]
                   for a, p, n in ours]
        total = 1
        for c in choices:
            total *= len(c)
        if not ours or total > MAX_COMBINATIONS:
            return None
        best = None
        for combo in itertools.product(*choices):
            if fits(reduced(list(combo))):
                changed = [(o, c) for o, c in zip(ours, combo) if o != c]
                if best is None or len(changed) < len(best):
                    best = changed
        if not best:
            return None
        parts = [_selection_words(o, c, d, target.variant) for o, c in best]
        return "its value is what ours gives with other selections: " + "; ".join(parts)
    valid = [(a, p, n) for a in range(B) for p in pos[a] for n in neg[a]]
    if not valid or len(valid) > 12:
        return None
    best = None
    for k in range(len(valid) + 1):
        for subset in itertools.combinations(valid, k):
            if fits(reduced(list(subset))):
                diff = set(subset) ^ set(ours)
                if best is None or len(diff) < len(best[1]):
                    best = (subset, diff)
    if best is None:
        return None
    subset, _ = best
    extra = [t for t in subset if t not in ours]
    missing = [t for t in ours if t not in subset]
    words = []
    if extra:
        words.append("it counts " + ", ".join(f"{t} [{_kind(t, d, spec.margin)}]" for t in extra) + ", which ours leaves out")
    if missing:
        words.append("it leaves out " + ", ".join(f"{t} [{_kind(t, d, spec.margin)}]" for t in missing) + ", which ours counts")
    return "its value is what ours gives with other triplets (a, p, n): " + "; ".join(words)


def _kind(t, d, margin: float) -> str:
    a, p, n = t
    d_ap, d_an = float(d[a, p]), float(d[a, n])
    if d_an < d_ap:
        return f"hard: d_an {d_an:.3g} < d_ap {d_ap:.3g}"
    if d_an == d_ap:
        return "tie: d_an == d_ap"
    if d_an <= d_ap + margin:
        return f"semi-hard: d_ap {d_ap:.3g} < d_an {d_an:.3g} <= d_ap + margin"
    return f"easy: d_an {d_an:.3g} > d_ap + margin (loss 0)"


def _extreme(d, a: int, yours: int, ours: int) -> str:
    """', nearer' or ', farther': where yours lies against ours."""
    return ", nearer" if float(d[a, yours]) < float(d[a, ours]) else ", farther"


def _selection_words(ours, yours, d, variant: str) -> str:
    a, p, n = ours
    _, p2, n2 = yours
    out = []
    if p2 != p:
        out.append(f"positive row {p2} (d = {float(d[a, p2]):.4g}{_extreme(d, a, p2, p)}) instead of row {p} "
                   f"(d = {float(d[a, p]):.4g}, the hardest = farthest)")
    if n2 != n:
        rule = "the hardest = nearest" if variant.startswith("batch_hard") else "the nearest farther than p, else the farthest"
        out.append(f"negative row {n2} (d = {float(d[a, n2]):.4g}{_extreme(d, a, n2, n)}) instead of row {n} "
                   f"(d = {float(d[a, n]):.4g}, {rule})")
    return f"for {'anchor ' + str(a) if variant.startswith('batch_hard') else f'pair ({a}, {p})'}: " + " and ".join(out)
