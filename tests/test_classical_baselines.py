"""Classical baselines (LDA, NCA, PCA whitening) and the collapse / under-training flags.

A store built here on a linearly mixed Gaussian set (class signal in 4 of 32 dimensions,
rotated into all of them) makes LDA the best baseline and raises the warning in the
report, summary.md and the command's output; a store of fake rows where a trained
variant is above every classical one does not.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ablations import classical
from ablations.config import BASELINES, CLASSICAL_BASELINES, config_hash, config_to_dict, resolve_config, stored_config
from ablations.data import Split, load_split
from ablations.grid import parse_grid_text
from ablations.migrate import v1_run_id, config_from_format_1
from ablations.runner import run_grid
from ablations.train import run_one
from reports.build import write_report
from reports.flags import (RISE_TOLERANCE, config_flags, monitor_collapse, run_flags,
                           spread_collapse)
from reports.leaderboard import select
from reports.store_view import StoreView
from reports.variants import annotate
from reports.verdict import verdict
from tests.test_ablations_store import calls  # noqa: F401 - the run_one spy fixture
from tests.test_reports_units import run_row

GRID = """[base]
dataset = "npz"
npz_path = "{path}"
epochs = 1
eval_every = 1
sampler_p = 4
sampler_k = 4
width = 16
embedding_dim = 8

[grid]
loss = ["batch_hard"]
seed = [0, 1]
{baselines}"""


def linear_npz(path, *, seed: int = 0) -> str:
    """30 classes x 20 points: class means in 4 dimensions, 28 of large shared nuisance, rotated."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(30), 20)
    h = np.concatenate([rng.normal(0, 3.0, size=(30, 4))[y] + rng.normal(0, 0.5, size=(600, 4)),
                        rng.normal(0, 4.0, size=(600, 28))], axis=1)
    rotation, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    np.savez(path, X=h @ rotation, y=y)
    return str(path)


def test_existing_baselines_migrate_from_their_format_1_ids_and_classical_ones_are_seed_free():
    for loss, old in (("raw", "436bb90589a3"), ("untrained", "60ce7237da83")):  # stores made before
        stored = config_to_dict(resolve_config({"baseline": loss}))
        assert v1_run_id(stored) == old and config_from_format_1(stored) == stored_config(resolve_config(stored))
    for name in CLASSICAL_BASELINES:
        cfg = resolve_config({"baseline": name, "seed": 5, "lr": 0.5, "width": 8, "class_folds": 2,
                              "fold": 1})
        assert (cfg.seed, cfg.width, cfg.lr, cfg.fold) == (0, 128, 1e-3, 1)
        assert config_hash(cfg) == config_hash({"baseline": name, "class_folds": 2, "fold": 1})


def test_fits_see_only_the_training_rows_and_selection_only_validation(tmp_path, monkeypatch):
    split = load_split(resolve_config({"dataset": "npz", "npz_path": linear_npz(tmp_path / "d.npz")}))
    fitted_on, scored = [], []
    real_fit = classical.fit

    def spy(method, k, x, y):
        fitted_on.append((x, y))
        return real_fit(method, k, x, y)

    monkeypatch.setattr(classical, "fit", spy)
    for method in CLASSICAL_BASELINES:
        fitted_on.clear()
        scored.clear()
        # a score that prefers 4 components: the choice follows the validation score alone
        result = classical.fit_selected(method, split, lambda z: scored.append(z.shape) or
                                        float(z.shape[1] == 4))
        assert result.params["n_components"] == 4
        assert fitted_on and all(x is split.x_train and y is split.y_train for x, y in fitted_on)
        assert {s[0] for s in scored} == {len(split.x_val)}            # validation rows only
        assert sorted(result.scores) == classical.candidate_dimensions(
            method, split.x_train, split.y_train)
    # LDA's cap: n_train_classes - 1 (15 training classes here) and D
    assert classical.candidate_dimensions("lda", split.x_train, split.y_train) == [2, 4, 8, 14]


@pytest.mark.parametrize("method", CLASSICAL_BASELINES)
def test_the_stored_embeddings_are_the_fit_on_the_training_classes_alone(tmp_path, method):
    config = {"dataset": "npz", "npz_path": linear_npz(tmp_path / "d.npz"), "loss": method}
    result = run_one(config)
    assert result["status"] == "finished" and result["steps"] == [], result["error"]
    split = load_split(resolve_config(config))
    k = json.loads(result["baseline_params"])["n_components"]
    candidates = json.loads(result["baseline_candidates"])
    assert max(candidates, key=lambda c: (candidates[c], -int(c))) == str(k)
    assert result["metrics"]["val_map_at_r"] == pytest.approx(candidates[str(k)])
    alone = classical.fit(method, k, split.x_train, split.y_train).transform(split.x_test)
    np.testing.assert_allclose(result["embeddings"]["X"], alone, rtol=1e-5, atol=1e-5)
    # the check can fail: the test (and validation) classes would change the fit
    everything = Split(*(np.concatenate([getattr(split, f"{a}_{s}") for s in ("train", "val", "test")])
                         for a in ("x", "y")), split.x_val, split.y_val, split.x_test, split.y_test)
    leaky = classical.fit(method, k, everything.x_train, everything.y_train).transform(split.x_test)
    assert not np.allclose(np.abs(leaky), np.abs(alone), atol=1e-3)


