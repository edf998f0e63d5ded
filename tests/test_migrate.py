"""Run ids and store formats: every key enters the id, and a store written by store format 1
(tests/fixtures, made by the code before the format existed) migrates to the same runs under
the ids a fresh run computes, once, resumably, with the same report."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablations import config as config_module
from ablations import migrate, train
from ablations.baselines import with_baselines
from ablations.config import FIELDS, STORE_FORMAT, config_hash, config_to_dict, resolve_config
from ablations.grid import expand, load_grid
from ablations.migrate import migrate_store, open_store, v1_run_id, v2_run_id
from ablations.runner import run_grid
from ablations.store import FORMAT_FILE, ResultsStore, StoreWarning, store_format
from tripletlab.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"
STORES = ["store_v1", "store_v1_search", "store_v2", "store_v2_search"]
FORMAT_OF = {"store_v1": 1, "store_v1_search": 1, "store_v2": 2, "store_v2_search": 2}
# the id rule of each older format (ablations/migrate.py keeps them frozen)
OLD_ID = {1: v1_run_id, 2: v2_run_id}


def _in_format_3(config: dict) -> dict:
    """A config.json of format 1 or 2 (complete: the fixtures' are) -> the one format 3 writes:
    a baseline named by `baseline`, its unread loss at the default; "" for a trained run."""
    if config["loss"] in ("raw", "untrained", "lda", "nca", "pca_whiten"):
        return {**config, "baseline": config["loss"], "loss": "batch_hard"}
    return {**config, "baseline": ""}


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def _runs(root: Path) -> dict[str, Path]:
    return {d.name: d for d in sorted((root / "runs").iterdir())}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _without_id(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "run_id"}


# ---------------------------------------------------------------- ids of the current format

# key -> (a config that uses the key, another valid value for its default[, the default to
# start from where the real one cannot run: a data file's path])
USES = {
    "dataset": ({}, "blobs"), "blobs_classes": ({"dataset": "blobs"}, 20),
    "blobs_dim": ({"dataset": "blobs"}, 16), "blobs_points_per_class": ({"dataset": "blobs"}, 10),
    "blobs_spread": ({"dataset": "blobs"}, 2.0), "blobs_label_noise": ({"dataset": "blobs"}, 0.1),
    "data_seed": ({"dataset": "blobs"}, 3), "npz_path": ({"dataset": "npz"}, "{npz2}", "{npz}"),
    "loss": ({}, "batch_all"), "metric": ({}, "cosine"), "margin": ({}, 0.3),
    "margin_schedule": ({}, "linear"), "margin_start": ({"margin_schedule": "linear"}, 0.1),
    "margin_ramp_epochs": ({"margin_schedule": "linear"}, 5),
    "id_variant": ({"loss": "triplet_ce"}, "batch_all"),
    "ce_input": ({"loss": "combined"}, "probabilities"), "weighting": ({"loss": "combined"}, "dwa"),
    "w_triplet": ({"loss": "combined"}, 2.0), "w_pos": ({"loss": "combined"}, 2.0),
    "w_neg": ({"loss": "combined"}, 2.0), "w_ce": ({"loss": "triplet_ce"}, 2.0),
    "ema_momentum": ({"loss": "combined", "weighting": "inverse_ema"}, 0.5),
    "uncertainty_init": ({"loss": "combined", "weighting": "uncertainty"}, 0.0),
    "gradnorm_alpha": ({"loss": "combined", "weighting": "gradnorm"}, 1.0),
    "gradnorm_lr": ({"loss": "combined", "weighting": "gradnorm"}, 0.01),
    "dwa_temperature": ({"loss": "combined", "weighting": "dwa"}, 1.0),
    "lr": ({}, 1e-2), "lr_schedule": ({}, "warmup_cosine"),
    "warmup_epochs": ({"lr_schedule": "warmup_cosine"}, 3), "epochs": ({}, 20), "seed": ({}, 1),
    "sampler_p": ({}, 4), "sampler_k": ({}, 8), "hidden_layers": ({}, 2), "width": ({}, 64),
    "embedding_dim": ({}, 16), "normalize": ({}, False), "mining": ({"loss": "naive"}, "offline_hard"),
    **{key: ({"loss": "naive", "mining": "offline_hard"}, value) for key, value in (
        ("mining_refresh_epochs", 2), ("mining_neighbours", 10), ("mining_random_rate", 0.25),
        ("mining_hard_start", 0.5), ("mining_hard_end", 0.75))},
    "eval_every": ({}, 5), "encoder": ({}, "conv"), "image_shape": ({"encoder": "conv"}, "1x8x8"),
    "conv_channels": ({"encoder": "conv"}, 16),
    **{key: ({"dataset": "nuisance"}, value) for key, value in (
        ("nuisance_classes", 60), ("nuisance_points_per_class", 20), ("nuisance_content_dim", 4),
        ("nuisance_dim", 12), ("nuisance_scale", 2.0), ("nuisance_within", 0.25),
        ("nuisance_warp", 0.5))},
    "idx_images": ({"dataset": "idx", "idx_labels": "{labels}"}, "{images2}", "{images}"),
    "idx_labels": ({"dataset": "idx", "idx_images": "{images}"}, "{labels2}", "{labels}"),
    "class_folds": ({}, 2), "fold": ({"class_folds": 2}, 1),
    "data_fingerprint": ({"dataset": "npz", "npz_path": "{npz}"}, "ab" * 32),
    "temperature": ({"loss": "ntxent"}, 0.1), "ce": ({"loss": "combined"}, "focal"),
    "focal_gamma": ({"loss": "combined", "ce": "focal"}, 1.0),
    "focal_alpha": ({"loss": "combined", "ce": "focal"}, 0.25),
    "split_protocol": ({"class_folds": 2, "fold": 1}, "rotated"),
    **{key: ({"dataset": "pose"}, value) for key, value in (
        ("pose_classes", 60), ("pose_points_per_class", 20), ("pose_content_dim", 4),
        ("pose_dim", 4), ("pose_scale", 2.0), ("pose_within", 0.25), ("pose_gain", 0.1),
        ("pose_warp", 0.25))},
    "memory_size": ({"loss": "batch_all"}, 256),
    "memory_weight": ({"loss": "batch_all", "memory_size": 256}, 0.5),
    "memory_start_epoch": ({"loss": "batch_all", "memory_size": 256}, 2),
    "baseline": ({}, "raw"),
}


def test_every_key_of_runconfig_has_a_config_that_uses_it_below():
    assert sorted(USES) == sorted(FIELDS)


@pytest.fixture
def data_files(tmp_path):
    """{name: path} of the data files the configs of USES name (their bytes are only hashed)."""
    files = {}
    for n in ("", "2"):
        files |= {f"npz{n}": tmp_path / f"d{n}.npz", f"images{n}": tmp_path / f"i{n}.idx",
                  f"labels{n}": tmp_path / f"l{n}.idx"}
        np.savez(files[f"npz{n}"], X=np.zeros((4, 2)), y=np.arange(4))
        files[f"images{n}"].write_bytes(f"images{n}".encode())
        files[f"labels{n}"].write_bytes(f"labels{n}".encode())
    return {name: str(path) for name, path in files.items()}


def _set_default(monkeypatch, key: str, value) -> None:
    """Change the default that `key`'s declaration gives it, for one test."""
    schema = config_module.schema()
    patched = {**schema, key: dataclasses.replace(schema[key], default=value)}
    monkeypatch.setattr(config_module, "_SCHEMA", [config_module._SCHEMA[0], patched])


@pytest.mark.parametrize("key", list(FIELDS))
def test_changing_a_default_changes_the_id_of_a_run_that_uses_the_key(key, data_files, monkeypatch):
    context, value, *start = USES[key]
    fill = (lambda v: v.format(**data_files) if isinstance(v, str) else v)
    context, value = {k: fill(v) for k, v in context.items()}, fill(value)
    if start:
        _set_default(monkeypatch, key, fill(start[0]))
    before = config_hash(context)
    assert value != config_module.DEFAULTS[key]
    _set_default(monkeypatch, key, value)
    changed = resolve_config(context)
    assert getattr(changed, key) == value   # the run uses the key at its new default ...
    assert config_hash(changed) != before   # ... so its id is another


def test_the_id_hashes_every_key_and_the_store_format(monkeypatch):
    before = config_hash({})
    monkeypatch.setattr(config_module, "STORE_FORMAT", STORE_FORMAT + 1)
    assert config_hash({}) != before


# ---------------------------------------------------------------- formats 1 and 2 -> the current format

def test_the_format_1_rule_is_frozen_with_its_defaults(monkeypatch):
    stored = config_to_dict(resolve_config({}))
    assert v1_run_id(stored) == "0bf46c988a11"      # the ids format 1 gave, recorded then
    assert v1_run_id(config_to_dict(resolve_config({"loss": "batch_all", "seed": 2}))) == "425d992a86e5"
    _set_default(monkeypatch, "memory_weight", 0.5)  # a default changed later
    assert v1_run_id(stored) == "0bf46c988a11"


def test_the_format_2_rule_is_frozen():
    assert v2_run_id(config_to_dict(resolve_config({}))) == "8499e10a94db"    # the ids format 2 gave, recorded then
    assert v2_run_id(config_to_dict(resolve_config({"baseline": "raw"}))) == "dd7ed114e8c2"


@pytest.mark.parametrize("name", STORES)
def test_a_migrated_store_holds_the_same_runs_under_the_ids_a_fresh_run_computes(name, tmp_path):
    root = _copy(name, tmp_path)
    assert store_format(root) == FORMAT_OF[name]
    before = _runs(FIXTURES / name)
    renamed = migrate_store(root)
    after = _runs(root)
    assert renamed == len(before) == len(after)
    assert json.loads((root / FORMAT_FILE).read_text()) == {"store_format": STORE_FORMAT}
    for old, folder in before.items():
        config = json.loads((folder / "config.json").read_text())
        new = config_hash(_without_id(_in_format_3(config)))
        assert OLD_ID[FORMAT_OF[name]](config) == old and new != old
        moved = after[new]
        stored = json.loads((moved / "config.json").read_text())
        assert stored["run_id"] == new   # the keys the run reads, their values unchanged:
        assert {k: v for k, v in _without_id(_in_format_3(config)).items() if k in stored} == _without_id(stored)
        assert resolve_config(_without_id(stored)) == resolve_config(_without_id(_in_format_3(config)))
        result, result_after = (json.loads((d / "result.json").read_text()) for d in (folder, moved))
        assert result_after == {**result, "run_id": new}   # metrics to the last digit
        for table in ("steps.parquet", "epochs.parquet"):
            frame = pd.read_parquet(folder / table)
            pd.testing.assert_frame_equal(pd.read_parquet(moved / table),
                                          frame.assign(run_id=new), check_exact=True)
        assert (moved / "embeddings.npz").read_bytes() == (folder / "embeddings.npz").read_bytes()
    runs = ResultsStore(root).runs().set_index("run_id")
    old_runs = pd.read_parquet(FIXTURES / name / "runs.parquet")
    old_runs["run_id"] = [config_hash(_without_id(_in_format_3(json.loads((before[r] / "config.json").read_text()))))
                          for r in old_runs["run_id"]]
    old_runs = old_runs.set_index("run_id")
    assert set(runs.index) == set(after) == set(old_runs.index)
    metrics = [c for c in old_runs.columns if c.startswith(("val_", "test_"))]
    pd.testing.assert_frame_equal(runs.loc[old_runs.index, metrics], old_runs[metrics],
                                  check_exact=True)


@pytest.mark.parametrize("name", ["store_v1", "store_v2"])
def test_the_migrated_ids_are_the_grids_and_a_rerun_trains_nothing(name, tmp_path, monkeypatch):
    root = _copy(name, tmp_path)
    grid = load_grid(FIXTURES / f"{name}_grid.toml")
    expected = {config_hash(c) for c in with_baselines(expand(grid), include=grid.baselines)}
    migrate_store(root)
    assert set(_runs(root)) == expected

    def no_training(*args, **kwargs):
        raise AssertionError("a migrated run was trained again")

    monkeypatch.setattr(train, "run_one", no_training)
    store = run_grid(FIXTURES / f"{name}_grid.toml", root, workers=1)
    assert sum(store.written.values()) == 0 and set(_runs(root)) == expected


@pytest.mark.parametrize("name", ["store_v1_search", "store_v2_search"])
def test_a_migrated_search_store_resumes_with_nothing_to_run(name, tmp_path, monkeypatch):
    root = _copy(name, tmp_path)
    monkeypatch.setattr(train, "run_one", lambda *a, **k: pytest.fail("a run was trained again"))
    store = run_grid(FIXTURES / f"{name}_grid.toml", root, workers=1)  # migrates on open
    assert sum(store.written.values()) == 0 and store_format(root) == STORE_FORMAT
    trials = pd.read_parquet(root / "search" / "trials.parquet")
    ids = {rid for text in trials["run_ids"] for rid in text.split(",")}
    assert ids and ids <= set(_runs(root))


@pytest.mark.parametrize("name", STORES)
def test_the_report_of_a_migrated_store_shows_the_same_leaderboard(name, tmp_path, capsys):
    root = _copy(name, tmp_path)
    assert main(["report", str(root), "--out", str(tmp_path / "report")]) == 0  # migrates on open
    err = capsys.readouterr().err
    assert f"migrated the results store {root} from store format {FORMAT_OF[name]} to {STORE_FORMAT}" in err
    assert f"{len(_runs(root))} run(s) renamed" in err
    written = (tmp_path / "report" / "tables" / "leaderboard.csv").read_text()
    assert written == (FIXTURES / f"{name}_leaderboard.csv").read_text()


def test_migrating_twice_changes_nothing(tmp_path, capsys):
    root = _copy("store_v1_search", tmp_path)
    migrate_store(root)
    files = _files(root)
    assert migrate_store(root) == 0
    assert main(["migrate", str(root)]) == 0
    assert "nothing to migrate" in capsys.readouterr().out
    assert _files(root) == files


def test_an_interrupted_migration_resumes_and_loses_no_run(tmp_path, monkeypatch):
    clean = _copy("store_v1_search", tmp_path / "clean")
    migrate_store(clean)
    root = _copy("store_v1_search", tmp_path / "killed")
    removed = []
    real_rmtree = shutil.rmtree

    def killed_on_the_third(path, *args, **kwargs):  # killed after a new folder was written
        if len(removed) == 2:
            raise KeyboardInterrupt
        removed.append(path)
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(migrate.shutil, "rmtree", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        migrate_store(root)
    monkeypatch.setattr(migrate.shutil, "rmtree", real_rmtree)
    assert not (root / FORMAT_FILE).exists() and (root / migrate.JOURNAL_FILE).is_file()
    assert len(_runs(root)) == len(_runs(FIXTURES / "store_v1_search")) + 1  # one run twice
    open_store(root)   # the next open resumes
    assert not (root / migrate.JOURNAL_FILE).exists()
    assert {k: v for k, v in _files(root).items() if not k.endswith(".parquet")} == \
        {k: v for k, v in _files(clean).items() if not k.endswith(".parquet")}
    assert sorted(pd.read_parquet(root / "search" / "trials.parquet")["run_ids"]) == \
        sorted(pd.read_parquet(clean / "search" / "trials.parquet")["run_ids"])


def test_folders_that_are_not_runs_of_the_store_are_left_and_duplicates_kept(tmp_path):
    root = _copy("store_v1", tmp_path)
    first = sorted(_runs(root))[0]
    forged = root / "runs" / "0123456789ab"   # a copy under a name that is not its config's id
    shutil.copytree(root / "runs" / first, forged)
    config = json.loads((root / "runs" / first / "config.json").read_text())
    unused = {**config, "w_pos": 3.0}         # a key its loss does not use: the same new id
    twin = root / "runs" / v1_run_id(unused)
    shutil.copytree(root / "runs" / first, twin)
    (twin / "config.json").write_text(json.dumps({**unused, "run_id": twin.name}))
    result = json.loads((twin / "result.json").read_text())
    (twin / "result.json").write_text(json.dumps({**result, "run_id": twin.name, "wall_time_s": -1.0}))
    forged_files = _files(forged)
    with pytest.warns(StoreWarning, match="0123456789ab"):   # the store still names it
        assert migrate_store(root) == 8
    assert _files(forged) == forged_files
    # the twin migrated second (runs/ in name order) finds its new id taken: kept aside
    assert [d.name for d in (root / migrate.DUPLICATES_DIR).iterdir()] == [max(first, twin.name)]
    assert len(_runs(root)) == 8   # 7 runs and the forged folder


def test_a_format_1_store_is_not_written_to_before_it_is_migrated(tmp_path):
    root = _copy("store_v1", tmp_path)
    with pytest.raises(ValueError, match="tripletlab migrate"):
        ResultsStore(root).claim((root / "grid.toml").read_text())


def test_a_new_store_records_its_format(tmp_path):
    store = ResultsStore(tmp_path / "new")
    store.claim("[base]\n")
    assert store_format(store.root) == STORE_FORMAT


def test_migrate_on_a_directory_that_is_no_store_is_an_error_naming_it(tmp_path, capsys):
    assert main(["migrate", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_a_store_of_a_newer_format_is_refused(tmp_path, capsys):
    (tmp_path / FORMAT_FILE).write_text(json.dumps({"store_format": STORE_FORMAT + 1}))
    assert main(["migrate", str(tmp_path)]) == 2
    assert f"store format {STORE_FORMAT + 1}" in capsys.readouterr().err


def test_a_store_the_run_refuses_is_not_migrated(tmp_path):
    """A format-1 store of another grid: refused (no --extend) before anything is rewritten."""
    root = _copy("store_v1", tmp_path)
    before = sorted(_runs(root))
    other = tmp_path / "other.toml"
    other.write_text("[base]\nepochs = 1\n[grid]\nseed = [5]\n")
    with pytest.raises(ValueError, match="created by a different grid file"):
        run_grid(other, root)
    assert sorted(_runs(root)) == before and store_format(root) == 1


def test_a_component_registered_while_migrating_changes_no_migrated_id(tmp_path, monkeypatch):
    """A store migrated by a process that has registered a dataset with a key of its own gets
    the ids a fresh run computes (the key is none of the stored runs')."""
    from ablations.data import DATASET_SPECS, DatasetSpec
    from ablations.keys import Key

    monkeypatch.setitem(DATASET_SPECS, "mine", DatasetSpec((Key("mine_size", 5, "mine: size"),), lambda c: None))
    root = _copy("store_v2", tmp_path)
    migrate_store(root)
    for run_id, folder in _runs(root).items():
        stored = json.loads((folder / "config.json").read_text())
        assert "mine_size" not in stored and config_hash(_without_id(stored)) == run_id
    grid = load_grid(FIXTURES / "store_v2_grid.toml")
    assert set(_runs(root)) == {config_hash(c) for c in with_baselines(expand(grid), include=grid.baselines)}
