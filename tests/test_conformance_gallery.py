"""The gallery of faulty losses: each flagged with the right diagnosis; correct ones pass (ours, PML, user-style)."""

from __future__ import annotations

import pytest
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners, reducers
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance

import losses
from losses.testing import assert_conforms, check_loss
from tests import conformance_gallery as gallery

FAULTS = [
    (gallery.no_epsilon_in_sqrt, "batch_all", {}, "square root without a safe gradient at 0"),
    (gallery.diagonal_in_positive_mask, "batch_all", {}, "positive mask includes the diagonal"),
    (gallery.same_class_in_negative_mask, "batch_hard", {}, "same-class pairs in the negative mask"),
    (gallery.mean_over_all_triplets, "batch_all", {}, "the mean over all triplets, expected the mean over the triplets with loss > 0"),
    (gallery.semi_hard_upper_boundary_strict, "semi_hard_pml", {"reduction": "mean"}, "d_an == d_ap + margin handled the other way"),
    (gallery.semi_hard_tf_lower_boundary_inclusive, "semi_hard_tf", {}, "semi-hard boundary: d_an == d_ap handled the other way"),
    (gallery.squared_instead_of_euclidean, "batch_hard", {}, "squared distance where euclidean was asked"),
    (gallery.hardest_positive_detached, "batch_hard", {}, "hardest positive detached"),
    (gallery.cosine_similarity_as_distance, "batch_all", {"metric": "cosine"}, "cosine similarity used as a distance with the wrong sign"),
    (gallery.nan_on_empty_batch, "batch_all", {}, "divides by a zero count"),
    (gallery.pml_default_distance, "batch_all", {}, "L2-normalised before the distance"),
    (gallery.softmax_before_cross_entropy, "combined", {}, "softmax before cross-entropy"),
    (gallery.hard_coded_loss_weight, "combined", {}, "hard-coded loss weight: w_pos is ignored"),
    (gallery.hard_coded_other_weight, "combined", {}, "hard-coded loss weight: w_neg has no effect"),
]


@pytest.mark.parametrize("fn, as_, options, diagnosis", FAULTS, ids=[f[0].__name__ for f in FAULTS])
def test_each_fault_is_flagged_with_its_diagnosis(fn, as_, options, diagnosis):
    report = check_loss(fn, as_=as_, **options)
    assert not report.conforms
    assert any(diagnosis in d for d in report.diagnoses), report.summary()
    with pytest.raises(AssertionError, match="does NOT conform"):
        assert_conforms(fn, as_=as_, **options)


def _pml_distance(metric):
    return {"euclidean": LpDistance(normalize_embeddings=False, p=2, power=1),
            "squared_euclidean": LpDistance(normalize_embeddings=False, p=2, power=2),
            "cosine": CosineSimilarity()}[metric]


def pml_batch_all(metric):
    def loss(x, y, margin):
        return pml_losses.TripletMarginLoss(margin=margin, distance=_pml_distance(metric),
                                            reducer=reducers.AvgNonZeroReducer())(x, y)
    return loss


def pml_batch_hard(metric):
    def loss(x, y, margin):
        fn = pml_losses.TripletMarginLoss(margin=margin, distance=_pml_distance(metric), reducer=reducers.MeanReducer())
        return fn(x, y, miners.BatchHardMiner(distance=_pml_distance(metric))(x, y))
    return loss


def pml_batch_hard_soft(metric):
    def loss(x, y):
        fn = pml_losses.TripletMarginLoss(margin=0.0, smooth_loss=True, distance=_pml_distance(metric),
                                          reducer=reducers.MeanReducer())
        return fn(x, y, miners.BatchHardMiner(distance=_pml_distance(metric))(x, y))
    return loss


def pml_semi_hard(metric):
    def loss(x, y, margin):
        miner = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=_pml_distance(metric))
        fn = pml_losses.TripletMarginLoss(margin=margin, distance=_pml_distance(metric), reducer=reducers.AvgNonZeroReducer())
        return fn(x, y, miner(x, y))
    return loss


@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "cosine"])
@pytest.mark.parametrize("as_, make", [("batch_all", pml_batch_all), ("batch_hard", pml_batch_hard),
                                       ("batch_hard_soft", pml_batch_hard_soft), ("semi_hard_pml", pml_semi_hard)],
                         ids=["batch_all", "batch_hard", "batch_hard_soft", "semi_hard_pml"])
def test_pml_wrappers_conform(as_, make, metric):
    assert_conforms(make(metric), as_=as_, metric=metric, margin=0.3)


@pytest.mark.parametrize("fn, as_", [(losses.naive_triplet_loss, "naive"), (losses.batch_all_triplet_loss, "batch_all"),
                                     (losses.batch_hard_triplet_loss, "batch_hard"),
                                     (losses.batch_hard_triplet_loss, "batch_hard_soft"),
                                     (losses.semi_hard_triplet_loss, "semi_hard_tf"),
                                     (losses.semi_hard_triplet_loss, "semi_hard_pml")])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ours_conform(fn, as_, reduction):
    for metric in ("euclidean", "cosine"):
        assert_conforms(fn, as_=as_, metric=metric, reduction=reduction)


@pytest.mark.parametrize("fn, as_", [(gallery.correct_batch_all, "batch_all"), (gallery.correct_batch_hard, "batch_hard"),
                                     (gallery.correct_combined, "combined")])
def test_correct_user_implementations_conform(fn, as_):
    report = assert_conforms(fn, as_=as_)
    assert report.conforms and not report.diagnoses and all(r.ok for r in report.results)