def test_poisoned_test_rows_change_neither_the_fit_nor_the_choice(tmp_path):
    path = linear_npz(tmp_path / "d.npz")
    split = load_split(resolve_config({"dataset": "npz", "npz_path": path}))
    with np.load(path) as data:
        x, y = data["X"].copy(), data["y"]
    test = np.isin(y, np.unique(split.y_test))
    x[test] = np.random.default_rng(1).normal(0, 50.0, size=(int(test.sum()), x.shape[1]))
    np.savez(tmp_path / "poisoned.npz", X=x, y=y)
    for method in CLASSICAL_BASELINES:
        clean = run_one({"dataset": "npz", "npz_path": path, "loss": method})
        poisoned = run_one({"dataset": "npz", "npz_path": str(tmp_path / "poisoned.npz"),
                            "loss": method})
        assert clean["baseline_params"] == poisoned["baseline_params"]
        assert clean["baseline_candidates"] == poisoned["baseline_candidates"]
        assert clean["metrics"]["val_map_at_r"] == poisoned["metrics"]["val_map_at_r"]


def test_a_linear_benchmark_makes_lda_the_best_baseline_and_raises_the_warning(tmp_path, capsys):
    from tripletlab.cli import main

    grid = tmp_path / "g.toml"
    grid.write_text(GRID.format(path=linear_npz(tmp_path / "d.npz"), baselines=(
        '[baselines]\ninclude = ["raw", "lda", "pca_whiten"]\n')))
    run_grid(grid, tmp_path / "store", workers=1)
    capsys.readouterr()
    assert main(["report", str(tmp_path / "store")]) == 0
    out = capsys.readouterr()
    report = tmp_path / "store" / "report"
    board = pd.read_csv(report / "tables" / "leaderboard.csv", keep_default_na=False)
    bases = board[board["kind"] == "baseline"]
    assert sorted(bases["variant"]) == ["lda", "pca_whiten", "raw"]
    assert bases["variant"].iloc[0] == "lda"                          # best on validation
    assert bases["config"].iloc[0].startswith("chosen on validation: n_components=")
    assert "flags" in board.columns
    text = "A classical linear metric beats every trained variant on test: lda"
    assert text in (report / "report.html").read_text()
    assert (report / "summary.md").read_text().split("\n")[2].startswith("> **WARNING:**")
    assert text in (report / "summary.md").read_text()
    assert text in out.err and "WARNING" in out.err
    lda = bases.iloc[0]
    assert float(lda["paired_diff"]) > 0 and f"{float(lda['paired_diff']):+.3f}" in out.err


def _fake_board(lda_test: float):
    runs = [run_row(f"t{s}", seed=s, val=0.6, test=0.6 + 0.01 * s, loss="batch_hard") for s in (0, 1)]
    runs += [run_row("raw", seed=0, val=0.2, test=0.2, baseline="raw"),
             run_row("lda", seed=0, val=0.3, test=lda_test, baseline="lda",
                     baseline_params='{"n_components": 8}')]
    return select(annotate(pd.DataFrame(runs)), confidence=0.95).leaderboard


def test_a_classical_baseline_below_a_trained_variant_raises_no_warning():
    board = _fake_board(lda_test=0.5)
    answer = verdict(board)
    assert answer.warning is None and answer.table["classical_beats_all"].iloc[0] == ""
    assert board.loc[board["variant"] == "lda", "config"].iloc[0] == \
        "chosen on validation: n_components=8"
    above = verdict(_fake_board(lda_test=0.7))   # the same store with lda above both seeds
    assert "A classical linear metric beats every trained variant on test: lda" in above.warning
    assert "lda (chosen on validation: n_components=8)" in above.warning


def test_the_grid_file_chooses_the_baselines(tmp_path, calls):
    text = GRID.format(path=linear_npz(tmp_path / "d.npz"), baselines="")
    assert parse_grid_text(text).baselines == tuple(BASELINES)          # default: all of them
    assert parse_grid_text(text + "[baselines]\ninclude = []\n").baselines == ()
    with pytest.raises(ValueError, match=r"baselines.include: unknown baseline 'lad' "
                                         r"\(did you mean 'lda'\?\); valid baselines: raw"):
        parse_grid_text(text + '[baselines]\ninclude = ["lad"]\n')
    with pytest.raises(ValueError, match="unknown key baselines.exclude"):
        parse_grid_text(text + '[baselines]\nexclude = ["raw"]\n')
    with pytest.raises(ValueError, match="baselines.include must be a list"):
        parse_grid_text(text + '[baselines]\ninclude = "raw"\n')
    grid = tmp_path / "g.toml"
    grid.write_text(text + "[baselines]\ninclude = []\n")
    store = run_grid(grid, tmp_path / "none", workers=1)
    assert sorted(store.runs()["baseline"]) == ["", ""] and len(calls) == 2
    grid.write_text(text + '[baselines]\ninclude = ["lda", "nca"]\n')
    store = run_grid(grid, tmp_path / "some", workers=1)
    runs = store.runs()
    assert sorted(runs["baseline"]) == ["", "", "lda", "nca"]
    assert runs.loc[runs["baseline"] == "nca", "baseline_params"].str.contains("n_components").all()
    before = len(calls)
    run_grid(grid, tmp_path / "some", workers=1)                        # resume: nothing runs
    assert len(calls) == before


