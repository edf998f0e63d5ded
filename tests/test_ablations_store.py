"""The results store through run_grid: layout, resume, extend, foreign grids, kills.

GRID has 4 training cells; run_grid adds their 3 baselines (1 raw, 2 untrained: one per seed;
GRID leaves out the classical ones: tests/test_classical_baselines.py runs them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ablations.train
from ablations.baselines import with_baselines
from ablations.config import DEFAULTS, config_hash, config_to_dict, keys_read
from ablations.grid import expand, load_grid
from ablations.runner import run_grid
from ablations.store import METRIC_COLUMNS, RUN_COLUMNS, ResultsStore

ROOT = Path(__file__).parents[1]
GRID = """[base]
epochs = 1
eval_every = 1
sampler_k = 8

[grid]
loss = ["batch_hard", "naive"]
seed = [0, 1]

[baselines]
include = ["raw", "untrained"]
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def calls(monkeypatch):
    """Count run_one calls made by run_grid (workers=1 runs in this process)."""
    seen: list[str] = []
    real = ablations.train.run_one

    def spy(config, *, progress=None):
        seen.append(config["run_id"])
        return real(config, progress=progress)

    monkeypatch.setattr(ablations.train, "run_one", spy)
    return seen


def result_mtimes(store: ResultsStore) -> dict[str, int]:
    return {r: (store.run_dir(r) / "result.json").stat().st_mtime_ns for r in store.stored_ids()}


def test_grid_fills_the_store_layout(tmp_path, calls):
    grid = write(tmp_path / "g.toml", GRID)
    store = run_grid(grid, tmp_path / "out", workers=1)
    assert len(calls) == 7
    assert (tmp_path / "out" / "grid.toml").read_text() == GRID
    for name in ("runs", "steps", "epochs"):
        assert (tmp_path / "out" / f"{name}.parquet").is_file()
    runs = pd.read_parquet(tmp_path / "out" / "runs.parquet")
    assert list(runs.columns[: len(RUN_COLUMNS)]) == RUN_COLUMNS
    assert set(runs["status"]) == {"finished"} and runs["run_id"].is_unique
    assert runs[METRIC_COLUMNS].notna().all().all()
    loaded = load_grid(grid)
    expected = {config_hash(c) for c in with_baselines(expand(loaded), include=loaded.baselines)}
    assert set(runs["run_id"]) == expected
    steps = store.steps()
    assert {"run_id", "epoch", "step", "lr", "margin", "loss", "loss_triplet", "weight_triplet",
            "gradnorm_triplet", "active_fraction", "pos_ratio", "violation_rate"} <= set(steps)
    assert steps.groupby("run_id")["step"].apply(lambda s: list(s) == list(range(len(s)))).all()
    epochs = store.epochs()
    assert list(epochs.columns) == ["run_id", "epoch"] + [c for c in METRIC_COLUMNS
                                                          if c.startswith("val_")]
    for run_id in expected:
        d = store.run_dir(run_id)
        config = json.loads((d / "config.json").read_text())
        # the keys the run reads (the others read as their defaults)
        assert config["run_id"] == run_id and set(config) == keys_read(dict(DEFAULTS) | config) | {"run_id"}
        X, y = store.embeddings(run_id)
        assert X.dtype == np.float32 and y.dtype == np.int64 and len(X) == len(y) > 0
    assert store.grid_text() == GRID


def test_rerun_skips_finished_runs_and_extend_adds_only_new_cells(tmp_path, calls):
    grid = write(tmp_path / "g.toml", GRID)
    store = run_grid(grid, tmp_path / "out", workers=1)
    before = result_mtimes(store)
    run_grid(grid, tmp_path / "out", workers=1)
    assert len(calls) == 7 and result_mtimes(store) == before
    bigger = write(tmp_path / "g2.toml", GRID.replace("seed = [0, 1]", "seed = [0, 1, 2]"))
    with pytest.raises(ValueError, match="--extend"):
        run_grid(bigger, tmp_path / "out", workers=1)
    run_grid(bigger, tmp_path / "out", workers=1, extend=True)
    assert len(calls) == 10 and len(set(calls)) == 10   # 2 new cells + untrained of seed 2
    after = result_mtimes(store)
    assert {r: after[r] for r in before} == before
    assert len(store.runs()) == 10 and store.grid_text() == bigger.read_text()
    assert (tmp_path / "out" / "grid.1.toml").read_text() == GRID


