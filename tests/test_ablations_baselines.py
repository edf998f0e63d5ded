"""Class folds, the raw / untrained baselines and Recall@K."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ablations.baselines import baseline_configs, with_baselines
from ablations.config import config_hash, config_to_dict, resolve_config, stored_config
from ablations.migrate import v1_run_id, config_from_format_1
from ablations.data import fold_classes, load_digits_xy, load_split
from ablations.evaluate import retrieval_metrics
from ablations.grid import expand, parse_grid_text
from ablations.model import build_encoder
from ablations.runner import run_grid
from ablations.store import ResultsStore
from ablations.train import run_one
from tests.loop_reference import distance_matrix
from tests.test_ablations_store import calls  # noqa: F401 - the run_one spy fixture

GRID = """[base]
epochs = 1
eval_every = 1
sampler_k = 8
width = 16
{extra}
[grid]
loss = ["batch_hard", "naive"]
seed = [0, 1]
"""


# ------------------------------------------------------------------ folds
@pytest.mark.parametrize("num_classes, folds", [(10, 4), (10, 3), (6, 2), (40, 5)])
def test_rotated_folds_are_class_disjoint_within_and_different_across(num_classes, folds):
    classes = np.arange(num_classes) * 3 + 1   # sorted, not 0..C-1
    parts = [fold_classes(classes, class_folds=folds, fold=f, split_protocol="rotated")
             for f in range(folds)]
    for train, val, test in parts:
        assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
        assert set(train) | set(val) | set(test) == set(classes)
    held_out = [tuple(sorted([*val, *test])) for _, val, test in parts]
    tests = [tuple(sorted(test)) for _, _, test in parts]
    assert len(set(held_out)) == folds and len(set(tests)) == folds


@pytest.mark.parametrize("num_classes, folds", [(10, 3), (10, 2), (6, 2), (40, 5), (120, 3)])
def test_fixed_test_folds_keep_the_test_classes_and_cross_validate_the_rest(num_classes, folds):
    classes = np.arange(num_classes) * 3 + 1
    parts = [fold_classes(classes, class_folds=folds, fold=f) for f in range(folds)]
    tests = {tuple(test) for _, _, test in parts}
    assert tests == {tuple(classes[-round(0.3 * num_classes):])}      # one fixed test set
    for train, val, test in parts:
        assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
        assert set(train) | set(val) | set(test) == set(classes) and len(val) >= 2
    vals = [set(val) for _, val, _ in parts]                          # the blocks partition the
    assert set().union(*vals) == set(classes) - set(parts[0][2])      # development classes
    assert sum(map(len, vals)) == num_classes - len(parts[0][2])


def test_fixed_test_refuses_more_folds_than_the_development_classes_allow():
    with pytest.raises(ValueError, match="class_folds = 4 is too many for 10 classes"):
        fold_classes(np.arange(10), class_folds=4, fold=0)     # 7 development classes: 3 folds
    with pytest.raises(ValueError, match="class_folds = 11"):
        fold_classes(np.arange(10), class_folds=11, fold=0, split_protocol="rotated")


def test_fixed_test_runs_get_their_own_ids_and_old_rotated_runs_migrate_to_rotated():
    rotated = {"class_folds": 3, "fold": 1, "split_protocol": "rotated"}
    fixed = {"class_folds": 3, "fold": 1}
    stored = config_to_dict(resolve_config(rotated))
    before_the_key = {k: v for k, v in stored.items() if k != "split_protocol"}
    assert v1_run_id(stored) == v1_run_id(before_the_key) == "dc8afcf427f4"  # format 1's id
    # a run stored before the key had rotated folds
    assert config_from_format_1(before_the_key) == stored_config(resolve_config(rotated))
    assert config_hash(fixed) != config_hash(rotated)
    # fold 0: rotated is the plain cut (one run for every K); fixed_test fold 0 is not
    assert config_hash({"class_folds": 3, "fold": 0, "split_protocol": "rotated"}) == config_hash({})
    assert config_hash({"class_folds": 3, "fold": 0}) != config_hash({})
    # one split: the protocols cut the same classes: one id
    assert config_hash({"split_protocol": "rotated"}) == config_hash({})


def test_fold_zero_is_the_split_of_stores_made_before_folds():
    default = load_split(resolve_config({}))
    fold0 = load_split(resolve_config({"class_folds": 4, "fold": 0, "split_protocol": "rotated"}))
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(default, name), getattr(fold0, name))
    assert set(default.y_test) == {7, 8, 9} and set(default.y_val) == {5, 6}
    # the run id of a default config does not change either (class_folds/fold not hashed)
    assert config_hash({"class_folds": 1, "fold": 0}) == config_hash({})


def test_digits_folds_rotate_the_held_out_classes_and_restandardise():
    split = load_split(resolve_config({"class_folds": 2, "fold": 1, "split_protocol": "rotated"}))
    assert set(split.y_train) == {5, 6, 7, 8, 9} and set(split.y_val) == {0, 1}
    assert set(split.y_test) == {2, 3, 4}
    np.testing.assert_allclose(split.x_train.mean(axis=0), 0.0, atol=1e-5)
    x, y = load_digits_xy()
    assert len(split.y_train) == int(np.isin(y, [5, 6, 7, 8, 9]).sum())


@pytest.mark.parametrize("values, match", [({"class_folds": 2, "fold": 2}, "fold"),
                                           ({"class_folds": 0}, "class_folds"),
                                           ({"fold": -1}, "fold")])
def test_bad_folds_are_errors_naming_the_key(values, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(values)


def test_class_folds_expand_to_one_cell_per_fold_and_fold_is_not_a_grid_key():
    configs = expand(parse_grid_text(GRID.format(extra="class_folds = 3")))
    assert [(c.loss, c.seed, c.fold) for c in configs[:4]] == [
        ("batch_hard", 0, 0), ("batch_hard", 0, 1), ("batch_hard", 0, 2), ("batch_hard", 1, 0)]
    assert len(configs) == 12 and len({config_hash(c) for c in configs}) == 12
    with pytest.raises(ValueError, match="class_folds"):
        parse_grid_text(GRID.format(extra="fold = 1"))


# -------------------------------------------------------------- baselines
def test_baselines_merge_cells_that_cannot_differ():
    trained = [resolve_config({"loss": loss, "lr": lr, "seed": seed, "width": width})
               for loss in ("batch_hard", "combined") for lr in (1e-3, 1e-2)
               for seed in (0, 1) for width in (16, 32)]
    baselines = baseline_configs(trained)
    raw = [b for b in baselines if b.baseline == "raw"]
    untrained = [b for b in baselines if b.baseline == "untrained"]
    assert len(raw) == 1 and raw[0].seed == 0 and raw[0].width == resolve_config({}).width
    assert sorted((b.seed, b.width) for b in untrained) == [(0, 16), (0, 32), (1, 16), (1, 32)]
    assert {b.lr for b in untrained} == {resolve_config({}).lr}
    folds = baseline_configs(expand(parse_grid_text(GRID.format(extra="class_folds = 2"))))
    assert sorted(b.fold for b in folds if b.baseline == "raw") == [0, 1]
    assert len([b for b in folds if b.baseline == "untrained"]) == 4   # 2 folds x 2 seeds
    assert {b.loss for b in baselines} == {resolve_config({}).loss}   # a baseline reads no loss
    # the metric is kept: a cosine run gets a cosine baseline
    assert {b.metric for b in baseline_configs([resolve_config({"loss": "circle"})])} == {"cosine"}


def test_untrained_is_the_initial_encoder_and_raw_the_standardised_features():
    config = {"baseline": "untrained", "seed": 3, "width": 16, "embedding_dim": 8}
    result = run_one(config)
    assert result["status"] == "finished" and result["steps"] == []
    cfg = resolve_config(config)
    split = load_split(cfg)
    torch.manual_seed(3)
    with torch.no_grad():
        expected = build_encoder(cfg, split.num_features)(torch.from_numpy(split.x_test))
    np.testing.assert_allclose(result["embeddings"]["X"], expected.numpy(), atol=1e-6)
    raw = run_one({"baseline": "raw", "lr": 0.5, "seed": 7})
    assert "seed" not in raw["config"] and "lr" not in raw["config"]   # raw reads neither
    assert raw["run_id"] == config_hash({"baseline": "raw"}) == config_hash({"loss": "raw"})  # older spelling
    np.testing.assert_array_equal(raw["embeddings"]["X"], split.x_test)
    assert raw["metrics"]["test_map_at_r"] == pytest.approx(
        retrieval_metrics(split.x_test, split.y_test, metric="euclidean", seed=0)["map_at_r"])
    assert all(math.isfinite(v) for v in raw["metrics"].values())


def test_a_grid_that_sets_nothing_new_gets_its_baselines(tmp_path, calls):
    (tmp_path / "g.toml").write_text(GRID.format(extra=""))
    store = run_grid(tmp_path / "g.toml", tmp_path / "out", workers=1)
    runs = store.runs()
    assert sorted(runs["baseline"]) == ["", "", "", "", "lda", "nca", "pca_whiten", "raw", "untrained",
                                        "untrained"]
    assert sorted(runs.loc[runs["baseline"] == "", "loss"]) == ["batch_hard", "batch_hard", "naive", "naive"]
    assert set(runs["status"]) == {"finished"} and len(calls) == 10
    untrained = runs[runs["baseline"] == "untrained"]
    assert sorted(untrained["seed"]) == [0, 1] and set(untrained["width"]) == {16}
    assert runs[runs["baseline"] == "raw"]["test_recall_at_8"].notna().all()
    assert store.embeddings(untrained["run_id"].iloc[0])[0].shape[1] == 32  # embedding_dim


def test_a_resumed_grid_with_class_folds_adds_only_the_missing_cells(tmp_path, calls):
    (tmp_path / "g.toml").write_text(GRID.format(extra=""))
    store = run_grid(tmp_path / "g.toml", tmp_path / "out", workers=1)
    before = set(store.stored_ids())
    # rotated folds: fold 0 is the single split already stored, so only fold 1 is new
    (tmp_path / "g2.toml").write_text(GRID.format(extra='class_folds = 2\nsplit_protocol = "rotated"'))
    run_grid(tmp_path / "g2.toml", tmp_path / "out", workers=1, extend=True)
    added = calls[len(before):]
    assert len(added) == len(set(added)) == 10 and not set(added) & before  # fold 1 only
    runs = ResultsStore(tmp_path / "out").runs()
    assert sorted(runs["fold"].value_counts().to_dict().items()) == [(0, 10), (1, 10)]
    expected = {config_hash(c) for c in with_baselines(expand(parse_grid_text(
        GRID.format(extra='class_folds = 2\nsplit_protocol = "rotated"'))))}
    assert set(runs["run_id"]) == expected
    # fixed test classes: both folds differ from the single split, the fixed test set does not
    fixed = [c for c in with_baselines(expand(parse_grid_text(GRID.format(extra="class_folds = 2"))))]
    assert not {config_hash(c) for c in fixed} & set(runs["run_id"])
    assert {tuple(np.unique(load_split(c).y_test)) for c in fixed} == {(7, 8, 9)}


# ---------------------------------------------------------------- Recall@K
def _loop_recall_and_map_at_r(x, y, k, metric):
    """Leave-one-out Recall@k and MAP@R by plain loops (ties broken by index)."""
    d = distance_matrix(x.tolist(), metric)
    hits, aps = [], []
    for i in range(len(y)):
        order = sorted((j for j in range(len(y)) if j != i), key=lambda j: (d[i][j], j))
        r = sum(1 for j in range(len(y)) if j != i and y[j] == y[i])
        if r == 0:
            continue
        hits.append(any(y[j] == y[i] for j in order[:k]))
        found, precisions = 0, []
        for rank, j in enumerate(order[:r], start=1):
            if y[j] == y[i]:
                found += 1
                precisions.append(found / rank)
        aps.append(sum(precisions) / r)
    return sum(hits) / len(hits), sum(aps) / len(aps)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_recall_at_k_and_map_at_r_match_loop_references_with_small_classes(metric):
    rng = np.random.default_rng(1)
    y = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5, 6])  # largest class 3 < 8
    x = rng.normal(size=(len(y), 3)) + 0.8 * y[:, None] % 3
    m = retrieval_metrics(x, y, metric=metric, seed=0)
    for k in (1, 2, 4, 8):
        recall, map_at_r = _loop_recall_and_map_at_r(x, y, k, metric)
        assert m[f"recall_at_{k}"] == pytest.approx(recall), k
    assert m["map_at_r"] == pytest.approx(map_at_r)   # 8 neighbours fetched: still exact
    assert m["recall_at_1"] == pytest.approx(m["precision_at_1"])
    assert m["recall_at_1"] <= m["recall_at_2"] <= m["recall_at_4"] <= m["recall_at_8"] < 1
