"""DaskExecutor: argument checks, then behaviour against a real local Dask cluster
(a `dask scheduler` and two `dask worker` subprocesses on 127.0.0.1)."""

from __future__ import annotations

import json
import logging
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablations.baselines import with_baselines
from ablations.config import config_hash
from ablations.dask_executor import DaskExecutor, task_key
from ablations.grid import expand, load_grid
from ablations.runner import run_grid
from ablations.train import run_one

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dask_cluster import LocalDaskCluster, running_cluster  # noqa: E402


# ---------------------------------------------------------------- task functions


def echo_threads(item: dict) -> dict:
    """What a worker sees: the item back, torch's intra-op threads, the process id."""
    import os

    import torch

    return {"run_id": item["run_id"], "value": item["value"] * 2,
            "threads": torch.get_num_threads(), "pid": os.getpid()}


def sleep_then_echo(item: dict) -> dict:
    time.sleep(item["sleep_s"])
    return {"run_id": item["run_id"]}


def fail_first_attempt(item: dict) -> dict:
    """Raises on the first attempt of each run (a marker file records attempts), then succeeds."""
    marker = Path(item["marker_dir"]) / item["run_id"]
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts == 1:
        raise RuntimeError(f"first attempt of {item['run_id']} fails")
    return {"run_id": item["run_id"], "attempts": attempts}


def count_then_wait_for_go(item: dict) -> dict:
    """Logs that the run started, then waits (at most 30 s) for a "go" file beside the log."""
    marker_dir = Path(item["marker_dir"])
    with open(marker_dir / f"{item['run_id']}.log", "a") as log:
        log.write("started\n")
    deadline = time.monotonic() + 30
    while not (marker_dir / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"run_id": item["run_id"]}


def report_epochs(item: dict, *, progress) -> dict:
    """Reports epochs 0..3 of its run (a little apart, as training would), then returns."""
    for epoch in range(4):
        progress(item["run_id"], epoch, 3)
        time.sleep(0.05)
    return {"run_id": item["run_id"]}


# ---------------------------------------------------------------- fixtures


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers, shared by this module's tests."""
    with running_cluster(tmp_path_factory.mktemp("dask"), n_workers=2) as cl:
        yield cl


def _scheduler_task_count(cluster: LocalDaskCluster) -> int:
    with cluster.client() as client:
        return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


# ---------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"address": "127.0.0.1:8786"}, "address"),
        ({"address": 8786}, "address"),
        ({"address": "tcp://127.0.0.1:1", "retries": -1}, "retries"),
        ({"address": "tcp://127.0.0.1:1", "retries": 1.5}, "retries"),
        ({"address": "tcp://127.0.0.1:1", "torch_threads": 0}, "torch_threads"),
        ({"address": "tcp://127.0.0.1:1", "torch_threads": True}, "torch_threads"),
        ({"address": "tcp://127.0.0.1:1", "connect_timeout_s": 0}, "connect_timeout_s"),
    ],
    ids=["no-scheme", "int-address", "negative-retries", "float-retries", "zero-threads",
         "bool-threads", "zero-timeout"],
)
def test_bad_settings_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DaskExecutor(**kwargs)


def test_task_key_uses_run_id_or_the_config_hash():
    config = {"dataset": "digits", "epochs": 3}
    assert task_key(echo_threads, {"run_id": "abc123"}) == "echo_threads-abc123"
    assert task_key(echo_threads, config) == f"echo_threads-{config_hash(config)}"
    with pytest.raises(ValueError, match="run_id"):
        task_key(echo_threads, {"run_id": ""})
    with pytest.raises(ValueError, match="items"):
        task_key(echo_threads, ["not", "a", "dict"])


def test_duplicate_runs_are_refused_before_connecting():
    executor = DaskExecutor(f"tcp://127.0.0.1:{_free_port()}", connect_timeout_s=0.5)
    with pytest.raises(ValueError, match="duplicates.*'echo_threads-r1'"):
        executor.map_unordered(echo_threads, [{"run_id": "r1"}, {"run_id": "r2"}, {"run_id": "r1"}])


