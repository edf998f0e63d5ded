"""Datasets, class-disjoint splits, P x K sampling, offline mining, schedules, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ablations.config import config_hash, resolve_config
from ablations.data import class_counts, load_split, split_by_class
from ablations.evaluate import retrieval_metrics
from ablations.mining import hard_negatives, mix_hard_negatives, random_triplets
from ablations.sampler import PKSampler
from ablations.schedules import hard_share_at, lr_at, margin_at


def npz_config(path):
    return resolve_config({"dataset": "npz", "npz_path": str(path)})


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_digits_split_is_class_disjoint_and_standardised():
    split = load_split(resolve_config({}))
    train, val, test = (set(np.unique(y)) for y in (split.y_train, split.y_val, split.y_test))
    assert train == {0, 1, 2, 3, 4} and val == {5, 6} and test == {7, 8, 9}
    assert len(split.y_train) + len(split.y_val) + len(split.y_test) == 1797
    assert split.x_train.dtype == np.float32 and split.y_train.dtype == np.int64
    np.testing.assert_allclose(split.x_train.mean(axis=0), 0.0, atol=1e-5)
    stds = split.x_train.std(axis=0)
    assert np.all((np.abs(stds - 1) < 1e-4) | (stds == 0))


def test_blobs_split_and_label_noise():
    config = resolve_config({"dataset": "blobs", "blobs_classes": 10, "blobs_dim": 5,
                             "blobs_points_per_class": 20})
    split = load_split(config)
    assert split.num_features == 5
    assert not set(split.y_train) & (set(split.y_val) | set(split.y_test))
    noisy = load_split(resolve_config({**{k: getattr(config, k) for k in
                                          ("dataset", "blobs_classes", "blobs_dim",
                                           "blobs_points_per_class")},
                                       "blobs_label_noise": 0.5}))
    changed = (noisy.y_train != split.y_train).mean()
    assert 0.2 < changed < 0.6  # half relabelled at random, some to their own class
    assert set(noisy.y_train) <= set(split.y_train)
    np.testing.assert_array_equal(noisy.y_test, split.y_test)


@pytest.mark.parametrize("num_classes, expected", [(6, (2, 2, 2)), (10, (5, 2, 3)),
                                                   (100, (50, 20, 30))])
def test_class_counts(num_classes, expected):
    assert class_counts(num_classes) == expected


def test_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)), np.repeat(np.arange(6), 10)
    split = load_split(npz_config(write_npz(tmp_path / "f.npz", X=x, y=y)))
    assert len(split.y_train) == 20 and len(split.y_val) == 20 and len(split.y_test) == 20


@pytest.mark.parametrize("arrays, message", [
    ({"X": np.zeros((10, 3))}, "missing array"),
    ({"X": np.zeros((10, 3)), "labels": np.zeros(10, int)}, "'y'"),
    ({"X": np.zeros((10, 3)), "y": np.zeros(9, int)}, "10 rows but y has 9"),
    ({"X": np.zeros((10, 3)), "y": np.zeros(10, int)}, "single class"),
    ({"X": np.zeros((10, 3)), "y": np.arange(10) % 4}, "at least 6"),
    ({"X": np.zeros(10), "y": np.arange(10)}, "2-D"),
    ({"X": np.zeros((10, 3)), "y": np.linspace(0, 1, 10)}, "integer"),
    ({"X": np.full((12, 3), np.nan), "y": np.arange(12) % 6}, "non-finite"),
    ({"X": np.zeros((200, 0)), "y": np.arange(200) % 6}, "zero columns"),
    ({"X": np.zeros((12, 3), complex), "y": np.arange(12) % 6}, "real (integer or float)"),
    ({"X": np.zeros((13, 3)), "y": np.r_[np.arange(12) % 6, 6]}, "1 class(es) of y have fewer than 2 samples (6)"),
    ({"X": np.zeros((8, 3)), "y": np.arange(8)}, "8 class(es) of y have fewer than 2"),
    ({"X": np.zeros((0, 3)), "y": np.zeros(0, int)}, "zero rows"),
])
def test_npz_errors(tmp_path, arrays, message):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="npz_path|labels y") as err:
        load_split(npz_config(path))
    assert message in str(err.value)


def test_npz_that_is_no_plain_npz_names_the_file(tmp_path):
    not_zip = tmp_path / "text.npz"
    not_zip.write_text("X,y\n1,2\n")
    objects = tmp_path / "objects.npz"
    np.savez(objects, X=np.array([[1.0], "a"], dtype=object), y=np.arange(2))
    single = tmp_path / "single.npz"
    np.save(single, np.zeros((4, 2)))  # np.save appends .npy
    single = single.with_suffix(".npz.npy").rename(single)
    for path, message in ((not_zip, "begins with b'X,y\\n1,2\\n' (a text file?)"),
                          (objects, "object"), (single, "not an .npz")):
        with pytest.raises(ValueError, match="npz_path") as err:
            load_split(npz_config(path))
        assert str(path) in str(err.value) and message in str(err.value)


def test_npz_contents_are_part_of_the_run_id(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)), np.repeat(np.arange(6), 10)
    path = write_npz(tmp_path / "f.npz", X=x, y=y)
    first = npz_config(path)
    assert len(first.data_fingerprint) == 64
    assert npz_config(path) == first  # same bytes, same fingerprint
    write_npz(path, X=x + 1.0, y=y)  # same path, new contents
    second = npz_config(path)
    assert second.data_fingerprint != first.data_fingerprint
    assert config_hash(second) != config_hash(first)
    with pytest.raises(ValueError, match="changed after the grid was resolved") as err:
        load_split(first)  # a run resolved for the old contents never trains on the new ones
    assert str(path) in str(err.value)
    assert load_split(second).x_train.shape == (20, 4)
    # built-in datasets have no fingerprint, whatever the grid says
    assert resolve_config({"data_fingerprint": "a" * 64}).data_fingerprint == ""


def test_npz_missing_file(tmp_path):
    with pytest.raises(ValueError, match="file not found"):
        load_split(npz_config(tmp_path / "absent.npz"))


def test_split_rejects_too_few_classes():
    with pytest.raises(ValueError, match="5 classes"):
        split_by_class(np.zeros((10, 2)), np.arange(10) % 5)


def test_pk_sampler_batches():
    labels = np.repeat(np.arange(6), [10, 10, 10, 10, 10, 3])
    sampler = PKSampler(labels, p=3, k=4, generator=torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(sampler) == 53 // 12
    for batch in batches:
        classes, counts = np.unique(labels[batch.numpy()], return_counts=True)
        assert len(classes) == 3 and (counts == 4).all()
    again = list(PKSampler(labels, p=3, k=4, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    with pytest.raises(ValueError, match="sampler_p"):
        PKSampler(labels, p=7, k=2, generator=torch.Generator())


def test_random_triplets_are_valid():
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    for seed in range(20):
        t = random_triplets(labels, rng=np.random.default_rng(seed))
        assert len(t) == 9 and 5 not in t[:, 0]  # the singleton class has no anchor
        assert (labels[t[:, 0]] == labels[t[:, 1]]).all() and (t[:, 0] != t[:, 1]).all()
        assert (labels[t[:, 0]] != labels[t[:, 2]]).all()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_hard_negatives_are_the_nearest_other_class_point(metric):
    rng = np.random.default_rng(0)
    emb, labels = rng.normal(size=(40, 3)), np.arange(40) % 4
    hard = hard_negatives(emb, labels, neighbours=39, metric=metric)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True) if metric == "cosine" else emb
    dist = np.linalg.norm(x[:, None] - x[None], axis=2)
    dist[labels[:, None] == labels[None]] = np.inf
    np.testing.assert_array_equal(hard, dist.argmin(axis=1))


def test_mixing_hard_negatives_follows_the_share():
    labels = np.arange(1000) % 10
    t = random_triplets(labels, rng=np.random.default_rng(0))
    hard = (np.arange(1000) + 1) % 1000  # some other class
    for share in (0.0, 1.0):
        mixed = mix_hard_negatives(t, hard, hard_share=share, rng=np.random.default_rng(1))
        assert ((mixed[:, 2] == hard[mixed[:, 0]]).mean() >= share)
        np.testing.assert_array_equal(mixed[:, :2], t[:, :2])
    half = mix_hard_negatives(t, hard, hard_share=0.5, rng=np.random.default_rng(1))
    assert 0.4 < (half[:, 2] == hard[half[:, 0]]).mean() < 0.6


def test_schedules():
    lrs = [lr_at(s, base_lr=1.0, total_steps=100, schedule="warmup_cosine", warmup_steps=10)
           for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.01
    assert lr_at(57, base_lr=0.3, total_steps=100, schedule="constant", warmup_steps=10) == 0.3
    ramp = [margin_at(s, margin=0.4, schedule="linear", start=0.1, ramp_steps=10)
            for s in range(15)]
    assert ramp[0] == pytest.approx(0.1) and ramp[5] == pytest.approx(0.25)
    assert ramp[10:] == [pytest.approx(0.4)] * 5
    shares = [hard_share_at(e, epochs=5, random_rate=0.5, hard_start=0.0, hard_end=1.0)
              for e in range(5)]
    assert shares[0] == 0.0 and shares[-1] == pytest.approx(0.5)
    assert all(a < b for a, b in zip(shares, shares[1:]))


def test_retrieval_metrics_perfect_and_random():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    separated = np.eye(3)[y] * 10 + rng.normal(scale=0.01, size=(60, 3))
    for metric in ("euclidean", "squared_euclidean", "cosine"):
        m = retrieval_metrics(separated, y, metric=metric, seed=0)
        assert m == pytest.approx({"precision_at_1": 1, "r_precision": 1, "map_at_r": 1,
                                   "nmi": 1, "recall_at_1": 1, "recall_at_2": 1,
                                   "recall_at_4": 1, "recall_at_8": 1})
    noise = retrieval_metrics(rng.normal(size=(60, 8)), y, metric="euclidean", seed=0)
    assert noise["map_at_r"] < 0.6 and noise["nmi"] < 0.3


def test_retrieval_metric_uses_the_training_metric():
    # two classes along a ray: cosine cannot tell them apart, euclidean can
    y = np.repeat([0, 1], 10)
    scale = np.where(y == 0, 1.0, 5.0)[:, None] * (1 + 0.01 * np.arange(20))[:, None]
    x = scale * np.array([[1.0, 1.0]])
    assert retrieval_metrics(x, y, metric="euclidean", seed=0)["precision_at_1"] == 1.0
    assert retrieval_metrics(x, y, metric="cosine", seed=0)["precision_at_1"] < 1.0
