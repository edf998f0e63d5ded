"""A real local Dask cluster for tests: a `dask scheduler` and `dask worker` subprocesses.

Everything binds 127.0.0.1, every wait is bounded, and `stop()` kills every
process group it started (each process runs in its own session, so a worker's
nanny and its worker child go together).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DASK_CLI = Path(sys.executable).with_name("dask")


class LocalDaskCluster:
    """One scheduler and named workers, each `--nthreads 1 --nworkers 1`, run from the repo root.

    The processes get the repo root and tests/ on their PYTHONPATH: the workers
    import this checkout (the code under test, whatever the venv has installed) and
    tasks can be functions of the test modules, pickled by reference.
    """

    def __init__(self, tmp_dir: Path, *, n_workers: int, start_timeout_s: float = 60.0) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.start_timeout_s = start_timeout_s
        self.procs: dict[str, subprocess.Popen] = {}
        self.address = ""
        self.worker_names = [f"w{i}" for i in range(n_workers)]

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.tmp_dir / f"{name}.log", "wb")
        paths = [str(REPO_ROOT), str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(p for p in paths if p))
        self.procs[name] = subprocess.Popen(
            [str(DASK_CLI), *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def start(self) -> "LocalDaskCluster":
        if not DASK_CLI.exists():
            raise FileNotFoundError(f"the dask command is not beside {sys.executable}: {DASK_CLI}")
        sched_file = self.tmp_dir / "scheduler.json"
        self._spawn(
            "scheduler",
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(sched_file)],
        )
        deadline = time.monotonic() + self.start_timeout_s
        while not self.address:
            self._check_alive("scheduler", deadline)
            if sched_file.exists():
                try:
                    self.address = json.loads(sched_file.read_text())["address"]
                except (json.JSONDecodeError, KeyError):
                    pass
            time.sleep(0.05)
        for name in self.worker_names:
            self.spawn_worker(name)
        self.wait_for_workers(len(self.worker_names), deadline)
        return self

    def spawn_worker(self, name: str) -> None:
        """Start (or restart, after `kill`) the worker `name`; does not wait for it to register."""
        self._spawn(
            name,
            ["worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
             "--nworkers", "1", "--no-dashboard", "--name", name, "--death-timeout", "30",
             "--local-directory", str(self.tmp_dir / name)],
        )

    def _check_alive(self, name: str, deadline: float) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log(name)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} not ready within {self.start_timeout_s} s: "
                               f"{self.log(name)}")

    def log(self, name: str) -> str:
        path = self.tmp_dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30, set_as_default=False)

    def wait_for_workers(self, n: int, deadline: float) -> None:
        with self.client() as client:
            while len(client.scheduler_info(n_workers=-1)["workers"]) < n:
                for name in self.procs:
                    self._check_alive(name, deadline)
                time.sleep(0.1)

    def worker_addresses(self, client) -> dict[str, str]:
        """worker name -> worker address, as the scheduler sees them."""
        info = client.scheduler_info(n_workers=-1)["workers"]
        return {w["name"]: addr for addr, w in info.items()}

    def kill(self, name: str) -> None:
        """SIGKILL a process group (a worker's nanny and worker child together)."""
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def stop(self) -> None:
        """Terminate every process group, workers first; SIGKILL what is left after 10 s."""
        for name in [*self.worker_names, "scheduler"]:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group may still hold children even when the leader exited
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


@contextmanager
def running_cluster(tmp_dir: Path, *, n_workers: int) -> Iterator[LocalDaskCluster]:
    """A started LocalDaskCluster, stopped (every process group ended) on exit."""
    cluster = LocalDaskCluster(tmp_dir, n_workers=n_workers)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
