"""Grid files and run configs: validation errors name the key, expansion, stable hashes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ablations.config import (CHOICES, DEFAULTS, FIELDS, LOSSES, STORE_FORMAT, RunConfig, config_hash,
                              config_to_dict, resolve_config)
from ablations.grid import expand, load_grid, parse_grid_text


def grid_text(base: str = "", grid: str = "") -> str:
    return f"[base]\n{base}\n[grid]\n{grid}\n"


@pytest.mark.parametrize("text, key, extra", [
    (grid_text(base="lerning_rate = 0.1"), "lerning_rate", "valid keys"),
    (grid_text(grid="lerning_rate = [0.1]"), "lerning_rate", "valid keys"),
    (grid_text(base='epochs = "ten"'), "epochs", "int"),
    (grid_text(base="epochs = 2.5"), "epochs", "int"),
    (grid_text(base="normalize = 1"), "normalize", "bool"),
    (grid_text(base="seed = true"), "seed", "int"),
    (grid_text(grid="margin = []"), "margin", "empty"),
    (grid_text(grid="margin = 0.2"), "margin", "list"),
    (grid_text(grid="margin = [0.1, 0.1]"), "margin", "repeats"),
    (grid_text(base="lr = -0.001"), "lr", "> 0"),
    (grid_text(grid="lr = [0.01, 0.0]"), "lr", "> 0"),
    (grid_text(base="margin = -1.0"), "margin", ">= 0"),
    (grid_text(base="epochs = 0"), "epochs", ">= 1"),
    (grid_text(base="sampler_k = 1"), "sampler_k", ">= 2"),
    (grid_text(base="mining_random_rate = 1.5"), "mining_random_rate", "[0, 1]"),
    (grid_text(base="ema_momentum = 1.0"), "ema_momentum", "[0, 1)"),
    (grid_text(base="dwa_temperature = 0.0"), "dwa_temperature", "> 0"),
    (grid_text(grid='loss = ["batch_hard", "batch_easy"]'), "loss", "batch_all"),
    (grid_text(base='metric = "manhattan"'), "metric", "squared_euclidean"),
    (grid_text(base='weighting = "magic"'), "weighting", "inverse_ema"),
    (grid_text(base='dataset = "mnist"'), "dataset", "digits"),
    (grid_text(base='lr_schedule = "step"'), "lr_schedule", "warmup_cosine"),
    (grid_text(base='margin_schedule = "cosine"'), "margin_schedule", "linear"),
    (grid_text(base='mining = "online"'), "mining", "offline_hard"),
    (grid_text(base="margin = 0.1", grid="margin = [0.2]"), "margin", "both"),
    (grid_text(base='dataset = "npz"'), "npz_path", "npz"),
    (grid_text(base="seed = 99999999999999999999"), "seed", "[0, 2**32 - 1]"),
    (grid_text(grid="seed = [0, 9223372036854775807]"), "seed", "[0, 2**32 - 1]"),
    (grid_text(grid="seed = [4294967296]"), "seed", "[0, 2**32 - 1]"),
    (grid_text(base="seed = -1"), "seed", "[0, 2**32 - 1]"),
    (grid_text(base='dataset = "blobs"\ndata_seed = 4294967296'), "data_seed", "[0, 2**32 - 1]"),
    (grid_text(base="blobs_points_per_class = 1"), "blobs_points_per_class", ">= 2"),
    (grid_text(base='data_fingerprint = "abc"'), "data_fingerprint", "64 lowercase hex"),
    (grid_text(base='epochs = 3\nlr_schedule = "warmup_cosine"\nwarmup_epochs = 4'),
     "warmup_epochs", "longer than training (epochs = 3)"),
    (grid_text(base='epochs = 5\nmargin_schedule = "linear"', grid="margin_ramp_epochs = [5, 6]"),
     "margin_ramp_epochs", "longer than training (epochs = 5)"),
    (grid_text(base="embedding_dim = 1000000"), "embedding_dim", "1.28e+08 weights, about 1.91 GiB"),
    (grid_text(grid="width = [128, 100000]"), "width", "cap of 8192"),
    (grid_text(base="sampler_p = 1000\nsampler_k = 1000"), "sampler_p", "1000000 samples per batch"),
    ("", "empty", "at least one key"),
    ("# nothing yet\n[base]\n[grid]\n", "empty", "at least one key"),
    ("[bass]\nlr = 0.1\n", "bass", "valid sections"),
    ("[base\nlr = 0.1\n", "TOML", "TOML"),
])
def test_invalid_grid_names_the_key(text, key, extra):
    with pytest.raises(ValueError) as err:
        parse_grid_text(text)
    assert key in str(err.value) and extra in str(err.value)


def test_unknown_choice_lists_every_valid_choice():
    with pytest.raises(ValueError) as err:
        parse_grid_text(grid_text(base='loss = "batch_easy"'))
    assert all(name in str(err.value) for name in LOSSES)


def test_expansion_is_the_product_in_grid_order():
    grid = parse_grid_text(grid_text(base="epochs = 3", grid="margin = [0.1, 0.2, 0.3]\n"
                                     "seed = [0, 1]"))
    configs = expand(grid)
    assert grid.num_cells == 6
    assert [(c.margin, c.seed) for c in configs] == [(m, s) for m in (0.1, 0.2, 0.3)
                                                     for s in (0, 1)]
    assert all(c.epochs == 3 and isinstance(c, RunConfig) for c in configs)
    assert len({config_hash(c) for c in configs}) == 6


def test_integer_values_are_accepted_for_float_keys():
    config = expand(parse_grid_text(grid_text(grid="lr = [1]")))[0]
    assert isinstance(config.lr, float) and config.lr == 1.0


def test_cells_that_train_the_same_thing_are_run_once():
    # weighting cannot affect a single-component loss, mining cannot affect batch_hard
    grid = parse_grid_text(grid_text(grid='loss = ["batch_hard", "combined"]\n'
                                     'weighting = ["fixed", "uncertainty"]\n'
                                     'mining = ["none", "offline_hard"]'))
    configs = expand(grid)
    assert grid.num_cells == 8
    assert sum(c.loss == "batch_hard" for c in configs) == 1
    assert sum(c.loss == "combined" for c in configs) == 4
    only = [c for c in configs if c.loss == "batch_hard"][0]
    assert only.weighting == DEFAULTS["weighting"] and only.mining == "none"


def test_canonicalisation_keeps_every_key_that_matters():
    base = {"loss": "combined", "weighting": "fixed", "mining": "offline_hard",
            "margin_schedule": "linear", "lr_schedule": "warmup_cosine", "dataset": "blobs"}
    changes = {"w_pos": 2.0, "w_neg": 0.5, "w_triplet": 3.0, "mining_random_rate": 0.3,
               "margin_start": 0.05, "warmup_epochs": 3, "blobs_spread": 2.0, "data_seed": 4,
               "ce_input": "probabilities", "margin": 0.5, "metric": "cosine", "seed": 1}
    for weighting, key, value in (("gradnorm", "gradnorm_alpha", 0.5), ("gradnorm", "gradnorm_lr", 0.1),
                                  ("dwa", "dwa_temperature", 4.0), ("inverse_ema", "ema_momentum", 0.5),
                                  ("uncertainty", "uncertainty_init", 0.0)):
        params = {**base, "weighting": weighting}
        assert config_hash({**params, key: value}) != config_hash(params), key
    reference = config_hash(base)
    for key, value in changes.items():
        assert config_hash({**base, key: value}) != reference, key


@pytest.mark.parametrize("loss, ignored", [
    ("batch_hard_soft", {"margin": 0.7}),
    ("multi_similarity", {"margin": 0.7, "margin_schedule": "linear"}),
    ("batch_all", {"w_pos": 5.0, "weighting": "dwa", "mining_random_rate": 0.1}),
    ("combined", {"w_ce": 9.0, "id_variant": "batch_all", "npz_path": "x.npz"}),
    ("triplet_ce", {"w_pos": 9.0, "mining": "offline_hard"}),
    ("combined", {"gradnorm_alpha": 0.5, "dwa_temperature": 4.0}),  # weighting is "fixed"
    ("batch_hard", {"ema_momentum": 0.5}),
])
def test_keys_a_run_cannot_use_do_not_change_its_hash(loss, ignored):
    assert config_hash({"loss": loss, **ignored}) == config_hash({"loss": loss})


def test_hash_is_stable_across_processes_and_key_order():
    config = {"loss": "semi_hard_tf", "margin": 0.3, "seed": 7, "lr": 0.01}
    reordered = dict(reversed(list(config.items())))
    code = ("import json, sys; from ablations.config import config_hash; "
            "print(config_hash(json.loads(sys.argv[1])))")
    other = subprocess.run([sys.executable, "-c", code, json.dumps(reordered)], check=True,
                           capture_output=True, text=True, env={"PYTHONHASHSEED": "123"},
                           cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert other.stdout.strip() == config_hash(config)
    assert len(config_hash(config)) == 12 and int(config_hash(config), 16) >= 0


def test_resolved_config_is_flat_frozen_and_complete():
    config = resolve_config({"margin": 0.4})
    flat = config_to_dict(config)
    assert set(flat) == set(FIELDS)
    assert all(isinstance(v, (int, float, str, bool)) for v in flat.values())
    with pytest.raises(Exception):
        config.margin = 0.1  # frozen
    for key, choices in CHOICES.items():
        assert DEFAULTS[key] in choices


def test_resolve_rejects_unknown_keys_naming_them():
    with pytest.raises(ValueError, match="'marign'"):
        resolve_config({"marign": 0.1})


def test_bundled_grids_are_valid(tmp_path):
    from pathlib import Path

    grids = sorted((Path(__file__).parents[1] / "ablations" / "grids").glob("*.toml"))
    assert {"demo.toml", "smoke.toml"} <= {g.name for g in grids}
    for path in grids:
        assert len(expand(load_grid(path))) >= 1


def test_missing_grid_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_grid(tmp_path / "nope.toml")


@pytest.mark.parametrize("loss", ["multi_similarity", "circle"])
def test_cosine_losses_train_and_evaluate_with_cosine(loss):
    assert resolve_config({"loss": loss, "metric": "euclidean"}).metric == "cosine"
    assert resolve_config({"loss": "contrastive", "metric": "euclidean"}).metric == "euclidean"


def test_run_ids_of_this_store_format_never_change():
    # Pinned for STORE_FORMAT 3. A new key these runs read or a changed default moves them:
    # that is a new store format (STORE_FORMAT + 1 and its step in ablations/migrate.py),
    # these ids with it.
    assert STORE_FORMAT == 3
    assert config_hash({}) == "6f6d375f3b40"
    assert config_hash({"loss": "batch_all", "seed": 2}) == "612b2f110e6b"
    assert config_hash({"baseline": "raw"}) == "def64ebcd8b4"


def test_seeds_up_to_two_to_the_32_minus_one_are_accepted():
    assert resolve_config({"seed": 2**32 - 1}).seed == 2**32 - 1


def test_schedules_that_fit_in_training_are_accepted():
    cfg = resolve_config({"epochs": 3, "lr_schedule": "warmup_cosine", "warmup_epochs": 3})
    assert cfg.warmup_epochs == 3
    # a schedule key the run does not use is not checked (constant lr: warmup reset)
    assert resolve_config({"epochs": 1, "warmup_epochs": 5}).warmup_epochs == DEFAULTS["warmup_epochs"]


def test_a_grid_over_the_cap_is_refused_before_expansion(monkeypatch):
    import ablations.grid

    def never(values):
        raise AssertionError("the grid was expanded")

    monkeypatch.setattr(ablations.grid, "resolve_config", never)
    text = grid_text(grid=f"seed = {list(range(1000))}\nlr = {[0.001 * (i + 1) for i in range(1000)]}")
    with pytest.raises(ValueError) as err:
        parse_grid_text(text, source="huge.toml")
    message = str(err.value)
    assert "huge.toml" in message and "1000000 cells (seed 1000 x lr 1000)" in message
    assert "--max-runs 1000000" in message
    with pytest.raises(ValueError, match="4 cells"):
        parse_grid_text(grid_text(grid="seed = [0, 1, 2, 3]"), max_runs=3)
    monkeypatch.undo()
    assert len(expand(parse_grid_text(grid_text(grid="seed = [0, 1, 2, 3]"), max_runs=4))) == 4


def test_grid_file_that_is_a_folder_or_not_utf8_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="is a directory") as err:
        load_grid(tmp_path)
    assert str(tmp_path) in str(err.value)
    latin = tmp_path / "latin1.toml"
    latin.write_bytes("[base]\n# caf\u00e9\nepochs = 2\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8") as err:
        load_grid(latin)
    assert str(latin) in str(err.value)


def test_ntxent_and_focal_keys_are_validated_and_merge_where_unused():
    nt = resolve_config({"loss": "ntxent", "metric": "euclidean", "temperature": 0.2})
    assert nt.metric == "cosine" and nt.temperature == 0.2
    assert resolve_config({"loss": "batch_hard", "temperature": 0.2}) == resolve_config({"loss": "batch_hard"})
    focal = resolve_config({"loss": "combined", "ce": "focal", "focal_gamma": 1.0, "focal_alpha": 0.25})
    assert (focal.ce, focal.focal_gamma, focal.focal_alpha) == ("focal", 1.0, 0.25)
    assert resolve_config({"loss": "combined", "focal_gamma": 1.0}) == resolve_config({"loss": "combined"})
    assert resolve_config({"loss": "triplet_ce", "ce": "focal", "focal_alpha": 0.25}).focal_alpha == -1.0
    assert config_hash({"loss": "combined", "ce": "focal"}) != config_hash({"loss": "combined"})
    for key, value, message in [("temperature", 0.0, "> 0"), ("ce", "fokal", "valid choices"),
                                ("focal_alpha", 1.5, "(0, 1)"), ("focal_gamma", -1.0, ">= 0")]:
        with pytest.raises(ValueError, match=key):
            parse_grid_text(grid_text(base=f"{key} = {json.dumps(value)}"))


def test_a_grid_file_with_a_bom_loads_and_a_link_loop_is_named(tmp_path):
    from ablations.grid import load_grid

    text = "[base]\nepochs = 2\n"
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Windows editors save UTF-8
    grid = load_grid(bom)
    assert grid.base == {"epochs": 2} and grid.text == text
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    with pytest.raises(ValueError, match="loop.toml' is a symbolic link that loops"):
        load_grid(loop)
    dangling = tmp_path / "dangling.toml"
    dangling.symlink_to(tmp_path / "gone.toml")
    with pytest.raises(ValueError, match="symbolic link to the missing .*gone.toml"):
        load_grid(dangling)
    with pytest.raises(ValueError, match="'/dev/null' is not a regular file"):
        load_grid("/dev/null")


def test_keys_that_do_not_apply_are_reported_with_the_losses_they_were_dropped_from(tmp_path, capsys):
    from tripletlab.cli import main
    from ablations.grid import describe_dropped, dropped_keys
    from ablations.runner import run_grid

    text = ('[base]\nepochs = 1\nmining = "offline_hard"\nce = "focal"\nweighting = "gradnorm"\n'
            '[grid]\nloss = ["batch_hard", "naive", "combined"]\n')
    dropped = dropped_keys(parse_grid_text(text))
    assert dropped == {"mining": {"batch_hard"}, "ce": {"batch_hard", "naive"},
                       "weighting": {"batch_hard", "naive"}}
    said = describe_dropped(dropped)
    assert "mining (with loss = batch_hard: read only by loss = naive, combined)" in said
    assert "ce (with loss = batch_hard, naive: read only by loss = combined, triplet_ce)" in said
    assert "weighting (with loss = batch_hard, naive: read only by losses of several components (combined" in said
    assert dropped_keys(parse_grid_text('[base]\nepochs = 1\n[grid]\nseed = [0, 1]\n')) == {}
    rotated = '[base]\nepochs = 1\nclass_folds = 3\nsplit_protocol = "rotated"\n'
    assert dropped_keys(parse_grid_text(rotated)) == {}  # fold 0's reset is not a dropped key
    assert dropped_keys(parse_grid_text(rotated.replace("= 3", "= 1"))) == {
        "split_protocol": {"batch_hard"}}
    grid = tmp_path / "g.toml"
    grid.write_text(text)
    with pytest.warns(UserWarning, match=r"dropped from them .*ce \(with loss = batch_hard, naive:"):
        run_grid(grid, tmp_path / "out", dry_run=True)
    assert main(["run", str(grid), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    err = capsys.readouterr().err  # the command prints it, one line
    assert err.startswith("tripletlab: warning: keys that do not apply") and "mining (with" in err