def test_foreign_grid_is_refused_before_anything_runs(tmp_path, calls):
    run_grid(write(tmp_path / "a.toml", GRID), tmp_path / "out", workers=1)
    other = write(tmp_path / "b.toml", GRID.replace("epochs = 1", "epochs = 2"))
    with pytest.raises(ValueError) as err:
        run_grid(other, tmp_path / "out", workers=1)
    assert "different grid file" in str(err.value) and "extend" in str(err.value)
    assert len(calls) == 7 and ResultsStore(tmp_path / "out").grid_text() == GRID


def test_a_store_extended_twice_names_the_grid_it_was_made_from_and_each_extension(tmp_path, calls):
    out = tmp_path / "out"
    a, b, c, d = (write(tmp_path / f"{name}.toml", GRID + f"# {name}\n") for name in "abcd")
    run_grid(a, out, workers=1)
    run_grid(b, out, workers=1, extend=True)
    run_grid(c, out, workers=1, extend=True)
    assert len(calls) == 7  # a comment changes no run
    with pytest.raises(ValueError) as err:
        run_grid(d, out, workers=1)
    assert (f"created by a different grid file ({a.resolve()}) and extended with {b.resolve()}, "
            f"{c.resolve()} (grid.toml holds the last)") in str(err.value)
    assert ResultsStore(out).grid_text() == c.read_text()


def test_a_dry_run_refuses_the_stores_the_run_refuses_and_writes_nothing(tmp_path, calls):
    out, a_file = tmp_path / "out", write(tmp_path / "file", "x")
    ResultsStore(out).claim(GRID, grid_path=write(tmp_path / "a.toml", GRID))
    before = sorted(p.name for p in out.rglob("*"))
    other = write(tmp_path / "b.toml", GRID.replace("epochs = 1", "epochs = 2"))
    for target, words in ((out, "different grid file"), (a_file, "is a file"),
                          (a_file / "store", "is under the file")):
        with pytest.raises(ValueError, match=words):
            run_grid(other, target, workers=1, dry_run=True)
    assert run_grid(other, out, workers=1, dry_run=True, extend=True) is None
    assert sorted(p.name for p in out.rglob("*")) == before and calls == []
    assert ResultsStore(out).grid_text() == GRID


def test_failed_runs_are_retried_and_diverged_runs_kept(tmp_path, monkeypatch):
    import ablations.objectives as objectives

    original = objectives.BatchObjective.forward

    def flaky(self, embeddings, labels, margin):
        out = original(self, embeddings, labels, margin)
        if torch_seed() == 1:
            out.components["triplet"] = out.components["triplet"] * float("nan")
        return out

    def broken(self, a, p, n, margin):
        raise RuntimeError("naive is broken today")

    import torch

    torch_seed = lambda: int(torch.initial_seed())  # noqa: E731 - run_one seeds torch
    monkeypatch.setattr(objectives.BatchObjective, "forward", flaky)
    monkeypatch.setattr(objectives.NaiveObjective, "forward_triplets", broken)
    grid = write(tmp_path / "g.toml", GRID)
    store = run_grid(grid, tmp_path / "out", workers=1)
    runs = store.runs().query("baseline == ''").set_index(["loss", "seed"])
    assert runs.loc[("batch_hard", 1), "status"] == "diverged"
    assert runs.loc[("batch_hard", 1), "diverged_step"] == 0
    assert runs.loc[("batch_hard", 1), "diverged_component"] == "triplet"
    assert runs.loc[("batch_hard", 0), "status"] == "finished"
    assert set(runs.loc["naive", "status"]) == {"failed"}
    assert all("naive is broken today" in e for e in runs.loc["naive", "error"])
    monkeypatch.undo()
    store = run_grid(grid, tmp_path / "out", workers=1)
    assert len(store.runs()) == 7
    runs = store.runs().query("baseline == ''").set_index(["loss", "seed"])
    assert set(runs.loc["naive", "status"]) == {"finished"}  # failed runs re-ran
    assert runs.loc[("batch_hard", 1), "status"] == "diverged"  # a final outcome: kept


