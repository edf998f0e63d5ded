"""Bugs outside the fault family (tests/conformance_gallery_unknown.py): the report points at each real bug,
and the smallest failing batch is small and pasteable."""

from __future__ import annotations

import functools

import pytest

from losses.testing import check_loss
from losses.testing.family import family_loss
from losses.testing.targets import make_target
from tests.conformance_gallery_unknown import UNKNOWN

BY_NAME = {u.name: u for u in UNKNOWN}


@functools.lru_cache(maxsize=None)
def report_of(name: str):
    u = BY_NAME[name]
    return check_loss(u.fn, as_=u.as_, **u.options)


def points_at_the_bug(name: str) -> bool:
    return any(words in report_of(name).summary() for words in BY_NAME[name].points_at)


def test_the_gallery_is_outside_the_fault_family():
    assert len(UNKNOWN) >= 20
    for u in UNKNOWN:
        assert "reproduced on every batch" not in " ".join(report_of(u.name).diagnoses), u.name


@pytest.mark.parametrize("name", list(BY_NAME))
def test_each_unknown_bug_is_rejected_and_explained(name):
    report = report_of(name)
    assert not report.conforms
    assert points_at_the_bug(name), report.summary()


@pytest.mark.parametrize("name", list(BY_NAME))
def test_the_smallest_failing_batch_pastes_and_fails(name):
    u, report = BY_NAME[name], report_of(name)
    assert report.smallest_batch, report.summary()
    code = "\n".join(report.smallest_batch)
    namespace = {u.name: u.fn, type(u.fn).__name__: u.fn}
    if "backward" in " ".join(report.diagnoses):
        return  # the batch reproduces a failing backward, not a value
    exec(code, namespace)  # noqa: S102 - the report's own lines
    batch = tuple(namespace[k] for k in (("anchor", "positive", "negative") if u.as_ == "naive" else ("embeddings", "labels")))
    ours, yours = (float(v) for v in code.rsplit("# ours: ", 1)[1].split(", yours: "))
    assert abs(float(namespace["loss"].detach()) - yours) <= 1e-8 * max(1.0, abs(yours))
    target = make_target(u.as_, metric=u.options.get("metric", "euclidean"), margin=0.2,
                         reduction=u.options.get("reduction"), semantics=None)
    margin = float(code.split("margin=")[1].split(")")[0]) if "margin=" in code else 0.2
    expected = float(family_loss(tuple(t.detach() if t.is_floating_point() else t for t in batch),
                                 target.spec.but(margin=margin)))
    assert abs(expected - ours) <= 1e-8 * max(1.0, abs(ours))
    assert abs(ours - yours) > 1e-6 * max(1.0, abs(ours)) or "the value agrees but the gradient differs" in report.summary()


def test_the_counts_the_issue_asks_for():
    explained = [n for n in BY_NAME if points_at_the_bug(n)]
    small = [n for n in BY_NAME if (report_of(n).smallest_rows or 99) <= 8]
    print(f"explained {len(explained)}/{len(UNKNOWN)}, smallest failing batch <= 8 rows {len(small)}/{len(UNKNOWN)}")
    assert len(explained) >= 16 and len(small) >= 15


def test_a_found_fault_that_does_not_reproduce_the_smallest_batch_is_not_named_as_the_cause():
    # averaging over all B anchors (invalid ones as 0) coincides with "the positive mask includes the diagonal"
    # unless a singleton is within the margin of a negative
    report = report_of("invalid_anchors_counted")
    assert not any("positive mask includes the diagonal" in d and "reproduced on every batch" in d
                   for d in report.diagnoses), report.summary()
