"""The checker's batch-vs-memory targets (*_refs): the family equals our *_refs losses on the memory battery,
each memory fault of the gallery is flagged with its diagnosis, ours and correct user functions conform."""

from __future__ import annotations

import functools

import pytest
import torch

import losses
from losses.testing import assert_conforms, check_loss
from losses.testing.refs_battery import SELF_KEYWORD, refs_cases
from losses.testing.refs_target import REFS_VARIANTS
from losses.testing.targets import make_target
from tests import conformance_gallery_memory as gallery
from tripletlab.cli import main

OURS = {"batch_all_refs": losses.batch_all_triplet_loss_refs, "batch_hard_refs": losses.batch_hard_triplet_loss_refs,
        "batch_hard_soft_refs": losses.batch_hard_triplet_loss_refs,
        "semi_hard_tf_refs": losses.semi_hard_triplet_loss_refs, "semi_hard_pml_refs": losses.semi_hard_triplet_loss_refs}


def _value_and_grads(loss, case):
    inputs = tuple(t.clone().requires_grad_(i not in case.frozen) if t.is_floating_point() else t
                   for i, t in enumerate(case.inputs))
    value = loss(inputs)
    floats = [t for t in inputs if t.is_floating_point() and t.requires_grad]
    grads = torch.autograd.grad(value, floats, allow_unused=True) if value.requires_grad else [None] * len(floats)
    return value, [torch.zeros_like(t) if g is None else g for t, g in zip(floats, grads)]


@pytest.mark.parametrize("variant", REFS_VARIANTS)
@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "cosine"])
def test_the_memory_family_without_faults_is_the_reference_on_every_batch(variant, metric):
    target = make_target(variant, metric=metric, margin=0.3, reduction=None, semantics=None)
    for case in target.cases(margin_settable=True):
        ref, ref_grads = _value_and_grads(target.reference(case), case)
        fam, fam_grads = _value_and_grads(target.candidate(case, {}), case)
        torch.testing.assert_close(fam, ref, rtol=1e-9, atol=1e-12, msg=case.name)
        if target.compares_gradient(case):
            for g, r in zip(fam_grads, ref_grads):
                torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10, msg=case.name)


def test_the_memory_battery_covers_what_a_memory_does():
    cases = refs_cases("euclidean", margin_settable=True)
    shapes = {(c.inputs[0].shape[0], c.inputs[2].shape[0]) for c in cases}
    assert any(b != m for b, m in shapes)  # M != B
    wrapped = cases[0]
    index = wrapped.params[SELF_KEYWORD]
    assert int(index[0]) > 0 and not torch.equal(index, torch.arange(len(index)))  # the batch is not references[:B]
    assert any(c.params[SELF_KEYWORD] is None for c in cases)  # memories without the batch
    assert any(bool(set(c.inputs[3].tolist()) - set(c.inputs[1].tolist())) for c in cases)  # classes absent from it
    assert any(c.duplicates and c.exact for c in cases) and any(c.frozen == (2,) for c in cases)
    assert any(c.params[SELF_KEYWORD] is not None and bool((c.params[SELF_KEYWORD] < 0).any()) for c in cases)


FAULTS = [
    (gallery.self_not_excluded, "batch_all_refs", "the anchor's own entry in the references counts as its positive"),
    (gallery.self_excluded_by_position, "batch_hard_refs", "self comparisons excluded by position"),
    (gallery.negatives_from_the_batch, "batch_all_refs", "negatives taken from the batch only"),
    (gallery.references_detached, "batch_hard_refs", "references detached inside the loss"),
]


@pytest.mark.parametrize("fn, as_, diagnosis", FAULTS, ids=[f[0].__name__ for f in FAULTS])
def test_each_memory_fault_is_flagged_with_its_diagnosis(fn, as_, diagnosis):
    report = check_loss(fn, as_=as_)
    assert not report.conforms
    assert any(diagnosis in d for d in report.diagnoses), report.summary()
    with pytest.raises(AssertionError, match="does NOT conform"):
        assert_conforms(fn, as_=as_)


def test_the_in_batch_loss_in_place_of_the_memory_loss_is_named():
    def in_batch(anchors, labels, references, reference_labels, *, anchor_index_in_refs, margin, metric, reduction):
        return losses.batch_hard_triplet_loss(anchors, labels, margin=margin, metric=metric, reduction=reduction)

    report = check_loss(in_batch, as_="batch_hard_refs")
    assert not report.conforms and any("references are not used" in d for d in report.diagnoses), report.summary()


