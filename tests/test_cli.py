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
    assert len(runs) == 10 and set(runs["status"]) == {"finished"}   # 4 cells + 6 baselines
    assert set(runs["loss"]) == {"batch_hard", "naive"}   # a baseline's is unread: the default
    assert set(runs["baseline"]) == {"", "raw", "untrained", "lda", "nca", "pca_whiten"}
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
    assert out.startswith("4 runs") and "+ 6 baseline runs" in out
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


def test_report_on_a_store_whose_runs_folder_is_a_file_names_it(tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    (store / "grid.toml").write_text(SMOKE.read_text())
    (store / "runs").write_text("not a folder")  # not "the store holds no run yet"
    assert main(["report", str(store)]) == 2
    err = capsys.readouterr().err
    assert str(store / "runs") in err and "is a file" in err


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_workers_must_be_a_whole_number_at_least_one(tmp_path, workers, capsys):
    with pytest.raises(SystemExit):
        main(["run", str(SMOKE), "--out", str(tmp_path), "--workers", workers])
    assert "--workers" in capsys.readouterr().err



# ------------------------------------------------------------ faults and odd input

TINY = SMOKE.read_text().replace("epochs = 2", "epochs = 1\nsampler_k = 8").replace(
    "seed = [0, 1]", "")  # 2 runs of one short epoch


def test_exit_status_is_one_with_the_count_when_runs_failed(tmp_path, monkeypatch, capsys):
    import ablations.objectives as objectives

    def broken(self, a, p, n, margin):
        raise RuntimeError("naive is broken today")

    monkeypatch.setattr(objectives.NaiveObjective, "forward_triplets", broken)
    grid = tmp_path / "g.toml"
    grid.write_text(TINY)
    assert main(["run", str(grid), "--out", str(tmp_path / "out"), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "1 run(s) failed" in err and "runs.parquet" in err
    monkeypatch.undo()
    assert main(["run", str(grid), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0


@pytest.mark.parametrize("case", ["out-file", "out-under-file", "report-out-file",
                                  "grid-folder", "grid-not-utf8", "grid-empty"])
def test_unusable_paths_are_errors_naming_them_not_tracebacks(tmp_path, case, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    grid = tmp_path / "g.toml"
    grid.write_text(TINY)
    argv, named = {
        "out-file": (["run", str(grid), "--out", str(a_file)], a_file),
        "out-under-file": (["run", str(grid), "--out", str(a_file / "store")], a_file),
        "report-out-file": (["report", str(tmp_path), "--out", str(a_file)], a_file),
        "grid-folder": (["run", str(tmp_path), "--out", str(tmp_path / "out")], tmp_path),
        "grid-not-utf8": (["run", str(a_file), "--out", str(tmp_path / "out")], a_file),
        "grid-empty": (["run", str(a_file), "--out", str(tmp_path / "out")], a_file),
    }[case]
    if case == "grid-not-utf8":
        a_file.write_bytes(b"[base]\nepochs = 2 # \xe9\n")
    if case == "grid-empty":
        a_file.write_text("")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tripletlab {argv[0]}: error:") and str(named) in err
    assert "Traceback" not in err and a_file.is_file()


def test_a_huge_grid_is_refused_at_once_and_max_runs_raises_the_cap(tmp_path, capsys):
    grid = tmp_path / "huge.toml"
    grid.write_text(f"[grid]\nseed = {list(range(1000))}\nlr = {[0.001 * (i + 1) for i in range(1000)]}\n")
    assert main(["run", str(grid), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "1000000 cells" in err and "--max-runs 1000000" in err
    small = tmp_path / "small.toml"
    small.write_text(TINY)
    assert main(["run", str(small), "--out", str(tmp_path / "out"), "--dry-run",
                 "--max-runs", "1"]) == 2
    assert "2 cells" in capsys.readouterr().err
    assert main(["run", str(small), "--out", str(tmp_path / "out"), "--dry-run",
                 "--max-runs", "2"]) == 0
    assert capsys.readouterr().out.startswith("2 runs")


def test_a_damaged_runs_parquet_is_a_warning_naming_it_and_the_command_goes_on(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text(TINY)
    out = tmp_path / "out"
    assert main(["run", str(grid), "--out", str(out), "--workers", "1"]) == 0
    (out / "runs.parquet").write_bytes(b"PAR1 garbage")
    capsys.readouterr()
    assert main(["run", str(grid), "--out", str(out), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert f"tripletlab: warning: {str(out / 'runs.parquet')!r} is not a readable parquet" in err
    assert "7 were already done" in err and len(pd.read_parquet(out / "runs.parquet")) == 7  # 2 + raw, untrained, 3 classical


LONG_GRID = "[base]\nepochs = 500\neval_every = 500\nsampler_k = 8\n[grid]\nseed = [0, 1, 2]\n"


def _start_long_runs(tmp_path, names, grid=None):
    """One `tripletlab run --workers 2` of `grid` (default LONG_GRID) per name, each in its own
    session, and its log, once a run is in flight -> procs, logs, children (psutil, before
    any signal)."""
    import time

    import psutil

    if grid is None:
        grid = tmp_path / "long.toml"
        grid.write_text(LONG_GRID)
    procs, logs, children = {}, {}, {}
    for name in names:
        logs[name] = tmp_path / f"{name}.txt"
        with open(logs[name], "w") as err:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "tripletlab", "run", str(grid), "--out",
                 str(tmp_path / name), "--workers", "2"], cwd=ROOT, stdout=err, stderr=err,
                start_new_session=True)
    deadline = time.monotonic() + 180
    for name, proc in procs.items():
        while "running:" not in logs[name].read_text():  # a run is in flight
            assert proc.poll() is None and time.monotonic() < deadline, logs[name].read_text()
            time.sleep(0.1)
        children[name] = psutil.Process(proc.pid).children(recursive=True)
        assert len(children[name]) >= 4  # resource tracker, fork server, 2 workers
    return procs, logs, children


def _kill_sessions(procs) -> None:
    import os
    import signal

    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_an_interrupt_stops_every_worker_and_says_how_to_resume(tmp_path):
    """SIGINT to the process group (Ctrl-C) and SIGTERM to the command (`kill`), both at
    once (two commands started together to halve the test's time), with runs in flight."""
    import os
    import signal

    import psutil

    cases = {"SIGINT": 130, "SIGTERM": 143}
    procs = {}
    try:
        procs, logs, children = _start_long_runs(tmp_path, cases)
        os.killpg(procs["SIGINT"].pid, signal.SIGINT)  # Ctrl-C: the whole process group
        procs["SIGTERM"].send_signal(signal.SIGTERM)  # `kill PID`: the command only
        for name, code in cases.items():
            assert procs[name].wait(timeout=60) == code, logs[name].read_text()
            # the fork server exits once its workers are gone, after the interpreter's
            # teardown of torch: seconds on a loaded machine
            _, alive = psutil.wait_procs(children[name], timeout=30)
            assert alive == [], [p.cmdline()[:3] for p in alive]
    finally:
        _kill_sessions(procs)
    for name in cases:
        text = logs[name].read_text()
        assert "Traceback" not in text and "KeyboardInterrupt" not in text
        assert f"interrupted by {name}" in text
        assert re.search(r"interrupted: \d+ runs are stored in", text)
        assert "Run the same command again to resume" in text


def test_sigkill_of_the_command_leaves_no_process_behind(tmp_path):
    """`kill -9` of `tripletlab run`: its workers end with it, and then the fork server and the
    resource tracker (which wait for the workers' pipes) end too."""
    import signal

    import psutil

    procs = {}
    try:
        procs, logs, children = _start_long_runs(tmp_path, ["SIGKILL"])
        procs["SIGKILL"].send_signal(signal.SIGKILL)  # the command only, not its session
        assert procs["SIGKILL"].wait(timeout=60) == -signal.SIGKILL
        _, alive = psutil.wait_procs(children["SIGKILL"], timeout=30)
        assert alive == [], [p.cmdline()[:4] for p in alive]
    finally:
        _kill_sessions(procs)


def test_ctrl_c_while_the_command_imports_torch_exits_130_without_a_traceback(tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "tripletlab", "run", str(SMOKE), "--out",
                             str(tmp_path / "out"), "--dry-run"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Past the interpreter's start-up (a signal there is Python's, not ours) and within the
    # imports: once torch's shared library is mapped, torch is being imported (seconds).
    import psutil

    deadline = time.monotonic() + 60
    while not any("torch" in m.path for m in psutil.Process(proc.pid).memory_maps()):
        assert proc.poll() is None and time.monotonic() < deadline, "the command never imported torch"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "interrupted by SIGINT" in err


def test_a_killed_worker_of_the_command_costs_its_run_only_and_says_so(tmp_path):
    """SIGKILL to one of the two pool workers of `tripletlab run` with runs in flight: a
    one-line warning naming the run it had, that run re-run, the grid finishes (exit 0),
    every cell stored once."""
    import os
    import signal

    import psutil

    procs = {}
    grid = tmp_path / "g.toml"
    grid.write_text("[base]\nepochs = 40\neval_every = 40\nsampler_k = 8\n[grid]\n"
                    "seed = [0, 1, 2]\n")
    try:
        procs, logs, children = _start_long_runs(tmp_path, ["worker"], grid=grid)
        pids = {p.pid for p in children["worker"]}
        workers = [p for p in children["worker"] if p.ppid() in pids]  # the fork server's
        os.kill(workers[0].pid, signal.SIGKILL)
        assert procs["worker"].wait(timeout=300) == 0, logs["worker"].read_text()
    finally:
        _kill_sessions(procs)
    text = logs["worker"].read_text()
    assert re.search(r"(^|\n)tripletlab: warning: a pool worker died \(killed by SIGKILL\) "
                     r"with run [0-9a-f]{12} in flight; it runs again on a new worker", text), text
    assert "Traceback" not in text and text.count("pool worker died") == 1
    runs = pd.read_parquet(tmp_path / "worker" / "runs.parquet")
    assert runs["run_id"].is_unique and (runs["status"] == "finished").all()
    assert len(runs) == 10  # the 3 cells and their baselines


def test_ctrl_c_while_the_command_module_imports_is_one_line_and_130(monkeypatch, capsys):
    """The entry point (`tripletlab` and `python -m tripletlab`) imports tripletlab.cli inside its
    Ctrl-C guard: a KeyboardInterrupt there (here raised by the import itself) is one line."""
    import types

    import tripletlab

    class Importing(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "tripletlab.cli", Importing("tripletlab.cli"))
    assert tripletlab.main(["--version"]) == 130
    assert capsys.readouterr().err == "tripletlab: interrupted by SIGINT (while starting)\n"
