"""A new component is its own code plus one registry line: a toy dataset, encoder, weighting
method, loss and baseline, each defined here with a key of its own (default, check) and
registered with one `monkeypatch.setitem` (no other file of the suite edited), is a valid
value of its key, has its key validated, kept where read and reset where not, changes the id
of no run that does not read its key, and runs end to end through `ablations.train.run_one`.
When it is unregistered, its key is gone again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ablations.config import DEFAULTS, FIELDS, config_hash, config_to_dict, resolve_config
from ablations.keys import DATA_SEED, POSITIVE, Key, above
from ablations.train import run_one

TINY = {"epochs": 1, "sampler_p": 2, "sampler_k": 4, "eval_every": 1}


def finished(config) -> dict:
    result = run_one(config_to_dict(config))
    assert result["status"] == "finished", result["error"]
    assert 0 <= result["metrics"]["test_map_at_r"] <= 1
    return result


# --- a dataset: its arrays, one line in ablations.data.DATASET_SPECS -------------------------
def toy_xy(config):
    rng = np.random.default_rng(config.data_seed)
    y = np.repeat(np.arange(config.toy_classes), 10)
    return (rng.normal(size=(len(y), 6)) + 3 * np.eye(config.toy_classes, 6)[y]).astype(np.float32), y


TOY_CLASSES = Key("toy_classes", 8, "toy: number of classes", POSITIVE)


def test_a_new_dataset_is_its_loader_and_one_registry_line(monkeypatch):
    from ablations.data import DATASET_SPECS, DatasetSpec, load_split

    others = [config_hash(c) for c in ({}, {"dataset": "blobs"}, {"baseline": "raw"})]
    monkeypatch.setitem(DATASET_SPECS, "toy", DatasetSpec((TOY_CLASSES, DATA_SEED), toy_xy))
    assert [config_hash(c) for c in ({}, {"dataset": "blobs"}, {"baseline": "raw"})] == others  # not read there
    config = resolve_config({"dataset": "toy", "toy_classes": 7, "data_seed": 3, "blobs_dim": 9, **TINY})
    assert (config.toy_classes, config.data_seed, config.blobs_dim) == (7, 3, DEFAULTS["blobs_dim"])
    assert resolve_config({"toy_classes": 7}).toy_classes == 8  # digits does not read it: reset
    with pytest.raises(ValueError, match=r"key 'toy_classes' must be >= 1, got 0"):
        resolve_config({"dataset": "toy", "toy_classes": 0})
    split = load_split(config)
    assert len(set(split.y_train) | set(split.y_val) | set(split.y_test)) == 7
    assert not set(split.y_train) & set(split.y_test)
    finished(config)
    monkeypatch.undo()
    assert "toy_classes" not in FIELDS


# --- an encoder: its builder, one line in ablations.model.ENCODER_SPECS ----------------------
class Scaled(nn.Linear):
    def __init__(self, in_features, out_features, scale):
        super().__init__(in_features, out_features)
        self.scale = scale

    def forward(self, x):
        return self.scale * super().forward(x)

    def shared_parameters(self):
        return list(self.parameters())


def test_a_new_encoder_is_its_builder_and_one_registry_line(monkeypatch):
    from ablations.model import ENCODER_SPECS, EncoderSpec, build_encoder

    scale = Key("linear_scale", 1.0, "linear: factor on the output", (above(0),))
    monkeypatch.setitem(ENCODER_SPECS, "linear", EncoderSpec(
        (scale,), lambda config, f: Scaled(f, config.embedding_dim, config.linear_scale)))
    config = resolve_config({"encoder": "linear", "linear_scale": 2.0, "hidden_layers": 3,
                             "embedding_dim": 5, **TINY})
    assert config.linear_scale == 2.0 and config.hidden_layers == DEFAULTS["hidden_layers"]
    with pytest.raises(ValueError, match=r"key 'linear_scale' must be > 0, got -1.0"):
        resolve_config({"encoder": "linear", "linear_scale": -1})
    assert build_encoder(config, 64)(torch.zeros(3, 64)).shape == (3, 5)
    finished(config)


# --- a weighting method: its class, one line in losses.weighting.WEIGHTINGS -----------------
def test_a_new_weighting_method_is_its_class_and_one_registry_line(monkeypatch):
    from losses.weighting import WEIGHTINGS, Weighting

    class FirstOnly(Weighting):
        """total = share * the first component's loss; its parameter is the key first_share."""

        config_keys = {"first_share": "share"}

        def __init__(self, *, components, share: float = 1.0):
            super().__init__(components=components)
            if not 0 < share <= 1:
                raise ValueError(f"expected share in (0, 1], got {share!r}")
            self.share = share

        def _combine(self, values, shared):
            weights = torch.zeros_like(values)
            weights[0] = self.share
            return self.share * values[0], weights, None

    monkeypatch.setitem(WEIGHTINGS, "first_only", FirstOnly)
    config = resolve_config({"loss": "triplet_ce", "weighting": "first_only", "first_share": 0.5,
                             "w_ce": 3.0, **TINY})
    assert config.first_share == 0.5 and config.w_ce == DEFAULTS["w_ce"]  # w_* read by fixed only
    assert resolve_config({"loss": "triplet_ce", "first_share": 0.5}).first_share == 1.0  # fixed: reset
    with pytest.raises(ValueError, match=r"key 'first_share' is not a valid share of FirstOnly: expected share "
                                         r"in \(0, 1\], got 2.0"):
        resolve_config({"loss": "triplet_ce", "weighting": "first_only", "first_share": 2.0})
    result = finished(config)
    weights = {c: w for c, w in result["steps"][0].items() if c.startswith("weight_")}
    assert weights == {"weight_triplet": 0.5, "weight_ce_id": 0.0}