def test_no_items_yields_nothing_without_connecting():
    executor = DaskExecutor(f"tcp://127.0.0.1:{_free_port()}", connect_timeout_s=0.5)
    assert list(executor.map_unordered(echo_threads, [])) == []


def test_unreachable_scheduler_is_a_connection_error_naming_it():
    address = f"tcp://127.0.0.1:{_free_port()}"
    executor = DaskExecutor(address, connect_timeout_s=1)
    with pytest.raises(ConnectionError, match=address):
        list(executor.map_unordered(echo_threads, [{"run_id": "r1", "value": 1}]))


class _FakeScheduler:
    """A TCP server on 127.0.0.1 that is no Dask scheduler: "http" waits for a request that
    never comes (as an HTTP server does); the others greet every connection with bytes of
    GREETINGS (random bytes, a Dask-like length then random frames, a length then a stall)."""

    GREETINGS = {
        "garbage": np.random.default_rng(0).bytes(4096),
        "frames": struct.pack("Q", 100) + np.random.default_rng(1).bytes(100),
        "truncated": struct.pack("Q", 50_000) + b"\x01" * 10,
        "huge": struct.pack("Q", 3 * 2**60) + b"\x00" * 64,
    }

    def __init__(self, kind: str):
        import http.server

        self.connected = threading.Event()  # a client has opened a connection
        connected = self.connected
        if kind == "http":
            class Silent(http.server.BaseHTTPRequestHandler):
                def setup(self):
                    connected.set()
                    super().setup()

            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Silent)
        else:
            import socketserver

            greeting = self.GREETINGS[kind]

            class Greeter(socketserver.BaseRequestHandler):
                def handle(self):
                    connected.set()
                    self.request.sendall(greeting)
                    time.sleep(3)

            self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Greeter)
        self.server.daemon_threads = True
        self.address = f"tcp://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("kind", ["http", "garbage", "frames", "truncated", "huge"])
def test_a_server_that_is_no_scheduler_is_a_clear_error_within_the_timeout(kind):
    fake = _FakeScheduler(kind)
    try:
        executor = DaskExecutor(fake.address, connect_timeout_s=1)
        with pytest.raises(ConnectionError, match=f"{fake.address} is not a Dask scheduler"):
            list(executor.map_unordered(echo_threads, [{"run_id": "r1"}]))
    finally:
        fake.close()


def test_the_command_names_a_garbage_scheduler_in_one_line_and_exits_2(tmp_path, capsys):
    from tripletlab.cli import main

    fake = _FakeScheduler("garbage")
    grid = tmp_path / "g.toml"
    grid.write_text("[base]\nepochs = 1\nsampler_k = 8\n")
    try:
        assert main(["run", str(grid), "--out", str(tmp_path / "out"), "--scheduler",
                     fake.address]) == 2
    finally:
        fake.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"tripletlab run: error: {fake.address} is not a Dask scheduler")
    assert "Traceback" not in "\n".join(err)


def test_the_command_waiting_on_an_http_server_ends_on_sigterm(tmp_path):
    """`tripletlab run --scheduler` at an HTTP server, killed with SIGTERM while it waits for
    the greeting: exit 143 at once (well within the 30 s connect timeout), no traceback."""
    import os
    import signal
    import subprocess

    fake = _FakeScheduler("http")
    grid = tmp_path / "g.toml"
    grid.write_text("[base]\nepochs = 1\nsampler_k = 8\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "tripletlab", "run", str(grid), "--out",
                             str(tmp_path / "out"), "--scheduler", fake.address],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert fake.connected.wait(timeout=120), "the command never connected"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)  # the connect timeout is 30 s
    finally:
        if proc.poll() is None:
            proc.kill()
        fake.close()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "interrupted by SIGTERM" in err


# ---------------------------------------------------------------- against a real cluster


