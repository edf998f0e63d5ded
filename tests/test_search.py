"""The `[search]` grid section: parsing, the equal-budget Optuna search, resume after SIGKILL,
local vs Dask, the leaderboard picking the reproduced configuration, and the report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from ablations.grid import parse_grid_text
from ablations.runner import run_grid
from ablations.search import _repair_journal, _suggest, trial_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dask_cluster import running_cluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SEARCH = """
[search]
trials = 3
seed = 0
parallel = 2
startup_trials = 2

[search.space]
lr = {low = 1e-4, high = 1e-2, log = true}
margin = {low = 0.05, high = 0.5}
temperature = {low = 0.03, high = 0.3, log = true}
"""

GRID = """
[base]
dataset = "digits"
epochs = 1
class_folds = 2      # fixed test classes 7-9; folds train on 3 or 4 of the other 7 classes
sampler_p = 3

[grid]
loss = ["batch_hard", "ntxent"]
seed = [0, 1]

[baselines]
include = ["raw", "untrained"]
""" + SEARCH


def _grid(text: str):
    return parse_grid_text(text, source="g.toml")


# ---------------------------------------------------------------- parsing (no training)


def test_each_variant_searches_only_the_keys_that_apply_to_it():
    grid = _grid("""
[base]
dataset = "digits"
class_folds = 3
[grid]
loss = ["batch_hard", "batch_hard_soft", "ntxent", "combined", "triplet_ce"]
seed = [4, 5]
[search]
trials = 5
seed = 1
parallel = 2
[search.space]
lr = {low = 1e-4, high = 1e-2, log = true}
margin = {low = 0.05, high = 0.5}
temperature = {low = 0.03, high = 0.3}
w_pos = {low = 0.1, high = 2.0}
epochs = {low = 2, high = 6, step = 2}
""")
    s = grid.search
    searched = {v.label: v.searched for v in s.variants}
    assert searched == {
        "batch_hard": ("lr", "margin", "epochs"),
        "batch_hard_soft": ("lr", "epochs"),
        "ntxent": ("lr", "temperature", "epochs"),
        "combined [fixed]": ("lr", "margin", "w_pos", "epochs"),
        "triplet_ce(batch_hard) [fixed]": ("lr", "margin", "epochs"),
    }
    assert (s.trials, s.seed, s.parallel, s.startup_trials) == (5, 1, 2, 10)
    assert s.class_folds == 3 and s.seeds == (4, 5)
    assert s.trial_runs == 5 * 5 * 3 and s.reproduction_runs == 5 * 3 * 1
    assert isinstance(s.space["epochs"].low, int) and s.space["epochs"].step == 2


def test_a_grid_without_search_parses_as_before():
    grid = _grid(GRID.replace(SEARCH, ""))
    assert grid.search is None and len(grid.configs) == 2 * 2 * 2


@pytest.mark.parametrize(("change", "named"), [
    (("trials = 3", "trials = 0"), "search.trials"),
    (("trials = 3", "trials = 3.5"), "search.trials"),
    (("parallel = 2", "parallel = true"), "search.parallel"),
    (("seed = 0\n", "seed = -1\n"), "search.seed"),
    (("startup_trials = 2", "startup = 2"), "search.startup"),
    (("parallel = 2\n", ""), "search.parallel"),
    (("log = true}\nmargin", "log = true, scale = 2}\nmargin"), "'scale'"),
    (("high = 0.5", "high = 0.01"), "search.space.margin"),
    (("{low = 1e-4, high = 1e-2, log = true}", "{low = 0.0, high = 1e-2, log = true}"), "search.space.lr"),
    (("{low = 1e-4, high = 1e-2, log = true}", "{low = 1e-4, high = 1e-2, log = 1}"), "search.space.lr.log"),
    (("{low = 1e-4, high = 1e-2, log = true}", "{low = -1.0, high = 1e-2}"), "search.space.lr.low"),
    (("{low = 1e-4, high = 1e-2, log = true}", "{low = 1e-4}"), "'high'"),
    (("{low = 1e-4, high = 1e-2, log = true}", "[1e-3]"), "search.space.lr"),
    (("{low = 1e-4, high = 1e-2, log = true}", "[1e-3, 1e-3]"), "search.space.lr"),
    (("{low = 1e-4, high = 1e-2, log = true}", "'fast'"), "search.space.lr"),
    (("lr = {", "speed = {"), "search.space.speed"),
    (("lr = {", "dataset = {"), "search.space.dataset"),
    (("lr = {", "seed = {"), "search.space.seed"),
    (("margin = {low = 0.05, high = 0.5}", "embedding_dim = {low = 1.5, high = 4}"), "search.space.embedding_dim.low"),
    (("margin = {low = 0.05, high = 0.5}", "embedding_dim = {low = 1, high = 4, step = 0.5}"), "search.space.embedding_dim.step"),
    (("margin = {low = 0.05, high = 0.5}", "normalize = {low = 0, high = 1}"), "search.space.normalize"),
    (("margin = {low = 0.05, high = 0.5}", "w_pos = {low = 0.1, high = 2.0}"), "search.space.w_pos"),
    (("seed = [0, 1]", "seed = [0, 1]\nmargin = [0.1, 0.2]"), "grid.margin"),
    (("epochs = 1", "epochs = 1\nlr = 0.01"), "search.space.lr"),
    (("[search.space]", "[search.space]\nmargin_schedule = ['constant', 'linear']\n"
                        "margin_ramp_epochs = {low = 2, high = 4}"), "margin_ramp_epochs"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_search_section_is_an_error_naming_the_key(change, named):
    old, new = change
    assert old in GRID
    with pytest.raises(ValueError) as err:
        _grid(GRID.replace(old, new, 1))
    assert named in str(err.value) and "g.toml" in str(err.value)


def test_the_readme_search_example_gives_seven_variants_the_same_budget():
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (text,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.S) if "[search]" in b]
    s = parse_grid_text(text, source="README.md").search
    assert len(s.variants) == 7 and s.trials == 20 and s.class_folds == 3 and s.seeds == (0, 1, 2)
    searched = {v.label: v.searched for v in s.variants}
    assert searched["batch_hard_soft"] == ("lr", "epochs")
    assert searched["combined [fixed]"] == ("lr", "margin", "w_pos", "epochs")
    assert s.trial_runs == 420 and s.reproduction_runs == 42


def test_the_trial_runs_are_capped_like_a_grid():
    with pytest.raises(ValueError, match="--max-runs 12"):
        parse_grid_text(GRID, source="g.toml", max_runs=11)


def test_a_dry_run_says_the_budget_and_creates_nothing(tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_text(GRID)
    assert run_grid(path, tmp_path / "store", dry_run=True) is None
    out = capsys.readouterr().out
    assert "2 variants x 3 trials x 2 folds (seed 0) = 12 trial runs" in out
    assert "4 of them new" in out and "12 baseline runs" in out
    assert "batch_hard: searches lr, margin (not temperature" in out
    assert "ntxent: searches lr, temperature (not margin" in out
    assert not (tmp_path / "store").exists()
    path.write_text(GRID.replace("sampler_p = 3", "sampler_p = 5"))  # a fold trains on 3 classes
    with pytest.raises(ValueError, match="sampler_p = 5"):  # refused as the run refuses it
        run_grid(path, tmp_path / "store", dry_run=True)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    path.write_text(GRID)
    with pytest.raises(ValueError, match="is a file"):
        run_grid(path, a_file, dry_run=True)


def _completed(values: list[tuple[float, float]]) -> list:
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    return [optuna.trial.create_trial(params={"lr": lr}, distributions=dist, value=v)
            for lr, v in values]


def test_a_trials_values_depend_only_on_the_seed_its_number_and_the_history():
    section = _grid(GRID).search
    variant = section.variants[0]
    history = _completed([(1e-3, 0.5), (5e-3, 0.7)])
    first = _suggest(section, variant, 2, history)
    assert _suggest(section, variant, 2, _completed([(1e-3, 0.5), (5e-3, 0.7)])) == first
    assert _suggest(section, variant, 3, history) != first
    assert _suggest(section, variant, 2, _completed([(1e-3, 0.9), (5e-3, 0.1)])) != first
    assert trial_seed(0, 2) == trial_seed(0, 2) != trial_seed(1, 2)


def test_a_half_written_journal_line_and_a_stale_lock_are_dropped(tmp_path):
    path = tmp_path / "v.journal"
    path.write_bytes(b'{"op_code": 0}\n{"op_co')
    Path(f"{path}.lock").write_text("")
    _repair_journal(path)
    assert path.read_bytes() == b'{"op_code": 0}\n' and not Path(f"{path}.lock").exists()


# ---------------------------------------------------------------- end to end (tiny search)


def _trials(store: Path) -> pd.DataFrame:
    frame = pd.read_parquet(store / "search" / "trials.parquet")
    return frame.sort_values(["variant", "trial"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "search.toml"
    path.write_text(GRID)
    return path


@pytest.fixture(scope="module")
def uninterrupted(grid_file, tmp_path_factory) -> Path:
    """The search run once, start to end, on one local worker."""
    out = tmp_path_factory.mktemp("uninterrupted") / "store"
    run_grid(grid_file, out, workers=1)
    return out


@pytest.mark.slow
def test_every_variant_gets_its_budget_and_the_leaderboard_picks_the_chosen_trial(uninterrupted):
    from reports.leaderboard import select
    from reports.variants import annotate
    from ablations.store import ResultsStore

    trials = _trials(uninterrupted)
    assert sorted(trials["variant"].unique()) == ["batch_hard", "ntxent"]
    for variant, part in trials.groupby("variant"):
        assert list(part["trial"]) == [0, 1, 2] and (part["state"] == "complete").all()
        assert list(part["best_so_far"]) == list(part["value"].cummax())
        chosen = part[part["chosen"]]
        assert len(chosen) == 1 and chosen["value"].iloc[0] == part["value"].max()
        searched = {"batch_hard": ["param_lr", "param_margin"],
                    "ntxent": ["param_lr", "param_temperature"]}[variant]
        params = [c for c in part.columns if c.startswith("param_") and part[c].notna().all()]
        assert params == searched
    store = ResultsStore(uninterrupted)
    runs = store.runs()
    # a trial's value is the mean validation MAP@R of its fold runs, never test
    row = trials.iloc[0]
    folds = runs.set_index("run_id").loc[row["run_ids"].split(","), "val_map_at_r"]
    assert len(folds) == 2 and row["value"] == pytest.approx(folds.mean(), abs=1e-12)
    selection = select(annotate(runs), confidence=0.95)
    for variant, part in trials.groupby("variant"):
        picked = selection.selected_runs[variant]
        chosen = part[part["chosen"]].iloc[0]
        assert set(chosen["run_ids"].split(",")) < set(picked["run_id"])  # its seed-0 runs reused
        assert sorted(zip(picked["fold"], picked["seed"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        for key in (c for c in part.columns if c.startswith("param_") and pd.notna(chosen[c])):
            assert (picked[key.removeprefix("param_")] == chosen[key]).all()


@pytest.mark.slow
def test_the_report_shows_the_search(uninterrupted, tmp_path):
    from reports.build import build_report

    path = build_report(uninterrupted, tmp_path / "report", umap_epochs=5, umap_max_points=100)
    page = path.read_text(encoding="utf-8")
    assert "id='search'" in page and "search_best_so_far" in page
    table = pd.read_csv(tmp_path / "report" / "tables" / "search_variants.csv")
    assert list(table["reached_budget"]) == ["yes", "yes"] and list(table["trials"]) == ["3/3"] * 2
    assert list(table["searched"]) == ["lr, margin", "lr, temperature"]
    assert (tmp_path / "report" / "figures" / "search_best_so_far.png").is_file()
    summary = (tmp_path / "report" / "summary.md").read_text(encoding="utf-8")
    assert "## Search" in summary and "is not selectable" not in summary


def _stored(store: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (store / "runs").glob("*/result.json")}


def _journal_trials(store: Path, slug: str) -> list:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = store / "search" / f"{slug}.journal"
    if not path.exists():
        return []
    _repair_journal(path)
    storage = JournalStorage(JournalFileBackend(str(path)))
    return optuna.load_study(study_name=slug, storage=storage).get_trials(deepcopy=False)


@pytest.mark.slow
def test_a_search_killed_with_sigkill_resumes_to_the_same_trials_none_twice(
        grid_file, uninterrupted, tmp_path):
    out = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "tripletlab", "run", str(grid_file), "--out",
                             str(out), "--workers", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(_stored(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the search ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    before = _stored(out)
    asked = _journal_trials(out, "batch_hard")
    assert 3 <= len(before) < 12 and 1 <= len(asked) <= 3
    assert any(t.state == optuna.trial.TrialState.RUNNING for t in asked)  # asked, not told

    run_grid(grid_file, out, workers=1)

    assert {rid: m for rid, m in _stored(out).items() if rid in before} == before  # none rerun
    for slug in ("batch_hard", "ntxent"):
        assert [t.number for t in _journal_trials(out, slug)] == [0, 1, 2]
    for t in asked:  # the trials asked before the kill kept their values
        assert _journal_trials(out, "batch_hard")[t.number].params == t.params
    pd.testing.assert_frame_equal(_trials(out), _trials(uninterrupted), check_exact=True)
    assert sorted(_stored(out)) == sorted(_stored(uninterrupted))


@pytest.mark.slow
def test_a_search_on_dask_asks_the_same_trials_as_the_local_one(grid_file, uninterrupted,
                                                                  tmp_path):
    (tmp_path / "dask").mkdir()
    with running_cluster(tmp_path / "dask", n_workers=2) as cluster:
        run_grid(grid_file, tmp_path / "store", scheduler=cluster.address)
    pd.testing.assert_frame_equal(_trials(tmp_path / "store"), _trials(uninterrupted),
                                  check_exact=True)
    assert sorted(_stored(tmp_path / "store")) == sorted(_stored(uninterrupted))


def test_a_store_refuses_a_changed_search_but_accepts_a_larger_budget(tmp_path):
    from ablations.search import PLAN_FILE, _check_plan

    plan = _grid(GRID).search.plan()
    _check_plan(tmp_path / PLAN_FILE, plan)
    _check_plan(tmp_path / PLAN_FILE, {**plan, "trials": 10})
    with pytest.raises(ValueError, match="changed: seed"):
        _check_plan(tmp_path / PLAN_FILE, {**plan, "seed": 7})


def test_a_search_store_lists_no_absent_grid_cells_and_configs_read_rounded():
    import pandas as pd

    from ablations.results import read_grid
    from reports.protocol import absent_runs
    from reports.variants import describe_config

    assert absent_runs(read_grid(GRID), pd.DataFrame(columns=["run_id"])) == []   # the Search section says
    assert absent_runs(read_grid(GRID.replace(SEARCH, "")), pd.DataFrame(columns=["run_id"]))  # a grid does
    row = pd.Series({"lr": 0.0016007371962480652, "epochs": 20, "loss": "batch_hard"})
    assert describe_config(row, ["lr", "epochs"]) == "lr=0.001601, epochs=20"