# --- a loss: its objective, one line in ablations.loss_specs.LOSS_SPECS ---------------------
class PullPush(nn.Module):
    """toy loss: push_weight * relu(1 - d_neg) mean + d_pos mean over the batch's pairs."""

    explicit_triplets = False
    components = ("pull", "push")

    def __init__(self, push_weight: float):
        super().__init__()
        self.push_weight = push_weight

    def forward(self, embeddings, labels, margin):
        from ablations.objectives import STAT_NAMES, StepLoss

        d = torch.cdist(embeddings, embeddings)
        same = labels[:, None] == labels[None, :]
        off = ~torch.eye(len(labels), dtype=torch.bool)
        return StepLoss({"pull": d[same & off].mean(), "push": self.push_weight * (1 - d[~same]).relu().mean()},
                        dict.fromkeys(STAT_NAMES, float("nan")))


def test_a_new_loss_is_its_objective_and_one_registry_line(monkeypatch):
    from ablations.loss_specs import LOSS_SPECS, LossSpec

    push = Key("push_weight", 1.0, "pull_push: weight of the push term", (above(0),))
    batch_all = config_hash({"loss": "batch_all"})
    monkeypatch.setitem(LOSS_SPECS, "pull_push", LossSpec(
        lambda config, num_classes: PullPush(config.push_weight), (push,), takes_margin=False,
        components=("pull", "push")))
    assert config_hash({"loss": "batch_all"}) == batch_all   # its key changes no other run's id
    config = resolve_config({"loss": "pull_push", "push_weight": 2.0, "margin": 0.5,
                             "weighting": "uncertainty", **TINY})
    assert (config.push_weight, config.margin, config.weighting) == (2.0, DEFAULTS["margin"], "uncertainty")
    with pytest.raises(ValueError, match=r"key 'push_weight' must be > 0, got 0.0"):
        resolve_config({"loss": "pull_push", "push_weight": 0})
    assert config_hash(config) != config_hash(config.replace(push_weight=3.0))
    result = finished(config)
    assert {"loss_pull", "loss_push"} <= set(result["steps"][0]) and result["steps"][0]["weight_push"] > 0


# --- a baseline: its embedding function, one line in ablations.baseline_specs.BASELINE_SPECS --
def mean_centred(config, split):
    """The features minus the training classes' mean, scaled by the key centred_scale."""
    from ablations.baseline_specs import BaselineEmbedding

    centre = split.x_train.mean(axis=0)
    return BaselineEmbedding(lambda x: torch.from_numpy(config.centred_scale * (x - centre)),
                             {"baseline_params": '{"centred": true}'})


def test_a_new_baseline_is_its_embedding_and_one_registry_line(monkeypatch, tmp_path):
    from ablations.baseline_specs import BASELINE_SPECS, BaselineSpec
    from ablations.runner import run_grid
    from tripletlab.cli import main

    scale = Key("centred_scale", 1.0, "mean_centred: factor on the features", (above(0),))
    monkeypatch.setitem(BASELINE_SPECS, "mean_centred", BaselineSpec(mean_centred, (scale,)))
    config = resolve_config({"baseline": "mean_centred", "centred_scale": 2.0, "lr": 0.5, "seed": 3})
    assert (config.centred_scale, config.lr, config.seed) == (2.0, DEFAULTS["lr"], 0)  # untrained: reset
    with pytest.raises(ValueError, match=r"key 'centred_scale' must be > 0, got 0.0"):
        resolve_config({"baseline": "mean_centred", "centred_scale": 0})
    result = finished(config)
    assert result["steps"] == [] and result["baseline_params"] == '{"centred": true}'

    grid = tmp_path / "grid.toml"
    grid.write_text('[base]\ndataset = "digits"\nepochs = 1\nwidth = 16\nembedding_dim = 4\n'
                    '[grid]\nseed = [0, 1]\n[baselines]\ninclude = ["raw", "mean_centred"]\n')
    store = run_grid(grid, tmp_path / "store", workers=1)
    runs = store.runs()
    assert sorted(runs["baseline"]) == ["", "", "mean_centred", "raw"]
    assert main(["report", str(tmp_path / "store"), "--out", str(tmp_path / "report")]) == 0
    board = (tmp_path / "report" / "tables" / "leaderboard.csv").read_text()
    assert ",baseline,mean_centred," in board and ",variant,batch_hard," in board
