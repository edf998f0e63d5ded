"""The verdict: Holm's correction, pairing with baselines, and the warning end to end.

Two tiny stores built here through run_grid: a variant made worse than the raw
features (a 1-D normalised embedding cannot hold 5 digit classes) must raise the
warning in report.html, summary.md and the command's output; a variant that learns
to drop a nuisance shared by all classes (raw MAP@R ~0.2, trained ~0.9) must not.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ablations.runner import run_grid
from reports.leaderboard import compare
from reports.stats import holm
from tripletlab.cli import main

GRID = """[base]
{base}

[grid]
loss = ["batch_hard"]
seed = [0, 1]

[baselines]
include = ["raw", "untrained"]   # the classical ones: tests/test_classical_baselines.py
"""
WORSE = GRID.format(base='dataset = "digits"\nepochs = 1\neval_every = 1\nembedding_dim = 1\n'
                         'width = 16')
BETTER = GRID.format(base='dataset = "npz"\nnpz_path = "{path}"\nepochs = 8\neval_every = 4\n'
                          'lr = 0.01\nclass_folds = 2')


def test_holm_matches_a_hand_computation():
    # m = 4 tested: sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04;
    # running maximum -> 0.02, 0.03, 0.06, 0.06
    adjusted = holm([0.01, 0.04, 0.03, math.nan, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, math.nan, 0.02])
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])      # capped at 1
    np.testing.assert_allclose(holm([0.2]), [0.2])                # a family of one
    assert holm([]).shape == (0,)


def test_a_seed_free_baseline_pairs_with_every_seed_of_its_fold():
    trained = {(2, 0, 0): 0.50, (2, 0, 1): 0.54, (2, 1, 0): 0.40, (2, 1, 1): 0.47}
    raw = {(2, 0, None): 0.45, (2, 1, None): 0.41}
    result = compare(trained, raw, confidence=0.95)
    diffs = np.array([0.05, 0.09, -0.01, 0.06])
    assert result.n == 4 and result.mean_diff == pytest.approx(diffs.mean())
    half = 3.182446 * diffs.std(ddof=1) / 2   # t(0.975, 3) by hand
    assert (result.low, result.high) == (pytest.approx(diffs.mean() - half, abs=1e-6),
                                         pytest.approx(diffs.mean() + half, abs=1e-6))
    assert compare(raw, trained, confidence=0.95).mean_diff == pytest.approx(-diffs.mean())


def _report(tmp_path, grid_text: str, capsys) -> tuple[str, str, str, pd.DataFrame]:
    (tmp_path / "g.toml").write_text(grid_text)
    run_grid(tmp_path / "g.toml", tmp_path / "store", workers=1)
    capsys.readouterr()
    assert main(["report", str(tmp_path / "store")]) == 0
    out = capsys.readouterr()
    report = tmp_path / "store" / "report"
    board = pd.read_csv(report / "tables" / "leaderboard.csv")
    return ((report / "report.html").read_text(), (report / "summary.md").read_text(),
            out.out + out.err, board)


def test_a_variant_worse_than_raw_features_raises_the_warning_everywhere(tmp_path, capsys):
    page, summary, cli, board = _report(tmp_path, WORSE, capsys)
    base = board[board["kind"] == "baseline"].sort_values("val_map_at_r_mean").iloc[-1]
    assert base["variant"] == "raw"
    assert (board.loc[board["kind"] == "variant", "vs_baseline_diff"] < 0).all()
    assert "class='warning'" in page and "No trained variant beats the best baseline (raw" in page
    assert page.index("class='warning'") < page.index("id='verdict'") < page.index("id='protocol'")
    assert summary.split("\n")[2].startswith("> **WARNING:** No trained variant beats")
    assert "WARNING: No trained variant beats the best baseline (raw" in cli
    assert "is significantly worse than the baseline" in page or "does not beat" in page
    assert "little power" in page and "paired tests have little power" in summary   # n = 2
    # one evaluation per run: a marker, not an empty axis; one margin x lr: said, not drawn
    assert (tmp_path / "store" / "report" / "figures" / "validation_curves.png").is_file()
    assert "the grid has a single margin (0.2) and a single learning rate (0.001)" in page


def test_a_variant_that_learns_drops_the_warning(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(30), 20)                 # 30 classes: signal in 4 dimensions,
    centres = rng.normal(0.0, 3.0, size=(30, 4))     # 28 dimensions of shared nuisance
    x = np.concatenate([centres[y] + rng.normal(0.0, 0.5, size=(len(y), 4)),
                        rng.normal(0.0, 4.0, size=(len(y), 28))], axis=1)
    np.savez(tmp_path / "nuisance.npz", X=x, y=y)
    page, summary, cli, board = _report(
        tmp_path, BETTER.format(path=tmp_path / "nuisance.npz"), capsys)
    best = board[board["kind"] == "variant"].iloc[0]
    assert best["units_finished"] == "4/4"                 # 2 folds x 2 seeds
    assert best["vs_baseline_n"] == 2                      # units: the 2 fold means
    assert best["vs_baseline_low"] > 0.2   # 2 fold units: t(0.975, 1) = 12.7 widens it
    assert "class='warning'" not in page and "WARNING" not in summary and "WARNING" not in cli
    assert "it beats the baseline significantly" in page
    raw = board[board["variant"] == "raw"].iloc[0]
    assert raw["units_finished"] == "2/2" and raw["test_map_at_r_n"] == 2   # one per fold


@pytest.mark.parametrize("grid_baselines, runs, words", [
    ((), None, "its grid runs none ([baselines] include = [])"),
    (("raw",), pd.DataFrame({"is_baseline": [True, False]}), "its baseline runs failed or diverged"),
    (("raw",), pd.DataFrame({"is_baseline": [False]}), "its baseline runs are not in the store"),
    (None, None, "its baseline runs are not in the store")])
def test_a_store_without_a_finished_baseline_says_why(grid_baselines, runs, words):
    from reports.verdict import _no_baseline

    said = _no_baseline(runs, grid_baselines)
    assert words in said and "predates" not in said
