"""check_loss: run a user's loss on the battery, compare with ours in float64, diagnose mismatches."""

from __future__ import annotations

import inspect
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from .battery import Case
from .explain import describe, gradient_hypothesis, item_search
from .probes import probe
from .refs_shrink import refs_shrink
from .refs_target import RefsTarget
from .shrink import as_python, shrink
from .targets import Target, TripletTarget, make_target

VALUE_TOL = {torch.float64: (1e-6, 1e-9), torch.float32: (1e-4, 1e-6)}  # (relative, absolute)
GRAD_TOL = {torch.float64: (1e-6, 1e-9), torch.float32: (1e-3, 1e-6)}  # relative to the largest entry


@dataclass
class CaseResult:
    """One battery case: the user's value against ours, and what went wrong (if anything)."""

    case: str
    dtype: str
    expected: float
    value: float | None = None
    value_ok: bool = False
    grad_ok: bool | None = None  # None: not compared (tied selection, or no gradient to compare)
    grad_error: float | None = None  # largest |gradient - ours| / largest |ours|
    problem: str | None = None  # "error", "not a scalar", "non-finite value", "non-finite gradient", "detached"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None and self.value_ok and self.grad_ok is not False


@dataclass
class ConformanceReport:
    """The outcome of check_loss: `conforms`, one CaseResult per case, plain-word diagnoses."""

    function: str
    variant: str
    settings: dict
    conforms: bool
    results: list[CaseResult]
    diagnoses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # probes of the behaviour, the gradient's roles
    smallest_batch: list[str] = field(default_factory=list)  # Python lines reproducing the smallest failing batch
    smallest_rows: int | None = None
    smallest_details: list[str] = field(default_factory=list)  # its items and gradient rows

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        """Valid JSON: NaN and infinities become null."""
        return json.dumps(_finite(self.to_dict()), indent=2, default=str, allow_nan=False)

    def summary(self) -> str:
        """Readable text: verdict, diagnoses, notes, then a line per failing case."""
        settings = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        verdict = "conforms" if self.conforms else "does NOT conform"
        lines = [f"{self.function} {verdict} to {self.variant} ({settings}): "
                 f"{sum(r.ok for r in self.results)}/{len(self.results)} cases pass"]
        lines += [f"  diagnosis: {d}" for d in self.diagnoses]
        lines += [f"  finding: {f}" for f in self.findings]
        lines += [f"  note: {n}" for n in self.notes]
        if self.smallest_batch:
            lines.append(f"  smallest failing batch ({self.smallest_rows} rows), to paste into a test:")
            lines += [f"      {line}" for line in self.smallest_batch]
            lines += [f"    {line}" for line in self.smallest_details]
        for r in self.results:
            if not r.ok:
                got = "-" if r.value is None else f"{r.value:.10g}"
                what = r.problem or ("value" if not r.value_ok else f"gradient (off by {r.grad_error:.2g} relative)")
                lines.append(f"  - {r.case} [{r.dtype}]: {what}; got {got}, expected {r.expected:.10g}"
                             + (f" ({r.detail})" if r.detail else ""))
        return "\n".join(lines)


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def check_loss(
    fn: Callable,
    *,
    as_: str,
    metric: str = "euclidean",
    margin: float = 0.2,
    reduction: str | None = None,
    semantics: str | None = None,
    keywords: dict[str, str | None] | None = None,
    extra: dict | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> ConformanceReport:
    """fn, variant name -> ConformanceReport: `fn` checked against our `as_` loss on the battery.

    as_: naive, batch_all, batch_hard, batch_hard_soft, semi_hard_tf, semi_hard_pml
    (or semi_hard with semantics "tf" / "pml"), or combined (a combining function, see
    losses.testing.targets), or a batch variant against a memory: batch_all_refs,
    batch_hard_refs, batch_hard_soft_refs, semi_hard_tf_refs, semi_hard_pml_refs (or
    semi_hard_refs with semantics). fn takes (embeddings, labels), naive (anchor, positive,
    negative), the *_refs variants (anchors, labels, references, reference_labels) and the
    keyword anchor_index_in_refs (as losses.batch_all_triplet_loss_refs; see
    losses.testing.refs_target), and returns a scalar tensor. reduction: None = the variant's usual one
    (ablations' choice: batch_all and semi_hard_pml "mean_positive", else "mean").
    The settings margin, metric, reduction, semantics (and soft=True for batch_hard_soft,
    w_* for combined) are passed by keyword to fn when its signature has a parameter
    of that name; `keywords` renames them ({"margin": "alpha"}) or, mapped to None,
    stops one from being passed (fn has it built in); `extra` adds fixed keywords.
    Nothing is passed positionally but the tensors. progress(i, n, case name) is called before
    each battery case. A class instead of an instance, or a signature that cannot take the
    variant's tensors and keywords, raises ValueError (nothing to check).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add overhead (4 s instead of 20 ms, measured)
    try:
        return _check(fn, as_, metric, margin, reduction, semantics, keywords, extra, progress)
    finally:
        torch.set_num_threads(threads)


def _check(fn, as_, metric, margin, reduction, semantics, keywords, extra, progress=None) -> ConformanceReport:
    target = make_target(as_, metric=metric, margin=margin, reduction=reduction, semantics=semantics)
    call_keywords, names = _keyword_plan(fn, {**target.settings, **target.per_case}, keywords or {}, extra or {})
    if target.required_keywords:
        missing = [k for k in target.required_keywords if k not in names]
        if missing:
            raise ValueError(f"as_={target.variant!r}: fn must take {missing} (or map them with keywords)")
    _callable_as(fn, target, call_keywords)
    cases = target.cases(margin_settable="margin" in names)
    results, outputs = [], []
    for i, case in enumerate(cases):
        if progress is not None:
            progress(i + 1, len(cases), case.name)
        case_keywords = {**call_keywords, **{names[k]: v for k, v in case.params.items() if k in names}}
        result, out = _run_case(fn, target, case, case_keywords)
        results.append(result)
        outputs.append(out)
    report = ConformanceReport(_name(fn), target.variant, dict(target.settings), all(r.ok for r in results), results)
    report.notes += _tie_notes(target, cases, results)
    if target.settings.get("margin") is not None and "margin" not in names:
        report.notes.append(f"{report.function} takes no margin parameter (none was passed): it is checked at "
                            f"margin {target.settings['margin']:g} only; map yours with keywords / --map margin=NAME")
    if report.conforms:
        return report
    report.diagnoses, reproduced, changes = _diagnose(target, cases, results, outputs)
    if isinstance(target, (TripletTarget, RefsTarget)):
        reproduced = _explain_more(report, fn, target, cases, results, outputs, call_keywords, names,
                                   changes) and reproduced
    failing = [c for c, r in zip(cases, results) if not r.ok]
    if not reproduced and all(c.exact and r.problem is None for c, r in zip(cases, results) if not r.ok):
        report.conforms = True  # only exact ties differ, and no rule applied the other way explains it
        report.notes.append(
            f"differs only on exact ties ({_names(failing)}), where rounding decides (e.g. PML's squared "
            f"distance is cdist(x, x)^2, 5.000000000000001 for 5, and its AvgNonZeroReducer counts a 1e-15 "
            f"hinge); no boundary rule applied the other way reproduces it: {'; '.join(report.diagnoses)}")
        report.diagnoses = []
    return report


def _case_keywords(call_keywords: dict, names: dict, case: Case) -> dict:
    return {**call_keywords, **{names[k]: v for k, v in case.params.items() if k in names}}


def _failure_kind(result: CaseResult) -> str | None:
    if result.ok:
        return None
    return result.problem or ("value" if not result.value_ok else "gradient")


def _explain_more(report, fn, target, cases, results, outputs, call_keywords, names, changes) -> bool:
    """Probes, the gradient's roles (in-batch variants) and the smallest failing batch, added to report;
    -> False when a reproduced known fault does not reproduce the smallest failing batch (a coincidence of
    the battery)."""
    float64 = [(c, r, o) for c, r, o in zip(cases, results, outputs) if c.dtype == torch.float64]
    if isinstance(target, TripletTarget):
        _probe_and_roles(report, fn, target, float64, call_keywords, names)
    failing = [(c, r) for c, r, _ in float64 if not r.ok and not c.empty] or \
              [(c, r) for c, r in zip(cases, results) if not r.ok and not c.empty]
    if not failing:
        return True
    return _smallest_batch(report, fn, target, min(failing, key=lambda cr: (cr[0].exact, cr[0].inputs[0].shape[0])),
                           call_keywords, names, changes)


def _probe_and_roles(report, fn, target, float64, call_keywords, names) -> None:
    """The probes of the behaviour and the gradient's roles, added to report.findings."""
    nontrivial = [(c, r) for c, r, _ in float64 if not c.empty]

    def value_of(inputs, margin):
        case = Case("probe", inputs, params={"margin": margin})
        try:
            _, out = call_user(fn, case, _case_keywords(call_keywords, names, case))
            return float(out.detach()) if isinstance(out, torch.Tensor) and out.numel() == 1 else None
        except (Exception, SystemExit):  # noqa: BLE001 - a probe the function cannot take tells nothing
            return None

    report.findings += probe(target, [c for c, _ in nontrivial], [r.value for _, r in nontrivial], value_of,
                             margin_passed="margin" in names)
    gradient_only = [(c, o[1]) for c, r, o in float64
                     if o is not None and o[1] is not None and r.value_ok and r.grad_ok is False]
    words = gradient_hypothesis(target, gradient_only)
    if words:
        report.findings.append(words)


def _smallest_batch(report, fn, target, failing: tuple[Case, CaseResult], call_keywords, names, changes) -> bool:
    """A failing case, shrunk while it fails the same way, as Python lines and its items, added to report;
    -> False when none of the reproducing faults `changes` reproduces it."""
    case, result = failing
    kind = _failure_kind(result)
    nonzero = (result.value != 0, result.expected != 0)

    def still_fails(c: Case) -> bool:  # the same kind of failure, and neither value becomes 0 (keeps gradients)
        if kind == "value":  # no gradients needed
            try:
                _, out = call_user(fn, c, _case_keywords(call_keywords, names, c))
                value = float(out.detach()) if isinstance(out, torch.Tensor) and out.numel() == 1 else None
            except (Exception, SystemExit):  # noqa: BLE001 - another kind of failure
                return False
            with torch.no_grad():
                expected = float(target.candidate(c, {})(c.inputs))
            return (value is not None and math.isfinite(value) and not _value_close(value, expected, c.dtype)
                    and (value != 0, expected != 0) == nonzero)
        r = _run_case(fn, target, c, _case_keywords(call_keywords, names, c), family=True)[0]
        return _failure_kind(r) == kind and (r.value != 0, r.expected != 0) == nonzero

    small = (refs_shrink if isinstance(target, RefsTarget) else shrink)(case, still_fails)
    small_result, small_out = _run_case(fn, target, small, _case_keywords(call_keywords, names, small))
    inputs = tuple(target.input_names.split(", "))
    keywords = ", ".join(f"{k}={_literal(v)}" for k, v in _case_keywords(call_keywords, names, small).items())
    call = f"{report.function.rpartition(':')[2]}({', '.join(inputs)}{', ' + keywords if keywords else ''})"
    report.smallest_batch = as_python(small, call + f"  # ours: {small_result.expected:.10g}, yours: "
                                      + ("-" if small_result.value is None else f"{small_result.value:.10g}"),
                                      variant_inputs=inputs)
    report.smallest_rows = int(small.inputs[0].shape[0])
    if small_result.problem:
        report.smallest_details.append(f"{small_result.problem}: {small_result.detail}")
    elif isinstance(target, TripletTarget):
        ref_value, ref_grads = _value_and_grads(target.reference(small), fresh_inputs(small, torch.float64))
        grads = small_out[1] if small_out is not None and target.compares_gradient(small) else None
        report.smallest_details += describe(target, small, small_result.value, grads, float(ref_value), ref_grads)
        found = item_search(target, small, small_result.value)
        if found:
            report.smallest_details.append(found)
    if changes and small_out is not None and not any(
            _matches(target, small, ch, small_out[0], small_out[1]) for ch in changes):
        report.diagnoses = [d if "reproduced on every batch" not in d else
                            d.replace("(reproduced on every batch;", "(coincides on every battery batch, but NOT on "
                                      "the smallest failing batch below, so it is not the cause;")
                            for d in report.diagnoses]
        return False
    return True


def _literal(value) -> str:
    """A keyword's value as Python source: a tensor as torch.tensor([...]), anything else by repr."""
    return f"torch.tensor({value.tolist()})" if isinstance(value, torch.Tensor) else repr(value)


def assert_conforms(fn: Callable, *, as_: str, **options) -> ConformanceReport:
    """As check_loss; raises AssertionError with the diagnoses unless fn conforms (for pytest)."""
    report = check_loss(fn, as_=as_, **options)
    if not report.conforms:
        raise AssertionError(report.summary())
    return report


def _callable_as(fn, target: Target, call_keywords: dict) -> None:
    """ValueError unless fn(*tensors, **call_keywords) binds: a class, or a signature that does not fit."""
    if isinstance(fn, type):
        raise ValueError(f"{_name(fn)} is a class; pass an instance ({fn.__name__}()) or a function")
    if not callable(fn):
        raise ValueError(f"{_name(fn)} is a {type(fn).__name__}, not a callable")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: its calls will tell
    inputs = target.input_names
    try:
        signature.bind(*inputs.split(", "), **call_keywords)
    except TypeError as err:
        passed = ", ".join(f"{k}=..." for k in call_keywords)
        raise ValueError(f"{_name(fn)}{signature} cannot be called as {target.variant}, "
                         f"fn({inputs}{', ' + passed if passed else ''}): {err}") from None


def _name(fn: Callable) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}:{name}" if module else name


