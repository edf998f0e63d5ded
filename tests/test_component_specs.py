"""The keys a run config keeps: read from the components' declarations (datasets, encoders,
losses, weighting methods, baselines), equal to the rule the stores were written under.

tests/fixtures/keys_not_used.json holds, for 1500 configs drawn (seed 19) over every choice
key, the plugin losses and encoder of tests/plugins_example.py, memory on and off and the
split protocols and folds, the set of keys that the written-out rule of the earlier
ablations/config.py reset (a bit mask over `fields`). Run ids depend on that set, so the
declarations must give it exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablations.config import (DEFAULTS, FIELDS, FIXED_WEIGHT_KEYS, LOSSES, SHARED_KEYS, WEIGHTING_PARAMS,
                              _keys_to_reset, keys_read, readers)
from ablations.data import DATASET_SPECS
from ablations.loss_specs import LOSS_SPECS, MARGIN_KEYS
from ablations.model import ENCODER_SPECS

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "keys_not_used.json").read_text())


def _rows():
    varied = FIXTURE["varied"]
    for row in FIXTURE["rows"]:
        pick = {key: varied[key][i] for key, i in zip(varied, row[:-1])}
        mask = int(row[-1], 16)
        yield pick, {key for i, key in enumerate(FIXTURE["fields"]) if mask >> i & 1}


def test_the_declarations_reset_exactly_the_keys_of_the_stored_rule():
    assert FIXTURE["fields"] == sorted(DEFAULTS)
    wrong = [(pick, sorted(set(_keys_to_reset({**DEFAULTS, **pick})) ^ expected))
             for pick, expected in _rows() if set(_keys_to_reset({**DEFAULTS, **pick})) != expected]
    assert wrong[:3] == []


def test_the_fixture_covers_every_value_of_the_choice_keys():
    seen = {key: {pick[key] for pick, _ in _rows()} for key in FIXTURE["varied"]}
    assert seen == {key: set(values) for key, values in FIXTURE["varied"].items()}
    assert set(LOSSES) <= seen["loss"] and set(DATASET_SPECS) <= seen["dataset"]


def test_every_key_is_read_by_some_component():
    declared = (set(SHARED_KEYS) | set(MARGIN_KEYS) | {"dataset", "loss", "metric", "encoder",
                "embedding_dim", "seed", "fold", "class_folds", "split_protocol", "weighting"}
                | {k for spec in DATASET_SPECS.values() for k in spec.keys}
                | {k for spec in ENCODER_SPECS.values() for k in spec.keys}
                | {k for spec in LOSS_SPECS.values() for k in spec.keys})
    declared |= set(FIXED_WEIGHT_KEYS) | {k for params in WEIGHTING_PARAMS.values() for k, _ in params}
    assert sorted(set(FIELDS) - declared) == []


@pytest.mark.parametrize("loss", sorted(LOSS_SPECS))
def test_a_loss_reads_its_declared_keys(loss):
    cfg = {**DEFAULTS, "loss": loss, "margin_schedule": "linear", "mining": "offline_hard", "ce": "focal"}
    read = keys_read(cfg)
    spec = LOSS_SPECS[loss]
    assert set(spec.keys) <= read
    assert (set(MARGIN_KEYS) <= read) == spec.reads_margin(cfg, LOSS_SPECS)
    assert ("weighting" in read) == (len(spec.components) > 1)


def test_every_key_a_run_can_drop_names_its_readers():
    always = {"dataset", "loss", "metric", "encoder", "embedding_dim", "seed", "fold"} | set(SHARED_KEYS)
    unnamed = [key for key in FIELDS if key not in always and not readers(key).startswith("read only ")]
    assert unnamed == []
    assert readers("focal_alpha") == 'read only when ce = "focal" (read only by loss = combined)'
    assert readers("gradnorm_alpha").startswith("read only by weighting = gradnorm, for losses of several")


def test_a_new_dataset_is_its_loader_and_one_registry_entry(monkeypatch):
    """A toy dataset registered in ablations.data.DATASET_SPECS alone (no other file edited):
    valid in a grid, loaded, split by class, trained on, and its keys kept or reset like any."""
    import numpy as np

    from ablations.config import config_to_dict, resolve_config
    from ablations.data import DatasetSpec, load_split
    from ablations.train import run_one

    def toy_xy(config):
        rng = np.random.default_rng(config.data_seed)
        y = np.repeat(np.arange(8), 10)
        return (rng.normal(size=(80, 6)) + 3 * np.eye(8, 6)[y]).astype(np.float32), y

    monkeypatch.setitem(DATASET_SPECS, "toy", DatasetSpec(("data_seed",), toy_xy))
    config = resolve_config({"dataset": "toy", "data_seed": 3, "epochs": 1, "sampler_p": 2,
                             "sampler_k": 4, "eval_every": 1, "blobs_dim": 7})
    assert config.data_seed == 3 and config.blobs_dim == DEFAULTS["blobs_dim"]  # kept / reset
    split = load_split(config)
    assert split.x_train.shape[1] == 6 and not set(split.y_train) & set(split.y_test)
    result = run_one(config_to_dict(config))
    assert result["status"] == "finished" and 0 <= result["metrics"]["test_map_at_r"] <= 1


def test_a_new_encoder_is_its_builder_and_one_registry_entry(monkeypatch):
    """A toy encoder registered in ablations.model.ENCODER_SPECS alone: valid, built with the
    run's keys (width read, the MLP's depth reset), trained."""
    import torch
    from torch import nn

    from ablations.config import config_to_dict, resolve_config
    from ablations.model import EncoderSpec, build_encoder
    from ablations.train import run_one

    class Linear(nn.Linear):
        def shared_parameters(self):
            return list(self.parameters())

    def linear(config, in_features):
        return Linear(in_features, config.embedding_dim)

    monkeypatch.setitem(ENCODER_SPECS, "linear", EncoderSpec(("normalize",), linear))
    config = resolve_config({"encoder": "linear", "hidden_layers": 3, "normalize": False, "epochs": 1,
                             "sampler_p": 2, "sampler_k": 4, "eval_every": 1, "embedding_dim": 5})
    assert config.hidden_layers == DEFAULTS["hidden_layers"] and config.normalize is False
    assert build_encoder(config, 64)(torch.zeros(3, 64)).shape == (3, 5)
    result = run_one(config_to_dict(config))
    assert result["status"] == "finished" and 0 <= result["metrics"]["test_map_at_r"] <= 1


def test_a_new_weighting_method_is_its_class_and_one_registry_entry(monkeypatch):
    """A toy method registered in losses.weighting.WEIGHTINGS alone (no config keys): a valid
    `weighting` of a loss of several components, used in training."""
    import torch

    from ablations.config import config_to_dict, resolve_config
    from ablations.train import run_one
    from losses.weighting import WEIGHTINGS, Weighting

    class FirstOnly(Weighting):
        """total = the first component's loss."""

        def _combine(self, values, shared):
            weights = torch.zeros_like(values)
            weights[0] = 1.0
            return values[0], weights, None

    monkeypatch.setitem(WEIGHTINGS, "first_only", FirstOnly)
    config = resolve_config({"loss": "triplet_ce", "weighting": "first_only", "w_ce": 3.0, "epochs": 1,
                             "sampler_p": 2, "sampler_k": 4, "eval_every": 1})
    assert config.weighting == "first_only" and config.w_ce == DEFAULTS["w_ce"]  # w_* read by fixed only
    result = run_one(config_to_dict(config))
    assert result["status"] == "finished"
    weights = {c: w for c, w in result["steps"][0].items() if c.startswith("weight_")}
    assert weights and weights.get("weight_triplet") == 1.0 and weights.get("weight_ce_id") == 0.0