def test_store_readable_after_sigkill_and_rerun_completes_each_cell_once(tmp_path):
    text = GRID.replace("seed = [0, 1]", "seed = [0, 1, 2]").replace("epochs = 1", "epochs = 2")
    grid = write(tmp_path / "g.toml", text)
    out = tmp_path / "out"
    code = ("import sys; from ablations.runner import run_grid; "
            "run_grid(sys.argv[1], sys.argv[2], workers=1)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(grid), str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    store = ResultsStore(out)
    deadline = time.monotonic() + 240
    try:
        while len(store.stored_ids()) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, "the grid ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, mid-grid
        proc.wait()
    killed_with = result_mtimes(store)
    assert 2 <= len(killed_with) < 10   # 6 cells + 1 raw + 3 untrained baselines
    runs = store.runs()  # readable: consolidated files missing or stale, per-run files complete
    assert set(runs["run_id"]) == set(killed_with) and set(runs["status"]) == {"finished"}
    trained = runs.loc[runs["baseline"] == "", "run_id"]   # baselines log no step
    assert set(store.steps()["run_id"]) == set(trained)
    run_grid(grid, out, workers=1)
    assert {r: t for r, t in result_mtimes(store).items() if r in killed_with} == killed_with
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 10 and runs["run_id"].is_unique
    loaded = load_grid(grid)
    assert set(runs["run_id"]) == {config_hash(c) for c in
                                   with_baselines(expand(loaded), include=loaded.baselines)}
    assert set(runs["status"]) == {"finished"}
    assert not list(out.glob("**/.*.tmp"))


def test_local_pool_gives_the_serial_results(tmp_path):
    grid = write(tmp_path / "g.toml", GRID.replace("seed = [0, 1]", "seed = [0]"))
    serial = run_grid(grid, tmp_path / "serial", workers=1)
    pooled = run_grid(grid, tmp_path / "pooled", workers=2)
    key = ["run_id"]
    a = serial.runs().sort_values(key).reset_index(drop=True)
    b = pooled.runs().sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key + METRIC_COLUMNS], b[key + METRIC_COLUMNS])
    sa = serial.steps().sort_values(["run_id", "step"]).reset_index(drop=True)
    sb = pooled.steps().sort_values(["run_id", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(sa, sb)


def test_dry_run_creates_nothing(tmp_path, capsys, calls):
    grid = write(tmp_path / "g.toml", GRID)
    assert run_grid(grid, tmp_path / "out", dry_run=True) is None
    out = capsys.readouterr().out
    assert "4 runs" in out and "loss (2): batch_hard, naive" in out and "seed (2)" in out
    assert not (tmp_path / "out").exists() and calls == []


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_sampler_larger_than_the_training_classes_is_refused_up_front(tmp_path, calls, dry_run):
    grid = write(tmp_path / "g.toml", GRID.replace("sampler_k = 8", "sampler_k = 8\nsampler_p = 6"))
    with pytest.raises(ValueError, match="sampler_p = 6"):
        run_grid(grid, tmp_path / "out", workers=1, dry_run=dry_run)
    assert calls == [] and not (tmp_path / "out").exists()


def test_a_dry_run_refuses_an_npz_with_nan_as_the_run_does(tmp_path, calls):
    x = np.random.default_rng(0).normal(size=(60, 3))
    x[5, 1] = np.nan
    np.savez(tmp_path / "d.npz", X=x, y=np.repeat(np.arange(6), 10))
    grid = write(tmp_path / "g.toml", f'[base]\nepochs = 1\ndataset = "{tmp_path / "d.npz"}"\n')
    for dry_run in (True, False):
        with pytest.raises(ValueError, match="d.npz.*1 non-finite values"):
            run_grid(grid, tmp_path / "out", workers=1, dry_run=dry_run)
    assert calls == [] and not (tmp_path / "out").exists()


def test_a_dataset_too_many_classes_to_evaluate_is_refused_with_an_estimate(tmp_path, calls):
    classes = 7000  # 2100 test classes: more than evaluation's cap of 2000
    x = np.random.default_rng(0).normal(size=(2 * classes, 3))
    np.savez(tmp_path / "many.npz", X=x, y=np.repeat(np.arange(classes), 2))
    grid = write(tmp_path / "g.toml", f'[base]\nepochs = 1\ndataset = "{tmp_path / "many.npz"}"\n')
    with pytest.raises(ValueError, match=r"split has \d+ classes .* KMeans of \d+ clusters") as err:
        run_grid(grid, tmp_path / "out", workers=1, dry_run=True)
    assert "many.npz" in str(err.value) and "GiB" in str(err.value)
    assert calls == [] and not (tmp_path / "out").exists()


def test_a_dataset_too_many_points_to_evaluate_is_refused_with_an_estimate(tmp_path, calls):
    x = np.random.default_rng(0).normal(size=(6 * 40_000, 1))  # test split: 2 classes, 80 000 points
    np.savez(tmp_path / "tall.npz", X=x, y=np.repeat(np.arange(6), 40_000))
    grid = write(tmp_path / "g.toml", f'[base]\nepochs = 1\nsampler_p = 2\n'
                                      f'dataset = "{tmp_path / "tall.npz"}"\n')
    with pytest.raises(ValueError, match=r"split has 80000 points, more than the 65536 .* "
                                         r"80000 x 80000 distance matrix \(23.8 GiB\)") as err:
        run_grid(grid, tmp_path / "out", workers=1, dry_run=True)
    assert "tall.npz" in str(err.value) and calls == []


def test_a_dataset_too_wide_for_the_encoder_is_refused_with_an_estimate(tmp_path, calls):
    x = np.zeros((36, 8200), dtype=np.float32)  # x width 8192: just above the layer cap
    np.savez(tmp_path / "wide.npz", X=x, y=np.repeat(np.arange(6), 6))
    grid = write(tmp_path / "g.toml", f'[base]\nepochs = 1\nwidth = 8192\nsampler_p = 2\n'
                                      f'dataset = "{tmp_path / "wide.npz"}"\n')
    with pytest.raises(ValueError, match=r"has 8200 features: the encoder's first layer "
                                         r"\(8200 x width 8192 = 6.72e\+07 weights, about 1 GiB"):
        run_grid(grid, tmp_path / "out", workers=1, dry_run=True)
    assert calls == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("protocol, words", [
    ("fixed_test", "class_folds = 12 is too many for 10 classes"),
    ("rotated", "class_folds = 12 but the data have 10 classes")])
def test_more_class_folds_than_distinct_splits_are_refused(tmp_path, calls, protocol, words):
    grid = write(tmp_path / "g.toml", f'[base]\nepochs = 1\nclass_folds = 12\n'
                                      f'split_protocol = "{protocol}"\n')  # digits: 10 classes
    with pytest.raises(ValueError, match=words):
        run_grid(grid, tmp_path / "out", workers=1, dry_run=True)
    assert calls == []


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    from ablations import store as store_module

    path = tmp_path / "x.json"
    store_module.atomic_write_json(path, {"a": 1})

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store_module.atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert list(tmp_path.iterdir()) == [path]


# ------------------------------------------------------------ faults and odd input


def npz_grid(tmp_path: Path, axes: str) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A 6-class data.npz and a grid of one-epoch runs on it with `axes` -> (grid, data, X, y)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(36, 4)), np.repeat(np.arange(6), 6)
    data = tmp_path / "data.npz"
    np.savez(data, X=x, y=y)
    grid = write(tmp_path / "g.toml", f'[base]\ndataset = "npz"\nnpz_path = "{data}"\nepochs = 1\n'
                                      f'eval_every = 1\nsampler_p = 2\nsampler_k = 4\n{axes}')
    return grid, data, x, y


def test_changed_npz_contents_make_new_runs_and_the_store_records_them(tmp_path, calls):
    grid, data, x, y = npz_grid(tmp_path, '[grid]\nseed = [0]\n')
    store = run_grid(grid, tmp_path / "out", workers=1)
    first = store.runs()
    np.savez(data, X=x[::-1].copy(), y=y)  # same path, new contents
    store = run_grid(grid, tmp_path / "out", workers=1)
    # every run (the trained one and the raw / untrained baselines) ran again on the new data,
    # not "already done" with the old metrics
    assert len(calls) == 2 * len(first) and len(set(calls)) == len(calls)
    runs = store.runs().set_index("run_id")
    assert len(runs) == 2 * len(first) and runs["data_fingerprint"].nunique() == 2
    import hashlib

    now = hashlib.sha256(data.read_bytes()).hexdigest()
    assert (runs.loc[calls[len(first):], "data_fingerprint"] == now).all()
    assert (runs.loc[first["run_id"], "data_fingerprint"] != now).all()


def test_a_report_compares_only_the_runs_on_the_current_data(tmp_path, calls, capsys):
    from test_reports_layout import linear_projection

    from reports.build import write_report
    from reports.store_view import read_store

    grid, data, x, y = npz_grid(tmp_path, '[grid]\nloss = ["batch_hard", "naive"]\n'
                                          '[baselines]\ninclude = ["raw"]\n')
    out = tmp_path / "out"
    old = run_grid(grid, out, workers=1).runs()
    failed = old.loc[old["loss"] == "naive", "run_id"].iloc[0]  # an old run that failed
    path = out / "runs" / failed / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "failed",
                                "error": "RuntimeError: out of luck"}))
    np.savez(data, X=x[::-1].copy(), y=y)  # same path, new contents
    capsys.readouterr()
    runs = run_grid(grid, out, workers=1).runs()
    assert len(runs) == 2 * len(old)
    said = capsys.readouterr().err  # the command says so too
    assert f"the store also holds {len(old)} runs on other data than this grid reads now" in said
    report = tmp_path / "report"
    page = write_report(read_store(out), report, umap_epochs=5, umap_max_points=100,
                        random_state=0, max_curve_points=20,
                        umap_project=linear_projection).read_text()
    board = pd.read_csv(report / "tables" / "leaderboard.csv")
    assert (board["val_map_at_r_n"] == 1).all() and len(board) == len(old)  # one version each
    status = pd.read_csv(report / "tables" / "runs_status.csv")
    assert set(status["run_id"]) == set(runs["run_id"]) - set(old["run_id"])
    missing = pd.read_csv(report / "tables" / "missing.csv")["missing"]
    other = missing[missing.str.contains("on other data")]
    assert len(other) == 1 and "an earlier version of the same data" in other.iloc[0]
    assert all(rid in other.iloc[0] for rid in old["run_id"])
    assert not missing.str.contains("out of luck").any() and "out of luck" not in page