@pytest.mark.parametrize("as_", REFS_VARIANTS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ours_conform_against_a_memory(as_, reduction):
    for metric in ("euclidean", "squared_euclidean", "cosine"):
        report = assert_conforms(OURS[as_], as_=as_, metric=metric, reduction=reduction)
        assert all(r.ok for r in report.results)


@pytest.mark.parametrize("fn, as_", [(gallery.correct_batch_all_refs, "batch_all_refs"),
                                     (gallery.correct_batch_hard_refs, "batch_hard_refs")])
def test_correct_user_memory_losses_conform(fn, as_):
    report = assert_conforms(fn, as_=as_)
    assert not report.diagnoses and all(r.ok for r in report.results)


def test_the_self_index_is_required_and_can_be_renamed():
    def no_index(anchors, labels, references, reference_labels, margin=0.2):
        return anchors.sum()

    with pytest.raises(ValueError, match="must take \\['anchor_index_in_refs'\\]"):
        check_loss(no_index, as_="batch_all_refs")

    def renamed(a, y, r, ry, *, own, margin):
        return losses.batch_all_triplet_loss_refs(a, y, r, ry, anchor_index_in_refs=own, margin=margin,
                                                  metric="euclidean")

    assert check_loss(renamed, as_="batch_all_refs", keywords={SELF_KEYWORD: "own"}).conforms
    with pytest.raises(ValueError, match="cannot be called as batch_all_refs"):
        check_loss(lambda x, y, *, anchor_index_in_refs: x.sum(), as_="batch_all_refs")


def test_semi_hard_refs_takes_the_semantics():
    fn = losses.semi_hard_triplet_loss_refs
    assert check_loss(fn, as_="semi_hard_refs", semantics="pml").variant == "semi_hard_pml_refs"
    report = check_loss(fn, as_="semi_hard_refs", semantics="tf", extra={"semantics": "pml"},
                        keywords={"semantics": None})
    assert not report.conforms and any("PML semi-hard semantics" in d for d in report.diagnoses), report.summary()


def test_check_command_against_a_memory(capsys):
    assert main(["check", "losses:batch_hard_triplet_loss_refs", "--as", "batch_hard_soft_refs"]) == 0
    assert "conforms to batch_hard_soft_refs" in capsys.readouterr().out
    assert main(["check", "tests.conformance_gallery_memory:self_not_excluded", "--as", "batch_all_refs"]) == 1
    assert "own entry in the references counts as its positive" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        main(["check", "losses:batch_all_triplet_loss_refs", "--as", "batch_all_ref"])
    assert err.value.code == 2 and "did you mean 'batch_all_refs'" in capsys.readouterr().err


def pml_refs(as_: str, metric: str):
    """PML's loss between a batch and references, the anchors' own entries removed from the mined
    triplets afterwards (what its CrossBatchMemory does with `remove_self_comparisons`)."""
    from pytorch_metric_learning import losses as pml_losses
    from pytorch_metric_learning import miners, reducers
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

    from tests.test_memory_crosscheck import DifferenceLpDistance

    def loss(anchors, labels, references, reference_labels, *, anchor_index_in_refs, margin):
        distance = (CosineSimilarity() if metric == "cosine" else
                    DifferenceLpDistance(normalize_embeddings=False, p=2, power=2 if metric == "squared_euclidean" else 1))
        if as_ == "batch_hard_refs":
            a, p, n = miners.BatchHardMiner(distance=distance)(anchors, labels, references, reference_labels)
        elif as_ == "semi_hard_pml_refs":
            miner = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=distance)
            a, p, n = miner(anchors, labels, references, reference_labels)
        else:
            a, p, n = lmu.get_all_triplets_indices(labels, reference_labels)
        if anchor_index_in_refs is not None:
            keep = p != anchor_index_in_refs[a]
            a, p, n = a[keep], p[keep], n[keep]
        reducer = reducers.MeanReducer() if as_ == "batch_hard_refs" else reducers.AvgNonZeroReducer()
        fn = pml_losses.TripletMarginLoss(margin=margin, distance=distance, reducer=reducer)
        return fn(anchors, labels, (a, p, n), references, reference_labels)
    return loss


@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "cosine"])
@pytest.mark.parametrize("as_", ["batch_all_refs", "batch_hard_refs", "semi_hard_pml_refs"])
def test_pml_with_its_self_comparison_rule_conforms(as_, metric):
    assert_conforms(pml_refs(as_, metric), as_=as_, metric=metric, margin=0.3)


@pytest.mark.parametrize("fn, as_, _", FAULTS, ids=[f[0].__name__ for f in FAULTS])
def test_the_smallest_failing_memory_batch_pastes_and_still_fails(fn, as_, _):
    report = check_loss(fn, as_=as_)
    assert report.smallest_batch and report.smallest_rows < 8, report.summary()
    reduction = "mean_positive" if as_ == "batch_all_refs" else "mean"
    ours = functools.partial(OURS[as_], metric="euclidean", reduction=reduction)
    found = []
    for name in (fn.__name__, "ours"):  # the report's lines, then the same call of our loss
        space = {fn.__name__: fn, "ours": ours}
        lines = report.smallest_batch[:-1] + [report.smallest_batch[-1].replace(f"{fn.__name__}(", f"{name}(", 1)]
        exec("\n".join(lines), space)  # noqa: S102 - the report's own lines
        inputs = [space["anchors"], space["references"]]
        grads = torch.autograd.grad(space["loss"], inputs, allow_unused=True)
        found.append((float(space["loss"].detach()), [torch.zeros_like(t) if g is None else g
                                                      for t, g in zip(inputs, grads)]))
    (value, grads), (ours_value, ours_grads) = found
    differs = [not torch.allclose(a, b) for a, b in zip(grads, ours_grads)]
    assert value != pytest.approx(ours_value) or any(differs)
