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

from ablations.config import BASELINES, DEFAULTS, FIELDS, LOSSES, SHARED_KEYS, _keys_to_reset, keys_read, readers
from ablations.data import DATASET_SPECS
from ablations.keys import names
from ablations.loss_specs import LOSS_SPECS, MARGIN_KEYS

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "keys_not_used.json").read_text())


def _rows():
    """-> (the keys a config sets, the keys the stored rule reset), in the current spelling: the
    fixture names a baseline as a value of `loss` (store format 2); now it is `baseline`, and a
    baseline run reads no loss."""
    varied = FIXTURE["varied"]
    for row in FIXTURE["rows"]:
        pick = {key: varied[key][i] for key, i in zip(varied, row[:-1])}
        mask = int(row[-1], 16)
        reset = {key for i, key in enumerate(FIXTURE["fields"]) if mask >> i & 1}
        if pick["loss"] in BASELINES:
            pick, reset = {**pick, "baseline": pick.pop("loss")}, reset | {"loss"}
        yield pick, reset


def test_the_declarations_reset_exactly_the_keys_of_the_stored_rule():
    assert FIXTURE["fields"] == sorted(set(DEFAULTS) - {"baseline"})
    wrong = [(pick, sorted(set(_keys_to_reset({**DEFAULTS, **pick})) ^ expected))
             for pick, expected in _rows() if set(_keys_to_reset({**DEFAULTS, **pick})) != expected]
    assert wrong[:3] == []


def test_the_fixture_covers_every_value_of_the_choice_keys():
    seen = {key: {pick[key] for pick, _ in _rows()} for key in FIXTURE["varied"]}
    assert seen == {key: set(values) for key, values in FIXTURE["varied"].items()}
    assert set(LOSSES) <= seen["loss"] and set(DATASET_SPECS) <= seen["dataset"]


def test_every_declared_key_is_read_by_some_config_of_the_fixture():
    read = set().union(*(keys_read({**DEFAULTS, **pick}) for pick, _ in _rows()))
    assert sorted(set(FIELDS) - read) == []


@pytest.mark.parametrize("loss", sorted(LOSS_SPECS))
def test_a_loss_reads_its_declared_keys(loss):
    cfg = {**DEFAULTS, "loss": loss, "margin_schedule": "linear", "mining": "offline_hard", "ce": "focal"}
    read = keys_read(cfg)
    spec = LOSS_SPECS[loss]
    assert set(spec.key_names) <= read
    assert (set(names(MARGIN_KEYS)) <= read) == spec.reads_margin(cfg, LOSS_SPECS)
    assert ("weighting" in read) == (len(spec.components) > 1)


def test_every_key_a_run_can_drop_names_its_readers():
    always = {"dataset", "baseline", "metric", "encoder", "embedding_dim", "seed", "fold"} | set(SHARED_KEYS)
    unnamed = [key for key in FIELDS if key not in always and not readers(key).startswith("read only ")]
    assert unnamed == []
    assert readers("focal_alpha") == 'read only when ce = "focal" (read only by loss = combined)'
    assert readers("gradnorm_alpha").startswith("read only by weighting = gradnorm, for losses of several")