def test_damaged_consolidated_tables_are_rebuilt_with_a_warning_naming_them(tmp_path, calls):
    from ablations.store import StoreWarning

    grid = write(tmp_path / "g.toml", GRID)
    out = tmp_path / "out"
    expected = run_grid(grid, out, workers=1).runs().sort_values("run_id", ignore_index=True)
    (out / "runs.parquet").write_bytes(b"not parquet at all")
    (out / "steps.parquet").write_bytes((out / "steps.parquet").read_bytes()[:100])
    with pytest.warns(StoreWarning, match="runs.parquet") as record:
        runs = ResultsStore(out).runs().sort_values("run_id", ignore_index=True)
    assert str(out / "runs.parquet") in str(record[0].message) and "rebuilt" in str(record[0].message)
    pd.testing.assert_frame_equal(runs, expected)
    with pytest.warns(StoreWarning, match="steps.parquet"):
        assert len(ResultsStore(out).steps()) > 0
    with pytest.warns(StoreWarning):
        run_grid(grid, out, workers=1)  # the command works and rewrites the tables
    assert len(calls) == 7 and len(pd.read_parquet(out / "runs.parquet")) == 7


def test_an_unreadable_result_json_makes_its_run_missing_and_rerun(tmp_path, calls):
    from ablations.store import StoreWarning

    grid = write(tmp_path / "g.toml", GRID)
    store = run_grid(grid, tmp_path / "out", workers=1)
    truncated, rid = store.stored_ids()[:2]
    path = store.run_dir(truncated) / "result.json"
    path.write_text(path.read_text()[:40])
    (store.run_dir(rid) / "config.json").write_text("{")
    fresh = ResultsStore(tmp_path / "out")
    with pytest.warns(StoreWarning) as record:
        assert set(fresh.runs()["run_id"]) == set(calls) - {truncated, rid}
    messages = " ".join(str(w.message) for w in record)
    assert str(path) in messages and str(store.run_dir(rid) / "config.json") in messages
    assert "run again" in messages
    with pytest.warns(StoreWarning):
        store = run_grid(grid, tmp_path / "out", workers=1)
    assert sorted(calls[7:]) == sorted([truncated, rid])  # re-run, nothing else
    assert len(store.runs()) == 7 and set(store.runs()["status"]) == {"finished"}


