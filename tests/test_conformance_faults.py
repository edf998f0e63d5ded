"""Faults of the checker itself: backward errors, the naive battery's triplets, fresh copies per call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import losses
from losses.testing import assert_conforms, check_loss
from losses.testing.battery import _triplets_of, batch_cases, naive_cases


def fill_diagonal_on_cdist(x, y, margin):
    """In-place write on cdist's output: backward fails."""
    d = torch.cdist(x, x)
    d.fill_diagonal_(0.0)
    return losses.batch_all_triplet_loss(x, y, margin=margin, metric="euclidean") + 0 * d.sum()


def test_a_failing_backward_is_a_report_not_a_traceback():
    report = check_loss(fill_diagonal_on_cdist, as_="batch_all")
    assert not report.conforms
    assert any("backward" in d for d in report.diagnoses), report.summary()
    with pytest.raises(AssertionError, match="does NOT conform"):
        assert_conforms(fill_diagonal_on_cdist, as_="batch_all")


@pytest.mark.parametrize("case", batch_cases("euclidean", margin_settable=True), ids=lambda c: c.name)
def test_naive_battery_builds_real_triplets(case):
    x, labels = case.inputs
    a, p, n = _triplets_of(x, labels)
    assert a.shape == p.shape == n.shape
    for ra, rp, rn in zip(a, p, n):
        ia = [i for i in range(len(x)) if torch.equal(x[i], ra)]
        ip = [i for i in range(len(x)) if torch.equal(x[i], rp)]
        inn = [i for i in range(len(x)) if torch.equal(x[i], rn)]
        assert any(labels[i] == labels[j] and i != j for i in ia for j in ip), "positive of the anchor's class"
        assert any(labels[i] != labels[j] for i in ia for j in inn), "negative of another class"


def test_triplets_of_by_index():
    x = torch.arange(9.0)[:, None]
    a, p, n = _triplets_of(x, torch.tensor([0, 0, 1, 2, 2, 3, 4, 4, 5]))
    assert a[:, 0].tolist() == [0, 1, 3, 4, 6, 7]  # the singletons 2, 5, 8 anchor nothing
    assert p[:, 0].tolist() == [1, 0, 4, 3, 7, 6]
    assert n[:, 0].tolist() == [2, 2, 5, 5, 8, 8]
    assert all(len(t) > 0 for c in naive_cases("euclidean", margin_settable=True) for t in c.inputs)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_pytorch_triplet_margin_loss_conforms_as_naive(reduction):
    # eps=0: its default eps=1e-6 is added to the difference a - p (a distortion, and a unit gradient at a == p)
    assert_conforms(F.triplet_margin_loss, as_="naive", reduction=reduction, extra={"eps": 0.0})
    default = check_loss(F.triplet_margin_loss, as_="naive", reduction=reduction)
    assert not default.conforms and "very small norms" in default.summary()


def test_in_place_writes_by_the_user_cannot_corrupt_the_battery():
    calls = []

    def scribbler(x, y, margin):
        """mean over all triplets (a reduction fault), then wipes what it was given (its graph
        holds a copy: an in-place write on a tensor that backward needs is autograd's error)."""
        loss = losses.batch_all_triplet_loss(x.clone(), y.clone(), margin=margin, metric="euclidean",
                                             reduction="mean")
        calls.append(x)
        with torch.no_grad():
            x.mul_(0.0)
            y.fill_(0)
        return loss

    report = check_loss(scribbler, as_="batch_all")
    assert any("the value is the mean over all triplets" in d for d in report.diagnoses), report.summary()
    assert len({id(t) for t in calls}) == len(calls)  # a new tensor for every call


def test_fresh_inputs_are_copies():
    from losses.testing.check import fresh_inputs

    case = batch_cases("euclidean", margin_settable=True)[0]
    x, y = fresh_inputs(case)
    assert x.requires_grad and x.is_leaf and x.data_ptr() != case.inputs[0].data_ptr()
    assert y.data_ptr() != case.inputs[1].data_ptr() and not case.inputs[0].requires_grad


def test_a_function_that_exits_is_a_finding_not_an_exit():
    def exits(x, y, margin):
        raise SystemExit(0)

    report = check_loss(exits, as_="batch_all")
    assert not report.conforms and "SystemExit" in report.summary()
