"""A user's loss, encoder and dataset in a grid: validated when the grid is loaded, run end to end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ablations.config import config_hash, resolve_config
from ablations.grid import parse_grid_text
from ablations.model import build_encoder
from ablations.objectives import build_objective
from tripletlab.cli import main

EX = "tests.plugins_example"


@pytest.mark.parametrize("key, value, message", [
    ("loss", f"{EX}:loss_returning_list", "must return a scalar tensor"),
    ("loss", f"{EX}:loss_of_one_argument", "must accept 2 positional argument(s)"),
    ("loss", f"{EX}:NOT_CALLABLE", "not a callable"),
    ("loss", "no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
    ("loss", f"{EX}:missing", "has no attribute 'missing'"),
    ("encoder", f"{EX}:encoder_wrong_width", "must map (2, 5) to (2, 4), got (2, 5)"),
    ("encoder", f"{EX}:encoder_not_a_module", "must return a torch.nn.Module"),
    ("dataset", f"{EX}:data_with_float_labels", "y must be a 1-D integer array"),
    ("dataset", ":load_data", "must look like 'package.module:name'"),
    ("dataset", f"{EX}:data_that_exits", "called sys.exit(3) instead of returning (X, y)"),
    ("dataset", f"{EX}:data_on_the_meta_device", "returned X on the meta device"),
])
def test_a_bad_piece_is_an_error_naming_the_key_and_the_import_string(key, value, message):
    text = f'[base]\nepochs = 1\n[grid]\n{key} = ["{value}"]\n'
    with pytest.raises(ValueError) as err:
        parse_grid_text(text, source="g.toml")
    assert f"{key!r}" in str(err.value) and value in str(err.value) and message in str(err.value)


def test_a_loader_returning_tensors_that_require_grad_gives_their_values():
    from ablations.plugins import load_plugin_xy
    from tests.plugins_example import load_data

    x, y = load_plugin_xy(f"{EX}:data_requiring_grad")
    expected_x, expected_y = load_data()
    assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)
    parse_grid_text(f'[base]\nepochs = 1\ndataset = "{EX}:data_requiring_grad"\n', source="g.toml")


def test_a_loader_is_fingerprinted_and_other_data_in_a_worker_is_named():
    from ablations.data import load_split, plugin_fingerprint
    from ablations.plugins import load_plugin_xy

    text = f"{EX}:data_differing_by_call"
    config = resolve_config({"dataset": text})
    assert len(config.data_fingerprint) == 64  # the arrays' sha256: part of the run id
    assert config_hash(config) != config_hash(resolve_config({"dataset": f"{EX}:load_data"}))
    load_split(config)  # the same process: the data it was resolved with
    load_plugin_xy.cache_clear()  # as a worker process, which calls the loader again
    plugin_fingerprint.cache_clear()
    with pytest.raises(ValueError) as err:
        load_split(config)
    assert text in str(err.value) and "returned other data in this process" in str(err.value)
    assert config.data_fingerprint[:16] in str(err.value)


def test_run_id_covers_the_import_string_and_unused_keys_merge():
    a = resolve_config({"loss": f"{EX}:my_loss", "encoder": f"{EX}:make_encoder", "width": 64})
    b = resolve_config({"loss": f"{EX}:my_loss", "encoder": f"{EX}:make_encoder"})
    c = resolve_config({"loss": f"{EX}:two_part_loss", "encoder": f"{EX}:make_encoder"})
    assert config_hash(a) == config_hash(b) != config_hash(c)  # width is the MLP's: unused here
    assert a.weighting == "fixed" and a.margin == 0.2
    several = resolve_config({"loss": f"{EX}:two_part_loss", "weighting": "uncertainty", "w_pos": 3.0})
    assert several.weighting == "uncertainty" and several.w_pos == 1.0  # weighted; w_pos names no component


def test_objective_and_encoder_of_own_pieces():
    config = resolve_config({"loss": f"{EX}:loss_with_stats", "encoder": f"{EX}:make_encoder", "embedding_dim": 6})
    objective = build_objective(config, num_classes=3)
    encoder = build_encoder(config, 5)
    embeddings = encoder(torch.randn(12, 5))
    out = objective(embeddings, torch.arange(12) % 3, 0.2)
    assert list(out.components) == ["loss"] and not math.isnan(out.stats["active_fraction"])  # its own stats
    out.components["loss"].backward()
    assert [p.shape for p in encoder.shared_parameters()] == [(6, 5), (6,)]  # the last layer with parameters
    assert all(p.grad is not None for p in encoder.parameters())


def test_a_grid_of_own_pieces_runs_and_reports(tmp_path, capsys):
    grid = tmp_path / "own.toml"
    grid.write_text(f'''
[base]
dataset = "{EX}:load_data"
encoder = "{EX}:make_encoder"
epochs = 2
eval_every = 2
sampler_p = 3
sampler_k = 4
embedding_dim = 8

[grid]
loss = ["{EX}:my_loss", "{EX}:two_part_loss", "batch_hard"]
''')
    store = tmp_path / "store"
    assert main(["run", str(grid), "--out", str(store), "--workers", "1"]) == 0, capsys.readouterr().err
    runs = pd.read_parquet(store / "runs.parquet")
    assert set(runs["status"]) == {"finished"} and len(runs) == 3 + 5  # + every baseline
    assert set(runs.loc[runs["baseline"] == "", "loss"]) == {f"{EX}:my_loss", f"{EX}:two_part_loss", "batch_hard"}
    assert set(runs["baseline"]) == {"", "raw", "untrained", "lda", "nca", "pca_whiten"}
    assert (runs.loc[runs["baseline"] == "untrained", "encoder"] == f"{EX}:make_encoder").all()
    steps = pd.read_parquet(store / "steps.parquet")
    assert {"loss_loss", "loss_triplet", "loss_norm"} <= set(steps.columns)
    assert main(["report", str(store)]) == 0
    html = (store / "report" / "report.html").read_text()
    assert f"{EX}:my_loss" in html and f"{EX}:two_part_loss" in html


def test_building_a_users_encoder_leaves_it_at_initialisation():
    """The shape check runs the module in eval mode without gradients: no BatchNorm statistics, training mode kept."""
    config = resolve_config({"loss": f"{EX}:my_loss", "encoder": f"{EX}:encoder_with_batch_norm"})
    encoder = build_encoder(config, 5)
    norm = encoder[1]
    assert encoder.training
    assert int(norm.num_batches_tracked) == 0
    assert torch.equal(norm.running_var, torch.ones(8)) and torch.equal(norm.running_mean, torch.zeros(8))
