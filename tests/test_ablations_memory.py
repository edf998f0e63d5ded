"""The cross-batch memory keys of a run: validation, canonical run ids, training, a grid end to end."""

from __future__ import annotations

import pandas as pd
import pytest

from ablations.config import DEFAULTS, config_hash, resolve_config
from ablations.train import run_one
from tripletlab.cli import main

TINY = {"dataset": "digits", "epochs": 2, "eval_every": 2, "sampler_p": 4, "sampler_k": 4}


def test_memory_keys_at_their_defaults_keep_every_run_id():
    assert DEFAULTS["memory_size"] == 0
    plain = resolve_config({"loss": "batch_all"})
    assert config_hash(plain) == config_hash({**DEFAULTS, "loss": "batch_all"})
    # memory off: its weight and start cannot change the run, so they do not change its id
    assert config_hash(resolve_config({"loss": "batch_all", "memory_weight": 0.5, "memory_start_epoch": 3})) \
        == config_hash(plain)
    with_memory = resolve_config({"loss": "batch_all", "memory_size": 2048})
    assert config_hash(with_memory) != config_hash(plain)
    assert config_hash(resolve_config({"loss": "batch_all", "memory_size": 2048, "memory_weight": 0.5})) \
        != config_hash(with_memory)


@pytest.mark.parametrize("values, words", [
    ({"loss": "ntxent", "memory_size": 512}, "memory_size' = 512 needs a triplet loss"),
    ({"loss": "batch_hard", "memory_size": 40}, "smaller than a step's 80 embeddings"),
    ({"loss": "naive", "memory_size": 100}, "smaller than a step's 240 embeddings"),
    ({"loss": "batch_hard", "memory_size": 512, "memory_start_epoch": 30}, "memory_start_epoch' = 30"),
    ({"loss": "batch_hard", "memory_size": -1}, "memory_size"),
    ({"loss": "batch_hard", "memory_size": 512, "memory_weight": -0.5}, "memory_weight"),
])
def test_bad_memory_settings_are_errors_naming_the_key(values, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        resolve_config(values)


@pytest.mark.parametrize("loss", ["batch_all", "batch_hard", "batch_hard_soft", "semi_hard_tf", "semi_hard_pml",
                                  "triplet_ce", "naive", "combined"])
def test_every_triplet_loss_trains_with_a_memory(loss):
    config = {**TINY, "loss": loss, "memory_size": 100, "epochs": 1, "eval_every": 1}
    with_memory, without = run_one(config), run_one({**config, "memory_size": 0})
    assert with_memory["status"] == "finished", with_memory["error"]
    first = with_memory["steps"][1]["loss_triplet"], without["steps"][1]["loss_triplet"]
    assert first[0] != first[1]  # the memory term is in the triplet component from the first steps on


def test_memory_start_epoch_delays_the_memory_term():
    config = {**TINY, "loss": "batch_hard", "memory_size": 64, "memory_start_epoch": 1}
    delayed, without = run_one(config), run_one({**config, "memory_size": 0})
    steps_per_epoch = sum(1 for row in without["steps"] if row["epoch"] == 0)
    assert [r["loss"] for r in delayed["steps"][:steps_per_epoch]] == \
        [r["loss"] for r in without["steps"][:steps_per_epoch]]
    assert delayed["steps"][steps_per_epoch]["loss"] != without["steps"][steps_per_epoch]["loss"]


@pytest.mark.slow
def test_a_grid_over_memory_size_runs_and_reports_it_as_an_axis(tmp_path):
    grid = tmp_path / "memory.toml"
    grid.write_text('[base]\ndataset = "digits"\nepochs = 2\neval_every = 1\nsampler_p = 4\nsampler_k = 8\n'
                    'loss = "batch_hard"\n\n[grid]\nmemory_size = [0, 64]\n')
    store = tmp_path / "store"
    assert main(["run", str(grid), "--out", str(store), "--workers", "1"]) == 0
    runs = pd.read_parquet(store / "runs.parquet")
    trained = runs[runs["baseline"] == ""]
    assert sorted(trained["memory_size"]) == [0, 64] and set(trained["status"]) == {"finished"}
    assert main(["report", str(store)]) == 0
    html = (store / "report" / "report.html").read_text()
    assert "memory_size" in html