def _keyword_plan(fn, settings: dict, keywords: dict, extra: dict) -> tuple[dict, dict]:
    """-> ({parameter name of fn: value}, {setting: parameter name}): the settings fn accepts
    (renamed per `keywords`), then `extra`."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(keywords) - set(settings))
    if unknown:
        raise ValueError(f"keywords: unknown setting(s) {unknown}; valid: {sorted(settings)}")
    plan, names = {}, {}
    for name, value in settings.items():
        target = keywords.get(name, name)
        if target is None:
            continue
        if name in keywords and not (target in params or var_kw):
            raise ValueError(f"keywords: {name}={target!r}, but {_name(fn)} has no parameter {target!r}; "
                             f"its parameters: {list(params)}")
        if target in params or (var_kw and name in keywords):
            plan[target], names[name] = value, target
    return {**plan, **extra}, names


def fresh_inputs(case: Case, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """A new copy of case's tensors for one call: floats cast to `dtype` (default the case's),
    detached leaves with requires_grad (but those of case.frozen); integers cloned. In-place
    writes by the callee cannot reach the battery."""
    dtype = case.dtype if dtype is None else dtype
    return tuple(t.detach().to(dtype, copy=True).requires_grad_(i not in case.frozen) if t.is_floating_point()
                 else t.clone() for i, t in enumerate(case.inputs))


def _differentiable(inputs) -> list[torch.Tensor]:
    """The inputs whose gradient is compared: the float ones that require it."""
    return [t for t in inputs if t.is_floating_point() and t.requires_grad]


def call_user(fn, case: Case, call_keywords: dict, dtype: torch.dtype | None = None):
    """fn on fresh copies of case -> (inputs, output) or raises what fn raises."""
    inputs = fresh_inputs(case, dtype)
    return inputs, fn(*inputs, **call_keywords)


def user_gradients(out: torch.Tensor, inputs) -> list[torch.Tensor]:
    """d out / d each input that requires grad (zeros where unused), float64; raises what backward raises."""
    floats = _differentiable(inputs)
    grads = torch.autograd.grad(out.reshape(()), floats, allow_unused=True)
    return [torch.zeros_like(t, dtype=torch.float64) if g is None else g.double() for t, g in zip(floats, grads)]


def _run_case(fn, target: Target, case: Case, call_keywords: dict, *, family: bool = False):
    """fn called with call_keywords on case -> (CaseResult, (user value float64 or None, user gradients or None)).

    family: compare with the mask-form family without faults (equal to the reference on the battery,
    tests/test_conformance.py; faster on the tiny batches of shrinking) instead of our loss."""
    reference = target.candidate(case, {}) if family else target.reference(case)
    ref_value, ref_grads = _value_and_grads(reference, fresh_inputs(case, torch.float64))
    result = CaseResult(case.name, str(case.dtype).replace("torch.", ""), float(ref_value))
    try:
        inputs, out = call_user(fn, case, call_keywords)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - a user's exception (or exit) is a finding, not a crash
        result.problem, result.detail = "error", f"{type(err).__name__}: {err}"
        return result, None
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        result.problem = "not a scalar"
        result.detail = f"returned {type(out).__name__}" + (f" of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else "")
        return result, None
    result.value = float(out.detach())
    result.value_ok = _value_close(result.value, float(ref_value), case.dtype)
    if not math.isfinite(result.value):
        result.problem = "non-finite value"
        return result, (result.value, None)
    if not out.requires_grad:
        result.problem = "detached"
        result.detail = "the value is not attached to the inputs' graph: backward() fails"
        return result, (result.value, None)
    try:
        grads = user_gradients(out, inputs)
    except Exception as err:  # noqa: BLE001 - a backward that fails is a finding too
        result.problem = "backward error"
        result.detail = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return result, (result.value, None)
    if not all(bool(torch.isfinite(g).all()) for g in grads):
        bad = sum(int((~torch.isfinite(g)).sum()) for g in grads)
        result.problem = "non-finite gradient"
        result.detail = f"{bad} NaN/inf gradient entries"
        return result, (result.value, None)
    if target.compares_gradient(case):
        err, scale = _grad_error(grads, ref_grads)
        rtol, atol = GRAD_TOL[case.dtype]
        result.grad_error = err / scale if scale > 0 else err
        result.grad_ok = err <= atol + rtol * scale
        if not result.grad_ok and case.exact and target.kink_reference(case) is not None:
            _, kink_grads = _value_and_grads(target.kink_reference(case), fresh_inputs(case, torch.float64))
            kink_err, _ = _grad_error(grads, kink_grads)
            result.grad_ok = kink_err <= atol + rtol * scale  # relu'(0) = 1 at a hinge exactly 0: also valid
    return result, (result.value, grads)


def _value_and_grads(loss_fn, inputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    floats = _differentiable(inputs)
    value = loss_fn(inputs)
    grads = torch.autograd.grad(value, floats, allow_unused=True) if value.requires_grad else [None] * len(floats)
    return value.detach(), [torch.zeros_like(t) if g is None else g for t, g in zip(floats, grads)]


def _tie_notes(target: Target, cases: list[Case], results: list[CaseResult]) -> list[str]:
    skipped = [c.name for c, r in zip(cases, results) if r.grad_ok is None and r.problem is None and c.exact]
    if not skipped or not target.selects:
        return []
    return [f"gradients not compared on {', '.join(skipped)}: the loss selects among exactly tied "
            f"distances there, and which of them takes the gradient is a free choice (ours: the first index)"]


def _names(cases: list[Case]) -> str:
    return ", ".join(c.name for c in cases)


def _diagnose(target: Target, cases: list[Case], results: list[CaseResult], outputs):
    """Failing results -> (plain-word likely causes, whether a known fault reproduces fn on every batch,
    the Spec changes of the faults that do)."""
    out = []
    by_problem: dict[str, list[Case]] = {}
    for case, r in zip(cases, results):
        if r.problem:
            by_problem.setdefault(r.problem, []).append(case)
    for problem, failing in by_problem.items():
        out.append(_problem_words(problem, failing, results, cases, target))
    # value or gradient off (a NaN gradient with a wrong value counts too: its value is explained)
    mismatched = [c for c, r in zip(cases, results)
                  if not r.ok and (r.problem is None or (r.problem == "non-finite gradient" and not r.value_ok))]
    float64 = [(c, o) for c, o in zip(cases, outputs) if c.dtype == torch.float64 and o is not None]
    reproduced, changes = False, []
    probed = target.probe(cases, [r.value for r in results])
    out += probed
    if any(c.dtype == torch.float64 for c in mismatched):
        words, reproduced, changes = _explain(target, float64, [c for c in mismatched if c.dtype == torch.float64])
        if not (probed and not reproduced):
            out.append(words)
    elif mismatched:
        names = _names(mismatched)
        out.append(f"correct in float64 but not within float32 tolerance on {names}: a precision loss "
                   f"(e.g. |a|^2 + |b|^2 - 2ab on uncentred large vectors, or a float32 accumulator)")
    return out, reproduced, changes


def _problem_words(problem: str, failing: list[Case], results, cases, target: Target) -> str:
    names = _names(failing)
    if problem == "non-finite gradient":
        if any(not c.duplicates and not c.empty for c in failing):
            return (f"NaN or infinite gradient on {names}: square root without a safe gradient at 0 "
                    f"(the diagonal d(i, i) = 0 or a duplicate reaches sqrt; add epsilon only where the "
                    f"distance is 0, or mask before the root)")
        return (f"NaN or infinite gradient on duplicate embeddings ({names}): square root without a safe "
                f"gradient at 0")
    expected = {c.name: r.expected for c, r in zip(cases, results)}
    if problem == "non-finite value":
        if all(c.empty or expected[c.name] == 0 for c in failing):
            none = "" if all(c.empty for c in failing) else " (or with none active)"
            return (f"NaN or inf value on batches without any valid {target.items}{none} ({names}): a mean divides "
                    f"by a zero count; return an attached 0 ((embeddings * 0).sum())")
        return f"NaN or inf value on {names}"
    if problem == "detached":
        where = (" without any valid item" if all(c.empty for c in failing) else
                 " where the loss is 0 (without any valid item, or with none active)"
                 if all(c.empty or expected[c.name] == 0 for c in failing) else "")
        return (f"value not attached to the graph on {names}{where}: return (embeddings * 0).sum(), "
                f"never a new constant tensor, so backward() works on every batch")
    details = {r.detail for c, r in zip(cases, results) if r.problem == problem}
    return f"{problem} on {names}: {'; '.join(sorted(details))[:300]}"


def _explain(target: Target, float64, mismatched: list[Case]) -> tuple[str, bool, list[dict]]:
    """-> (words, reproduced, the Spec changes that reproduce): the known faults (or pair of faults) that
    reproduce fn on every float64 batch."""
    names = _names(mismatched)
    where = f"(reproduced on every batch; fn differs from the reference on {names})"
    candidates = target.candidates()
    matches = lambda changes, k: _matches(target, float64[k][0], changes, *float64[k][1])  # noqa: E731
    found = [(words, changes) for words, changes in candidates if all(matches(changes, k) for k in range(len(float64)))]
    if found:
        return f"{' -- or, equivalently here -- '.join(w for w, _ in found)} {where}", True, [c for _, c in found]
    pairs = [(i, j) for i, j in itertools.combinations(range(len(candidates)), 2)
             if not set(candidates[i][1]) & set(candidates[j][1])]
    for i, j in pairs:
        merged = {**candidates[i][1], **candidates[j][1]}
        if all(_matches(target, case, merged, value, grads) for case, (value, grads) in float64):
            return f"two faults: {candidates[i][0]}; and {candidates[j][0]} {where}", True, [merged]
    # closest: a fault that reproduces every non-trivial batch (the empty ones, where every fault gives 0, do not count)
    nontrivial = [k for k, (case, _) in enumerate(float64) if not case.empty]
    closest = ""
    for words, changes in candidates:
        if nontrivial and all(matches(changes, k) for k in nontrivial):
            off = _names([float64[k][0] for k in range(len(float64)) if k not in nontrivial and not matches(changes, k)])
            closest = f"; closest known fault: {words} (reproduces every non-trivial batch; not {off})"
            break
    return f"no known fault reproduces it: differs from the reference on {names}{closest}", False, []


def _matches(target: Target, case: Case, changes: dict, value: float, grads) -> bool:
    """Does the faulty spec `changes` give fn's value (and gradient, where compared) on case?"""
    inputs = fresh_inputs(case, torch.float64)
    try:
        cand_value, cand_grads = _value_and_grads(target.candidate(case, changes), inputs)
    except Exception:  # noqa: BLE001 - a fault that cannot run on this batch does not match
        return False
    if not math.isfinite(float(cand_value)) or not _value_close(value, float(cand_value), torch.float64):
        return False
    if grads is None or not target.compares_gradient(case):
        return True
    err, scale = _grad_error(grads, cand_grads)
    return err <= 1e-9 + 1e-6 * scale


def _value_close(value: float, reference: float, dtype: torch.dtype) -> bool:
    """Is a finite value within VALUE_TOL[dtype] of the reference?"""
    rtol, atol = VALUE_TOL[dtype]
    return math.isfinite(value) and abs(value - reference) <= atol + rtol * abs(reference)


def _grad_error(grads, reference) -> tuple[float, float]:
    """gradients, the reference's -> (largest absolute difference, largest reference entry)."""
    scale = max(float(g.abs().max()) if g.numel() else 0.0 for g in reference)
    err = max(float((g - r).abs().max()) if g.numel() else 0.0 for g, r in zip(grads, reference))
    return err, scale
