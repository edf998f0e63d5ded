"""run_one: determinism, what each run records, divergence and failure."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ablations.objectives as objectives
from ablations.config import LOSSES, config_hash
from ablations.store import METRIC_COLUMNS
from ablations.train import run_one

TINY = {"epochs": 2, "eval_every": 1}


def assert_same_run(a: dict, b: dict) -> None:
    assert a["status"] == b["status"] == "finished", (a["error"], b["error"])
    assert a["steps"] == b["steps"]  # every logged float bit-identical (NaN-free rows)
    assert a["epochs"] == b["epochs"] and a["metrics"] == b["metrics"]
    np.testing.assert_array_equal(a["embeddings"]["X"], b["embeddings"]["X"])


@pytest.mark.parametrize("config", [
    {"loss": "batch_hard"},
    {"loss": "naive", "mining": "offline_hard", "mining_refresh_epochs": 1},
    {"loss": "combined", "weighting": "uncertainty", "lr_schedule": "warmup_cosine",
     "warmup_epochs": 1},
], ids=["batch_hard", "naive-mined", "combined-uncertainty"])
def test_same_config_twice_gives_identical_curves_and_metrics(config):
    first, second = run_one({**TINY, **config}), run_one({**TINY, **config})
    assert_same_run(first, second)
    other_seed = run_one({**TINY, **config, "seed": 1})
    assert other_seed["steps"] != first["steps"]


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_and_logs_its_components(loss):
    result = run_one({"loss": loss, "epochs": 1, "eval_every": 1})
    assert result["status"] == "finished", result["error"]
    assert result["run_id"] == config_hash(result["config"])
    components = {k[len("loss_"):] for k in result["steps"][0] if k.startswith("loss_")}
    assert components
    for row in result["steps"]:
        assert math.isfinite(row["loss"]) and row["lr"] == 1e-3
        for c in components:
            assert f"weight_{c}" in row and f"gradnorm_{c}" in row
        assert {"active_fraction", "pos_ratio", "violation_rate", "margin", "epoch",
                "step"} <= set(row)
        assert 0.0 <= row["pos_ratio"] <= 1.0
    assert [r["step"] for r in result["steps"]] == list(range(len(result["steps"])))
    assert set(result["metrics"]) == set(METRIC_COLUMNS)
    assert all(0.0 <= v <= 1.0 for v in result["metrics"].values())
    X, y = result["embeddings"]["X"], result["embeddings"]["y"]
    assert X.dtype == np.float32 and y.dtype == np.int64 and X.shape == (len(y), 32)
    assert set(np.unique(y)) == {7, 8, 9}  # the test classes only


def test_training_reduces_the_loss_and_orders_the_triplets():
    steps = run_one({"epochs": 5, "eval_every": 5, "loss": "batch_all"})["steps"]
    first = [r for r in steps if r["epoch"] == 0]
    last = [r for r in steps if r["epoch"] == 4]
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    assert mean(last, "loss") < 0.7 * mean(first, "loss")
    assert mean(last, "pos_ratio") > mean(first, "pos_ratio")
    assert mean(last, "violation_rate") < mean(first, "violation_rate")


def test_schedules_are_logged_per_step():
    result = run_one({"epochs": 3, "eval_every": 3, "lr": 0.01, "lr_schedule": "warmup_cosine",
                      "warmup_epochs": 1, "margin_schedule": "linear", "margin_start": 0.0,
                      "margin": 0.3, "margin_ramp_epochs": 2})
    steps = result["steps"]
    per_epoch = len(steps) // 3
    lrs, margins = [r["lr"] for r in steps], [r["margin"] for r in steps]
    assert lrs[per_epoch - 1] == pytest.approx(0.01) and lrs[0] < lrs[per_epoch - 1]
    assert lrs[-1] < lrs[per_epoch]
    assert margins[0] == 0.0 and margins[per_epoch] == pytest.approx(0.15)
    assert margins[-1] == pytest.approx(0.3)
    assert [e["epoch"] for e in result["epochs"]] == [3]


def test_eval_schedule():
    result = run_one({"epochs": 5, "eval_every": 2})
    assert [e["epoch"] for e in result["epochs"]] == [2, 4, 5]


def test_gradient_weighting_logs_grad_norms_and_weights():
    result = run_one({**TINY, "loss": "combined", "weighting": "grad_norm_balance"})
    assert result["status"] == "finished", result["error"]
    row = result["steps"][-1]
    for c in ("triplet", "ce_pos", "ce_neg"):
        assert math.isfinite(row[f"gradnorm_{c}"]) and row[f"weight_{c}"] > 0
    assert 0.0 <= row["pair_accuracy"] <= 1.0
    fixed = run_one({**TINY, "loss": "combined", "w_pos": 0.25})
    assert fixed["steps"][0]["weight_ce_pos"] == 0.25
    assert math.isnan(fixed["steps"][0]["gradnorm_ce_pos"])


@pytest.mark.parametrize("weighting", ["inverse_ema", "log_normalised", "gradnorm", "dwa"])
def test_every_weighting_method_trains_the_combined_objective(weighting):
    result = run_one({**TINY, "loss": "triplet_ce", "weighting": weighting})
    assert result["status"] == "finished", result["error"]
    weights = [(r["weight_triplet"], r["weight_ce_id"]) for r in result["steps"]]
    assert all(math.isfinite(a) and math.isfinite(b) for a, b in weights)


def test_nan_component_is_recorded_as_diverged(monkeypatch):
    original = objectives.BatchObjective.forward
    calls = {"n": 0}

    def poisoned(self, embeddings, labels, margin):
        out = original(self, embeddings, labels, margin)
        calls["n"] += 1
        if calls["n"] == 4:  # step 3
            out.components["triplet"] = out.components["triplet"] * float("nan")
        return out

    monkeypatch.setattr(objectives.BatchObjective, "forward", poisoned)
    result = run_one(TINY)
    assert result["status"] == "diverged"
    assert result["diverged_step"] == 3 and result["diverged_component"] == "triplet"
    assert "step 3" in result["error"] and len(result["steps"]) == 4
    assert math.isnan(result["steps"][-1]["loss_triplet"])
    assert result["embeddings"] is None
    assert all(math.isnan(v) for v in result["metrics"].values())


def test_exploding_learning_rate_is_recorded_as_diverged():
    result = run_one({"epochs": 1, "lr": 1e30, "normalize": False, "loss": "contrastive"})
    assert result["status"] == "diverged", result["error"]
    assert result["diverged_component"] in ("embeddings", "contrastive")
    assert 0 < result["diverged_step"] == len(result["steps"]) - 1


def test_exception_is_recorded_as_failed(monkeypatch):
    def broken(self, embeddings, labels, margin):
        raise RuntimeError("boom in the loss")

    monkeypatch.setattr(objectives.BatchObjective, "forward", broken)
    result = run_one(TINY)
    assert result["status"] == "failed" and "boom in the loss" in result["error"]
    assert result["diverged_step"] is None and result["wall_time_s"] > 0


def test_mismatched_run_id_is_rejected():
    with pytest.raises(ValueError, match="run_id"):
        run_one({**TINY, "run_id": "000000000000"})