def test_the_grid_file_a_store_was_made_from_may_be_edited(tmp_path, calls):
    grid = write(tmp_path / "g.toml", GRID)
    run_grid(grid, tmp_path / "out", workers=1)
    write(grid, "# a comment\n" + GRID.replace("seed = [0, 1]", "seed = [0, 1, 2]"))
    store = run_grid(grid, tmp_path / "out", workers=1)  # no --extend needed
    assert len(calls) == 10 and len(store.runs()) == 10  # 6 trained, 1 raw, 3 untrained
    assert store.grid_text() == grid.read_text()
    assert (tmp_path / "out" / "grid.1.toml").read_text() == GRID
    other = write(tmp_path / "other.toml", grid.read_text())  # same text elsewhere: same grid
    run_grid(other, tmp_path / "out", workers=1)
    other.write_text(GRID)  # a different file with different text: refused
    with pytest.raises(ValueError, match=f"different grid file .*{grid.name}.*--extend"):
        run_grid(other, tmp_path / "out", workers=1)


def test_an_unusable_out_is_an_error_naming_it_before_any_run(tmp_path, calls, monkeypatch):
    from ablations import store as store_module

    grid = write(tmp_path / "g.toml", GRID)
    a_file = write(tmp_path / "file.txt", "x")
    for out, message in ((a_file, "is a file"), (a_file / "sub", "is under the file")):
        with pytest.raises(ValueError, match=message) as err:
            run_grid(grid, out, workers=1)
        assert "--out" in str(err.value) and str(out) in str(err.value)

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(store_module.tempfile, "mkstemp", read_only)
    with pytest.raises(ValueError, match="not a writable directory .*Read-only file system"):
        run_grid(grid, tmp_path / "ro", workers=1)
    assert calls == [] and a_file.read_text() == "x"


