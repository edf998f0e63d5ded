"""losses.testing: the fault family equals the reference, the report, keyword mapping, bad input; the CLI."""

from __future__ import annotations

import json

import pytest
import torch

import losses
from losses.testing import check_loss
from losses.testing.battery import batch_cases, naive_cases
from losses.testing.family import CHECKED_VARIANTS
from losses.testing.targets import make_target
from tests import conformance_gallery as gallery
from tests.test_conformance_gallery import pml_batch_all
from tripletlab.cli import main


@pytest.mark.parametrize("variant", CHECKED_VARIANTS)
@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "cosine"])
def test_the_family_without_faults_is_the_reference_on_every_batch(variant, metric):
    target = make_target(variant, metric=metric, margin=0.3, reduction=None, semantics=None)
    cases = (naive_cases if variant == "naive" else batch_cases)(metric, margin_settable=True)
    for case in cases:
        values = []
        for loss in (target.reference(case), target.candidate(case, {})):
            inputs = tuple(t.clone().requires_grad_(True) if t.is_floating_point() else t for t in case.inputs)
            value = loss(inputs)
            floats = [t for t in inputs if t.is_floating_point()]
            grads = torch.autograd.grad(value, floats, allow_unused=True)
            values.append((value, [torch.zeros_like(t) if g is None else g for t, g in zip(floats, grads)]))
        (ref, ref_grads), (fam, fam_grads) = values
        torch.testing.assert_close(fam, ref, rtol=1e-9, atol=1e-12, msg=case.name)
        if target.compares_gradient(case):
            for g, r in zip(fam_grads, ref_grads):
                torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10, msg=case.name)


def test_every_battery_kind_is_there():
    names = {c.name for c in batch_cases("euclidean", margin_settable=True)}
    for kind in ("P x K random", "random labels", "duplicate embeddings", "exact ties", "integer-valued",
                 "singleton classes", "one class", "all classes distinct", "B = 1", "B = 2", "very large norms",
                 "very small norms", "float32"):
        assert any(kind in n for n in names), kind


def test_keyword_mapping_renamed_dropped_and_extra():
    def renamed(x, y, *, alpha, distance):
        return losses.batch_hard_triplet_loss(x, y, margin=alpha, metric=distance)

    assert check_loss(renamed, as_="batch_hard", margin=0.3, keywords={"margin": "alpha", "metric": "distance"}).conforms

    def built_in(x, y, margin=0.5):  # margin fixed by the user: not passed when dropped
        return losses.batch_hard_triplet_loss(x, y, margin=margin, metric="euclidean")

    assert check_loss(built_in, as_="batch_hard", margin=0.5, keywords={"margin": None}).conforms
    off = check_loss(built_in, as_="batch_hard", margin=0.2, keywords={"margin": None})
    assert not off.conforms and off.diagnoses

    def needs_flag(x, y, *, margin, squared):
        return losses.batch_all_triplet_loss(x, y, margin=margin, metric="squared_euclidean" if squared else "euclidean")

    assert check_loss(needs_flag, as_="batch_all", extra={"squared": False}).conforms


@pytest.mark.parametrize("call, message", [
    (lambda: check_loss(gallery.correct_batch_all, as_="batch_al"), "unknown as_"),
    (lambda: check_loss(gallery.correct_batch_all, as_="batch_all", keywords={"margn": "m"}), "unknown setting"),
    (lambda: check_loss(gallery.correct_batch_all, as_="batch_all", keywords={"margin": "m"}), "no parameter 'm'"),
    (lambda: check_loss(gallery.correct_batch_all, as_="batch_all", semantics="tf"), "does not fit"),
    (lambda: check_loss(gallery.correct_batch_all, as_="batch_all", reduction="none"), "unknown reduction"),
    (lambda: check_loss(gallery.correct_batch_all, as_="combined"), "must take"),
])
def test_bad_settings_are_value_errors_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_errors_non_scalars_and_detached_zeros_are_findings_not_crashes():
    def raising(x, y, margin):
        raise RuntimeError("boom")

    report = check_loss(raising, as_="batch_all")
    assert not report.conforms and "RuntimeError: boom" in report.summary()

    def as_float(x, y, margin):
        return float(losses.batch_all_triplet_loss(x, y, margin=margin, metric="euclidean").detach())

    assert any("not a scalar" in d for d in check_loss(as_float, as_="batch_all").diagnoses)

    def detached_zero(x, y, margin):
        loss = losses.batch_all_triplet_loss(x, y, margin=margin, metric="euclidean")
        return loss if float(loss.detach()) > 0 else torch.tensor(0.0)

    report = check_loss(detached_zero, as_="batch_all")
    assert any("not attached to the graph" in d and "without any valid item" in d for d in report.diagnoses)


def test_report_json_and_summary():
    report = check_loss(gallery.mean_over_all_triplets, as_="batch_all")
    data = json.loads(report.to_json())
    assert data["conforms"] is False and data["variant"] == "batch_all" and data["diagnoses"] == report.diagnoses
    assert len(data["results"]) == len(report.results) and "does NOT conform" in report.summary()


def test_rounding_on_exact_ties_alone_is_a_note_not_a_failure():
    report = check_loss(pml_batch_all("squared_euclidean"), as_="batch_all", metric="squared_euclidean")
    assert report.conforms and any("differs only on exact ties" in n for n in report.notes)


def test_check_command_exit_codes_and_json(capsys):
    good = ["check", "losses:batch_all_triplet_loss", "--as", "batch_all", "--metric", "cosine", "--reduction", "sum"]
    assert main(good) == 0
    assert "conforms to batch_all" in capsys.readouterr().out
    assert main(["check", "tests.conformance_gallery:squared_instead_of_euclidean", "--as", "batch_hard", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert not data["conforms"] and "squared distance where euclidean was asked" in data["diagnoses"][0]
    assert main(["check", "tests.conformance_gallery:correct_combined", "--as", "combined", "--map", "w_pos=w_pos"]) == 0
    capsys.readouterr()
    assert main(["check", "no_such_module_xyz:f", "--as", "batch_all"]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err
    assert main(["check", "losses:batch_all_triplet_loss", "--as", "batch_all", "--map", "oops"]) == 2
    assert "--map expects NAME=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        main(["check", "losses:batch_all_triplet_loss", "--as", "nope"])
    assert err.value.code == 2