@pytest.mark.parametrize("torch_threads", [1, 2])
def test_every_item_yields_its_result_once_with_the_torch_threads_asked(cluster, torch_threads):
    items = [{"run_id": f"r{i}", "value": i} for i in range(6)]
    executor = DaskExecutor(cluster.address, torch_threads=torch_threads)
    results = list(executor.map_unordered(echo_threads, items))
    assert sorted(r["run_id"] for r in results) == [item["run_id"] for item in items]
    assert all(r["value"] == int(r["run_id"][1:]) * 2 for r in results)
    assert {r["threads"] for r in results} == {torch_threads}
    assert len({r["pid"] for r in results}) == 2  # both workers took part


def test_a_raising_task_is_retried_then_succeeds(cluster, tmp_path):
    items = [{"run_id": f"r{i}", "marker_dir": str(tmp_path)} for i in range(2)]
    executor = DaskExecutor(cluster.address, retries=1)
    results = list(executor.map_unordered(fail_first_attempt, items))
    assert sorted((r["run_id"], r["attempts"]) for r in results) == [("r0", 2), ("r1", 2)]


def test_a_task_that_keeps_raising_raises_here(cluster, tmp_path):
    items = [{"run_id": "r0", "marker_dir": str(tmp_path)}]
    with pytest.raises(RuntimeError, match="first attempt of r0 fails"):
        list(DaskExecutor(cluster.address, retries=0).map_unordered(fail_first_attempt, items))


def test_progress_on_the_workers_reaches_the_caller(cluster):
    items = [{"run_id": f"r{i}"} for i in range(3)]
    seen: list[tuple] = []
    for result in DaskExecutor(cluster.address).map_unordered(
            report_epochs, items, progress=lambda *call: seen.append(call)):
        seen.append(("result", result["run_id"]))
    assert sorted(rid for tag, rid in (c for c in seen if len(c) == 2)) == ["r0", "r1", "r2"]
    for item in items:  # every epoch of every run, in order, before its result
        mine = [c for c in seen if item["run_id"] in c]
        assert mine == [(item["run_id"], e, 3) for e in range(4)] + [("result", item["run_id"])]


def _wait_until(condition, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout_s} s")
        time.sleep(0.02)


def test_a_run_resubmitted_while_in_flight_runs_once(cluster, tmp_path):
    items = [{"run_id": "r0", "marker_dir": str(tmp_path)}]
    key = task_key(count_then_wait_for_go, items[0])
    results: list[list[dict]] = []

    def submit() -> None:
        executor = DaskExecutor(cluster.address)
        results.append(list(executor.map_unordered(count_then_wait_for_go, items)))

    def clients_wanting_the_run() -> int:
        with cluster.client() as client:
            return client.run_on_scheduler(
                lambda dask_scheduler: len(dask_scheduler.tasks[key].who_wants)
                if key in dask_scheduler.tasks else 0)

    first = threading.Thread(target=submit, daemon=True)
    second = threading.Thread(target=submit, daemon=True)
    try:
        first.start()
        _wait_until((tmp_path / "r0.log").exists, timeout_s=30, what="the run starting")
        second.start()
        _wait_until(lambda: clients_wanting_the_run() == 2, timeout_s=30,
                    what="the second submission reaching the scheduler")
    finally:
        (tmp_path / "go").touch()
        first.join(timeout=30)
        second.join(timeout=30)
    assert results == [[{"run_id": "r0"}], [{"run_id": "r0"}]]
    assert (tmp_path / "r0.log").read_text() == "started\n"  # one execution for both


def test_abandoning_the_iteration_cancels_the_remaining_tasks(cluster):
    items = [{"run_id": f"r{i}", "sleep_s": 0.2 if i == 0 else 2.0} for i in range(4)]
    results = DaskExecutor(cluster.address).map_unordered(sleep_then_echo, items)
    assert next(results)["run_id"] == "r0"
    results.close()
    deadline = time.monotonic() + 10
    while _scheduler_task_count(cluster) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _scheduler_task_count(cluster) == 0