@pytest.mark.parametrize("workers", [1, 2])
def test_runs_in_flight_report_their_epochs_to_the_caller(tmp_path, workers):
    from ablations.executors import LocalExecutor
    from ablations.train import run_one

    configs = expand(load_grid(write(tmp_path / "g.toml", GRID.replace("epochs = 1", "epochs = 3"))))
    items = [{**config_to_dict(c), "run_id": config_hash(c)} for c in configs[:2]]
    seen: list[tuple[str, int, int]] = []
    results = list(LocalExecutor(workers).map_unordered(
        run_one, items, progress=lambda *call: seen.append(call)))
    assert {r["status"] for r in results} == {"finished"}
    for item in items:
        epochs = [(e, n) for rid, e, n in seen if rid == item["run_id"]]
        assert epochs == [(0, 3), (1, 3), (2, 3), (3, 3)]
    plain = {r["run_id"]: r["metrics"] for r in LocalExecutor(1).map_unordered(run_one, items)}
    assert {r["run_id"]: r["metrics"] for r in results} == plain  # progress only observes


def test_the_store_counts_what_this_call_wrote(tmp_path, monkeypatch):
    import ablations.objectives as objectives

    def broken(self, a, p, n, margin):
        raise RuntimeError("naive is broken today")

    monkeypatch.setattr(objectives.NaiveObjective, "forward_triplets", broken)
    store = run_grid(write(tmp_path / "g.toml", GRID), tmp_path / "out", workers=1)
    assert store.written == {"finished": 5, "failed": 2}  # 2 batch_hard + 3 baselines


