"""End to end through the `tripletlab` command, the path `make demo` takes, on the smoke grid."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tripletlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "ablations" / "grids" / "smoke.toml"


def _tripletlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tripletlab", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_run_then_report_then_rerun_reuses_finished_runs(tmp_path):
    store = tmp_path / "smoke"
    first = _tripletlab("run", str(SMOKE), "--out", str(store), "--workers", "1")
    assert first.returncode == 0, first.stderr
    runs = pd.read_parquet(store / "runs.parquet")
    assert len(runs) == 7 and set(runs["status"]) == {"finished"}   # 4 cells + 3 baselines
    assert set(runs["loss"]) == {"batch_hard", "naive", "raw", "untrained"}
    assert set(runs["seed"]) == {0, 1}

    report = _tripletlab("report", str(store))
    assert report.returncode == 0, report.stderr
    html_path = store / "report" / "report.html"
    assert f"report written to {html_path}" in report.stdout
    html = html_path.read_text()
    assert "batch_hard" in html and "naive" in html
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", html)

    # The same command again: nothing new to train, the store is unchanged.
    mtimes = {p: p.stat().st_mtime_ns for p in (store / "runs").glob("*/result.json")}
    again = _tripletlab("run", str(SMOKE), "--out", str(store), "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in (store / "runs").glob("*/result.json")} == mtimes


def test_dry_run_prints_the_runs_and_axes_and_creates_nothing(tmp_path, capsys):
    assert main(["run", str(SMOKE), "--out", str(tmp_path / "store"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("4 runs") and "+ 3 baseline runs" in out
    assert "loss (2): batch_hard, naive" in out and "seed (2): 0, 1" in out
    assert not (tmp_path / "store").exists()


def test_a_bad_grid_is_an_error_naming_the_key_not_a_traceback(tmp_path, capsys):
    grid = tmp_path / "bad.toml"
    grid.write_text(SMOKE.read_text().replace("epochs = 2", "epochz = 2"))
    assert main(["run", str(grid), "--out", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tripletlab run: error:") and "epochz" in err


def test_a_missing_grid_file_is_an_error_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert main(["run", str(missing), "--out", str(tmp_path / "store")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_report_on_a_directory_that_is_no_store_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["report", str(empty)])
    err = capsys.readouterr().err
    assert code == 2 and str(empty) in err


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_workers_must_be_a_whole_number_at_least_one(tmp_path, workers, capsys):
    with pytest.raises(SystemExit):
        main(["run", str(SMOKE), "--out", str(tmp_path), "--workers", workers])
    assert "--workers" in capsys.readouterr().err