# --------------------------------------------------------------------- flags
def _steps(run_id: str, *, active: float, violation: float, loss: float, n: int = 20) -> pd.DataFrame:
    return pd.DataFrame({"run_id": run_id, "epoch": np.arange(n) // 5, "step": np.arange(n),
                         "margin": 0.2, "loss": loss, "active_fraction": active,
                         "violation_rate": violation})


def _epochs(run_id: str, values) -> pd.DataFrame:
    return pd.DataFrame({"run_id": run_id, "epoch": np.arange(1, len(values) + 1) * 5,
                         "val_map_at_r": values})


def test_collapse_and_a_still_rising_curve_are_flagged_with_their_numbers():
    collapsed = _steps("c", active=1.0, violation=0.97, loss=0.201)
    healthy = _steps("h", active=0.4, violation=0.3, loss=0.05)
    assert "violation_rate 0.97" in monitor_collapse(collapsed)
    assert monitor_collapse(healthy) is None
    assert monitor_collapse(_steps("m", active=1.0, violation=1.0, loss=0.12)) is None  # not at margin
    rng = np.random.default_rng(0)
    assert spread_collapse(np.ones((50, 8)) + 1e-5 * rng.normal(size=(50, 8))) is not None
    assert spread_collapse(rng.normal(size=(50, 8))) is None
    runs = pd.DataFrame({"run_id": ["c", "h", "r"], "status": "finished"})
    steps = pd.concat([collapsed, healthy, _steps("r", active=0.5, violation=0.4, loss=0.1)])
    epochs = pd.concat([_epochs("c", [0.1, 0.1, 0.1]), _epochs("h", [0.3, 0.5, 0.5]),
                        _epochs("r", [0.3, 0.4, 0.4 + 2 * RISE_TOLERANCE])])

    def embeddings(run_id):
        return rng.normal(size=(30, 4)), np.repeat([0, 1, 2], 10)

    flags = run_flags(runs, steps, epochs, embeddings)
    assert sorted(zip(flags["run_id"], flags["flag"])) == [("c", "collapse"), ("r", "still_rising")]
    assert "+0.010 from epoch 10 to 15" in flags.loc[flags["run_id"] == "r", "evidence"].iloc[0]
    cell, evidence = config_flags(runs[runs["run_id"].isin(["c", "h"])], epochs, flags)
    assert cell == "collapse (1/2 units)" and "run c: over the last 4 of 20 steps" in evidence
    cell, evidence = config_flags(runs[runs["run_id"] == "r"], epochs, flags)
    assert cell == "still rising (+0.010)" and "1/1 units rise by more than" in evidence
    assert config_flags(runs[runs["run_id"] == "h"], epochs, flags) == ("", "")


def test_the_report_names_a_collapsed_selected_configuration(tmp_path):
    runs = [run_row(f"b{s}", seed=s, val=0.2, test=0.2, loss="batch_hard") for s in (0, 1)]
    runs += [run_row(f"a{s}", seed=s, val=0.5, test=0.5, loss="batch_all") for s in (0, 1)]
    steps = pd.concat([_steps("b0", active=1.0, violation=1.0, loss=0.2),
                       _steps("b1", active=1.0, violation=0.95, loss=0.19),
                       *(_steps(f"a{s}", active=0.3, violation=0.2, loss=0.05) for s in (0, 1))])
    epochs = pd.concat([_epochs(r, [0.4, 0.5]) for r in ("a0", "a1")]
                       + [_epochs(r, [0.2, 0.2]) for r in ("b0", "b1")])
    labels = np.repeat([7, 8, 9], 10)

    def embeddings(run_id):
        return np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32), labels

    view = StoreView(runs=pd.DataFrame(runs), steps=steps, epochs=epochs, grid_text="[base]\n",
                     embeddings=embeddings)
    write_report(view, tmp_path, umap_epochs=5, umap_max_points=30, random_state=0,
                 max_curve_points=20)
    board = pd.read_csv(tmp_path / "tables" / "leaderboard.csv", keep_default_na=False)
    flags = dict(zip(board["variant"], board["flags"]))
    assert flags == {"batch_all": "still rising (+0.100)", "batch_hard": "collapse (2/2 units)"}
    missing = (tmp_path / "summary.md").read_text().split("## What is missing")[1]
    assert "Selected configuration of batch_hard: collapsed in 2/2 units" in missing
    assert "violation_rate 1.00" in missing and "+0.100 on average over 2 units" in missing