def test_a_damaged_grid_toml_is_an_error_naming_it(tmp_path, calls):
    grid = write(tmp_path / "g.toml", GRID)
    run_grid(grid, tmp_path / "out", workers=1)
    (tmp_path / "out" / "grid.toml").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ValueError, match="grid.toml' is not UTF-8"):
        run_grid(grid, tmp_path / "out", workers=1)
    assert len(calls) == 7


def test_copies_links_and_foreign_folders_in_runs_change_nothing(tmp_path, calls):
    import shutil

    from ablations.store import StoreWarning

    grid = write(tmp_path / "g.toml", GRID)
    out = tmp_path / "out"
    store = run_grid(grid, out, workers=1)
    expected = store.runs().sort_values("run_id", ignore_index=True)
    trained = set(store.steps()["run_id"])  # the baselines have no steps
    runs_dir = out / "runs"
    first, second = sorted(trained)[:2]
    shutil.copytree(runs_dir / first, runs_dir / f"{first}.bak")  # a user's backup copy
    (runs_dir / "0123456789ab").symlink_to(runs_dir / first, target_is_directory=True)
    (runs_dir / "notes").mkdir()
    (runs_dir / "notes" / "result.json").write_text('{"status": "finished"}')
    forged = runs_dir / "ba9876543210"  # a hand-made folder: its name is not its config's hash
    shutil.copytree(runs_dir / first, forged)
    config = json.loads((forged / "config.json").read_text())
    (forged / "config.json").write_text(json.dumps({**config, "run_id": forged.name}))
    # a folder named by a grid cell's id but holding another run's config: not done
    shutil.rmtree(runs_dir / second)
    shutil.copytree(runs_dir / first, runs_dir / second)
    with pytest.warns(StoreWarning) as record:
        store = ResultsStore(out)
        runs = store.runs().sort_values("run_id", ignore_index=True)
        steps = store.steps()
    messages = " ".join(str(w.message) for w in record)
    for name in (f"{first}.bak", "0123456789ab", "notes", forged.name, second):
        assert str(runs_dir / name) in messages
    pd.testing.assert_frame_equal(runs, expected[expected["run_id"] != second]
                                  .reset_index(drop=True))
    assert not steps.duplicated(["run_id", "step"]).any()
    assert set(steps["run_id"]) == trained - {second}
    with pytest.warns(StoreWarning):
        store = run_grid(grid, out, workers=1)
    assert calls[7:] == [second]  # only the cell whose folder was not its own runs again
    runs = store.runs().sort_values("run_id", ignore_index=True)
    assert list(runs["run_id"]) == list(expected["run_id"]) and runs["run_id"].is_unique
    assert (runs_dir / f"{first}.bak" / "result.json").is_file()  # nothing of the user's removed
    assert (runs_dir / "notes" / "result.json").is_file() and forged.is_dir()
    twice = pd.concat([store.steps()] * 2, ignore_index=True)  # as a store read twice once wrote
    twice.to_parquet(out / "steps.parquet", index=False)
    with pytest.warns(StoreWarning):
        assert not ResultsStore(out).steps().duplicated(["run_id", "step"]).any()