# ---------------------------------------------------------------- whole grids through run_grid


def _without_timings(runs: pd.DataFrame) -> pd.DataFrame:
    """runs.parquet minus the wall and CPU times (`*_time_s`): the only columns that may differ."""
    return runs.drop(columns=[c for c in runs.columns if c.endswith("_time_s")])


def _write_grid(path: Path, *, epochs: int, losses: list[str], margins: list[float]) -> Path:
    path.write_text(f"""
[base]
dataset = "digits"
epochs = {epochs}
eval_every = 1

[grid]
loss = {json.dumps(losses)}
margin = {json.dumps(margins)}
""")
    return path


def _expected_run_ids(grid_path: Path, *, baselines: bool = True) -> list[str]:
    """The grid's run ids, with its raw / untrained baselines (they log no step) or without."""
    configs = expand(load_grid(grid_path))
    return sorted(config_hash(c) for c in (with_baselines(configs) if baselines else configs))


def _sorted(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.sort_values(by).reset_index(drop=True)


@pytest.mark.slow
def test_a_grid_on_dask_stores_exactly_what_the_local_run_stores(cluster, tmp_path):
    grid = _write_grid(tmp_path / "grid.toml", epochs=2, losses=["batch_hard", "batch_all"],
                       margins=[0.2])
    local = run_grid(grid, tmp_path / "local", workers=1)
    dask = run_grid(grid, tmp_path / "dask", scheduler=cluster.address)
    run_ids = _expected_run_ids(grid)

    local_runs, dask_runs = (_sorted(s.runs(), ["run_id"]) for s in (local, dask))
    assert list(dask_runs["run_id"]) == run_ids
    assert (dask_runs["status"] == "finished").all()
    assert "wall_time_s" in dask_runs and "val_map_at_r" in _without_timings(dask_runs)
    pd.testing.assert_frame_equal(_without_timings(dask_runs), _without_timings(local_runs),
                                  check_exact=True)
    for table, order in (("steps", ["run_id", "step"]), ("epochs", ["run_id", "epoch"])):
        local_table = _sorted(getattr(local, table)(), order)
        dask_table = _sorted(getattr(dask, table)(), order)
        assert set(dask_table["run_id"]) == set(run_ids if table == "epochs" else
                                                _expected_run_ids(grid, baselines=False))
        pd.testing.assert_frame_equal(dask_table, local_table, check_exact=True)
    for run_id in run_ids:
        for local_array, dask_array in zip(local.embeddings(run_id), dask.embeddings(run_id)):
            np.testing.assert_array_equal(dask_array, local_array)


def _first_run_stored(store_dir: Path, stop: threading.Event, killed: dict,
                      within_s: float = 90.0) -> bool:
    """Wait until a run of `store_dir` is stored -> True; False (and killed["error"]) when
    none is within `within_s` or `stop` is set first (the grid ended)."""
    deadline = time.monotonic() + within_s
    while not any((store_dir / "runs").glob("*/result.json")):
        if time.monotonic() > deadline or stop.is_set():
            killed["error"] = f"no run was stored within {within_s:g} s, or before the grid ended"
            return False
        time.sleep(0.02)
    return True


def _kill_a_busy_worker_after_the_first_result(cluster, store_dir: Path, killed: dict,
                                               stop: threading.Event) -> None:
    """Wait (bounded) for the first stored run, then SIGKILL a worker that has a run in flight."""
    try:
        with cluster.client() as client:
            if not _first_run_stored(store_dir, stop, killed):
                return
            names = {addr: name for name, addr in cluster.worker_addresses(client).items()}
            for address, keys in client.processing().items():
                if keys:
                    cluster.kill(names[address])
                    killed.update(name=names[address], keys=list(keys))
                    return
            killed["error"] = "no worker had a run in flight after the first result"
    except Exception as err:  # noqa: BLE001 - reported by the test
        killed["error"] = repr(err)


# Kills a worker of the shared cluster: keep it the module's last test (it restarts
# the worker, without waiting for it, so the cluster is whole again for any later one).
@pytest.mark.slow
def test_a_killed_worker_still_leaves_every_cell_stored_exactly_once(cluster, tmp_path):
    grid = _write_grid(tmp_path / "grid.toml", epochs=8, losses=["batch_hard", "batch_all"],
                       margins=[0.1, 0.2])
    out = tmp_path / "store"
    killed: dict = {}
    stop = threading.Event()
    killer = threading.Thread(target=_kill_a_busy_worker_after_the_first_result,
                              args=(cluster, out, killed, stop), daemon=True)
    killer.start()
    try:
        store = run_grid(grid, out, scheduler=cluster.address)
    finally:
        stop.set()
        killer.join(timeout=30)
        if "name" in killed:
            cluster.spawn_worker(killed["name"])
    run_ids = _expected_run_ids(grid)

    assert "error" not in killed, killed["error"]
    assert killed["keys"]  # the worker died with runs of this grid in flight
    assert set(killed["keys"]) <= {task_key(run_one, {"run_id": run_id}) for run_id in run_ids}
    run_dirs = sorted(p.name for p in (out / "runs").iterdir())
    assert run_dirs == run_ids
    assert all((out / "runs" / run_id / "result.json").is_file() for run_id in run_ids)
    consolidated = pd.read_parquet(out / "runs.parquet")
    assert sorted(consolidated["run_id"]) == run_ids  # each run once
    assert (consolidated["status"] == "finished").all()
    steps = store.steps()
    assert set(steps["run_id"]) == set(_expected_run_ids(grid, baselines=False))
    assert not steps.duplicated(["run_id", "step"]).any()


def _kill_after_the_first_result(cluster, store_dir: Path, killed: dict,
                                 stop: threading.Event) -> None:
    """Wait (bounded) for the first stored run, then SIGKILL the scheduler."""
    if _first_run_stored(store_dir, stop, killed):
        cluster.kill("scheduler")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.slow
def test_a_killed_scheduler_is_one_clear_error_and_a_rerun_resumes(tmp_path):
    """The scheduler SIGKILLed mid-grid: a ConnectionError naming its address, nothing logged by
    the client (no FutureCancelledError, no reconnection traceback), the finished runs kept;
    the same grid run again runs only the rest, each run once."""
    grid = _write_grid(tmp_path / "grid.toml", epochs=2, losses=["batch_hard", "naive"],
                       margins=[0.2])
    out = tmp_path / "store"
    records = _Records()
    logging.getLogger("distributed.client").addHandler(records)
    killed: dict = {}
    stop = threading.Event()
    (tmp_path / "first").mkdir()
    try:
        with running_cluster(tmp_path / "first", n_workers=1) as first:
            killer = threading.Thread(target=_kill_after_the_first_result,
                                      args=(first, out, killed, stop), daemon=True)
            killer.start()
            with pytest.raises(ConnectionError,
                               match=f"lost the Dask scheduler at {first.address} mid-grid"):
                run_grid(grid, out, scheduler=first.address)
            stop.set()
            killer.join(timeout=30)
    finally:
        logging.getLogger("distributed.client").removeHandler(records)
    assert "error" not in killed, killed["error"]
    assert [r.getMessage() for r in records.records] == []
    kept = sorted(p.parent.name for p in (out / "runs").glob("*/result.json"))
    run_ids = _expected_run_ids(grid)
    assert 1 <= len(kept) < len(run_ids)
    store = run_grid(grid, out, workers=1)  # the rerun (here in this process)
    assert sum(store.written.values()) == len(run_ids) - len(kept)  # only the rest ran
    consolidated = pd.read_parquet(out / "runs.parquet")
    assert sorted(consolidated["run_id"]) == run_ids  # each run once
    assert (consolidated["status"] == "finished").all()