def test_out_keeps_files_that_are_not_the_stores_temporaries(tmp_path, calls):
    grid = write(tmp_path / "g.toml", GRID)
    out = tmp_path / "out"
    user = [out / ".notes.tmp", out / "sub" / ".draft.abcdefgh.tmp", out / ".mine.abcdefgh.tmp"]
    for path in user:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep me")
    previous = os.umask(0o022)
    try:
        store = run_grid(grid, out, workers=1)
    finally:
        os.umask(previous)
    run_id = store.stored_ids()[0]
    for path in (out / "runs.parquet", out / "grid.toml", store.run_dir(run_id) / "result.json",
                 store.run_dir(run_id) / "embeddings.npz"):
        assert path.stat().st_mode & 0o777 == 0o644, path  # readable by the group, as umask says
    leftovers = [out / ".runs.parquet.k3j_9x2a.tmp", store.run_dir(run_id) / ".result.json.q1w2e3r4.tmp"]
    for path in leftovers:  # what a killed writer of the store leaves
        path.write_bytes(b"partial")
    run_grid(grid, out, workers=1)
    assert all(path.read_text() == "keep me" for path in user)
    assert not any(path.exists() for path in leftovers)
    assert len(calls) == 7
    damaged = store.run_dir(run_id) / "embeddings.npz"
    damaged.write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(ValueError, match="not a readable .npz") as err:
        store.embeddings(run_id)
    assert str(damaged) in str(err.value) and "not an .npz archive" in str(err.value)
    assert "pickled" not in str(err.value)


@pytest.mark.parametrize("kind", ["runs is a file", "runs.parquet is a directory"])
def test_a_store_entry_of_the_wrong_kind_is_an_error_naming_it(tmp_path, calls, kind):
    out = tmp_path / "out"
    out.mkdir()
    if kind == "runs is a file":
        bad = write(out / "runs", "x")
    else:
        bad = out / "runs.parquet"
        bad.mkdir()
    with pytest.raises(ValueError) as err:
        run_grid(write(tmp_path / "g.toml", GRID), out, workers=1)
    assert str(bad) in str(err.value) and "choose another --out" in str(err.value)
    assert calls == []
    if kind == "runs.parquet is a directory":  # made a directory while a run writes the store
        from ablations.store import atomic_write_bytes

        with pytest.raises(OSError) as err:
            atomic_write_bytes(bad, b"table")
        assert err.value.filename == str(bad) and not list(out.glob(".*.tmp"))


def _dies(item: dict) -> dict:
    """A pool task that kills its own worker with item["signal"] (once, or every time)."""
    marker = Path(item["marker"])
    with open(marker.with_suffix(".calls"), "a") as calls:  # one line a call
        calls.write("call\n")
    time.sleep(0.5)  # runs overlap: the other worker has one in flight when one dies
    if item["signal"] and (item["always"] or not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), item["signal"])
        time.sleep(60)  # the signal ends the worker
    return {"run_id": item["run_id"]}


def test_a_killed_pool_worker_costs_a_retried_run_and_the_grid_finishes(tmp_path):
    from ablations.executors import LocalExecutor, WorkerLost

    items = [{"run_id": f"run{i}", "marker": str(tmp_path / f"m{i}"), "always": False,
              "signal": int(signal.SIGKILL) if i == 1 else 0} for i in range(5)]
    with pytest.warns(WorkerLost) as lost:
        results = list(LocalExecutor(2).map_unordered(_dies, items))
    assert sorted(r["run_id"] for r in results) == [f"run{i}" for i in range(5)]  # each once
    calls = {i: len((tmp_path / f"m{i}.calls").read_text().splitlines()) for i in range(5)}
    assert calls == {0: 1, 1: 2, 2: 1, 3: 1, 4: 1}  # the other worker's run was not lost
    # one death, one warning, naming only the run of the worker that died
    assert [str(w.message) for w in lost] == [
        "a pool worker died (killed by SIGKILL) with run run1 in flight; it runs again on a "
        "new worker; the other runs go on"]
    # a worker that dies every time is given up after its retries; every other run is yielded
    items[3].update(signal=int(signal.SIGTERM), always=True)
    results = []
    with pytest.warns(WorkerLost, match=r"killed by SIGTERM\) with run run3 in flight; given up after 2 tries"):
        with pytest.raises(ChildProcessError, match=r"run3; every other run finished"):
            for result in LocalExecutor(2, retries=1).map_unordered(_dies, items):
                results.append(result["run_id"])
    assert sorted(results) == ["run0", "run1", "run2", "run4"]
