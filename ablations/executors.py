"""Executors: how the cells of a grid are run. The store is written by the caller.

    class Executor(Protocol):
        def map_unordered(self, fn, items, *, progress=None) -> Iterator[dict]: ...

`fn` is `ablations.train.run_one` (config dict -> result dict, no file I/O);
results are yielded as they finish. With `progress` (a callable run_id, epoch,
epochs -> None in the calling process) the executor calls `fn(item,
progress=...)` in its workers and forwards every call back to `progress` in the
calling process, from the thread iterating the results, a run's calls before
its result. `LocalExecutor` is a process pool on this machine;
`ablations.dask_executor.DaskExecutor` runs on a Dask cluster.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

__all__ = ["Executor", "LocalExecutor", "WorkerLost", "default_workers"]

# modules imported once by the fork server, before any worker is forked from it
PRELOAD = ("torch", "torch._dynamo", "ablations.train", "ablations.evaluate", "losses.weighting",
           "sklearn.datasets", "sklearn.cluster", "sklearn.neighbors",
           "pytorch_metric_learning.utils.accuracy_calculator",
           "pytorch_metric_learning.utils.inference")


Progress = Callable[[str, int, int], None]  # (run_id, epoch, epochs) -> None
POLL_S = 0.2  # how often progress messages are forwarded while runs are in flight
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>: the signal a process gets when its parent dies
PARENT_POLL_S = 1.0  # where pidfd_open is missing: how often a worker checks the caller is alive
_PROGRESS_QUEUE = None  # a worker's queue back to the calling process (set by _init_worker)


class Executor(Protocol):
    def map_unordered(self, fn: Callable[[dict], dict], items: Sequence[dict], *,
                      progress: Progress | None = None) -> Iterator[dict]:
        """fn (config dict -> result dict), N items -> the N results in finishing order."""
        ...


def default_workers() -> int:
    """One worker per core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _die_with(caller_pid: int) -> None:
    """End this process (SIGKILL) when process `caller_pid` ends, even by SIGKILL.

    A pool worker is a child of the fork server, not of the caller, and holds the
    pipes that keep the fork server and the resource tracker alive: once the
    workers are gone, both exit. Two guards: on Linux PR_SET_PDEATHSIG (the
    worker dies with its parent, the fork server), and a daemon thread that waits
    on the caller (a pidfd where the OS has one, else a poll every PARENT_POLL_S).
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc to call: the thread below still watches
            pass
    threading.Thread(target=_watch_caller, args=(caller_pid,), name="watch-caller",
                     daemon=True).start()


def _watch_caller(caller_pid: int) -> None:
    """Block until process `caller_pid` has ended, then SIGKILL this process."""
    try:
        fd = os.pidfd_open(caller_pid)
    except ProcessLookupError:  # ended already
        fd = -1
    except (AttributeError, OSError):  # no pidfd (not Linux >= 5.3): poll
        fd = None
        while _alive(caller_pid):
            time.sleep(PARENT_POLL_S)
    if fd is not None and fd >= 0:
        select.select([fd], [], [])  # readable once the process has exited
    os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user (a reused pid)
        return False
    return True


def _init_worker(torch_threads: int, progress_queue=None, caller_pid: int | None = None) -> None:
    """Pool worker set-up: torch threads, the progress queue, SIGINT left to the parent,
    and death with the caller (`_die_with`: no worker outlives a SIGKILLed command).

    A terminal's Ctrl-C reaches the whole process group; the parent stops the
    workers, so they ignore it (no KeyboardInterrupt traceback from each).
    """
    global _PROGRESS_QUEUE
    import torch

    if caller_pid is not None:
        _die_with(caller_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(torch_threads)
    _PROGRESS_QUEUE = progress_queue


def _queue_progress(run_id: str, epoch: int, epochs: int) -> None:
    _PROGRESS_QUEUE.put((run_id, epoch, epochs))


def _call_in_worker(item: dict, *, fn: Callable[..., dict]) -> dict:
    """In a pool worker: fn(item), with progress sent to the parent when it asked for it."""
    if _PROGRESS_QUEUE is None:
        return fn(item)
    return fn(item, progress=_queue_progress)


def _drain(progress_queue, progress: Progress) -> None:
    """Forward every progress message waiting in the queue to `progress`.

    The queue is a SimpleQueue (a worker's put is written before its run returns),
    so a run's messages are all here before its result is yielded.
    """
    while not progress_queue.empty():
        progress(*progress_queue.get())


class LocalExecutor:
    """Run items on `workers` local processes, each with `torch_threads` torch threads.

    workers=None: one per core. workers=1 runs in this process, one item after
    the other (no pool to start; torch threads are set for the duration and
    restored). Pools use the "forkserver" start method: workers are forked from
    a clean server process that has imported PRELOAD once (torch, torch._dynamo
    which Adam imports, scikit-learn, PML: seconds per process otherwise) but
    never run a torch operation, so no
    OpenMP thread state is inherited, and no worker pays the imports again. At most `workers` items are in
    flight, so an interrupt (Ctrl-C) loses at most the runs in progress; the
    pool is shut down and its processes ended when the iteration stops.

    Each worker is a pool of one process (`_Worker`) given one run at a time, so a
    worker that dies (SIGKILL, SIGTERM, out of memory) loses only its own run: that
    run is re-run on a new worker, at most `retries` more times, while the other
    workers go on, and a `WorkerLost` warning says so in one line; a run lost more
    often is given up (ChildProcessError naming it, raised after every other run
    has been yielded).
    """

    def __init__(self, workers: int | None = None, *, torch_threads: int = 1, retries: int = 2):
        if workers is None:
            workers = default_workers()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers: expected an int >= 1 or None, got {workers!r}")
        if isinstance(torch_threads, bool) or not isinstance(torch_threads, int) or torch_threads < 1:
            raise ValueError(f"torch_threads: expected an int >= 1, got {torch_threads!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries: expected an int >= 0, got {retries!r}")
        self.workers = workers
        self.torch_threads = torch_threads
        self.retries = retries

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self.workers}, torch_threads={self.torch_threads})"

    def map_unordered(self, fn: Callable[[dict], dict], items: Sequence[dict], *,
                      progress: Progress | None = None) -> Iterator[dict]:
        items = list(items)
        if self.workers == 1 or len(items) <= 1:
            return self._serial(fn, items, progress)
        return self._pool(fn, items, progress)

    def _serial(self, fn, items, progress):
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads)
        try:
            for item in items:
                yield fn(item) if progress is None else fn(item, progress=progress)
        finally:
            torch.set_num_threads(before)

    def _pool(self, fn, items, progress):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD))  # no effect once the server runs
        todo = deque(items)  # not submitted yet, or lost with a dead worker
        tries: Counter[int] = Counter()  # index in items -> workers it was lost with
        index = {id(item): i for i, item in enumerate(items)}
        given_up: list[tuple[dict, str]] = []
        call = functools.partial(_call_in_worker, fn=fn)
        workers = [_Worker(ctx, self.torch_threads, progress is not None)
                   for _ in range(min(self.workers, len(items)))]
        running: dict = {}  # future -> (worker, item)
        try:
            while todo or running:
                busy = {id(worker) for worker, _ in running.values()}
                for worker in [w for w in workers if id(w) not in busy]:
                    if not todo:
                        break
                    item = todo.popleft()
                    try:
                        future = worker.submit(call, item)
                    except BrokenProcessPool:  # its process died while idle: no run lost
                        worker = workers[workers.index(worker)] = worker.replaced()
                        future = worker.submit(call, item)
                    running[future] = (worker, item)
                done, _ = wait(running, timeout=None if progress is None else POLL_S,
                               return_when=FIRST_COMPLETED)
                if progress is not None:  # a run's progress before its result
                    for worker in workers:
                        _drain(worker.queue, progress)
                for future in done:
                    worker, item = running.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:  # its process died: only its run is lost
                        why = worker.exit_status()
                        workers[workers.index(worker)] = worker.replaced()
                        tries[index[id(item)]] += 1
                        again = tries[index[id(item)]] <= self.retries
                        if again:
                            todo.appendleft(item)
                        else:
                            given_up.append((item, why))
                        warnings.warn(
                            f"a pool worker died ({why}) with run {_named([item])[2:]} in flight; "
                            + ("it runs again on a new worker" if again else
                               f"given up after {self.retries + 1} tries")
                            + "; the other runs go on", WorkerLost, stacklevel=2)
                        continue
                    yield result
        finally:
            for future in running:
                future.cancel()
            for worker in workers:
                worker.pool.shutdown(wait=False, cancel_futures=True)
            _stop([proc for worker in workers for proc in worker.processes])
            for worker in workers:
                worker.close_queue()
        if given_up:
            raise ChildProcessError(
                f"{len(given_up)} run(s) lost their worker process {self.retries + 1} times "
                f"({given_up[-1][1]}){_named([it for it, _ in given_up])}; every other run "
                f"finished; run the same command again to retry them")


class _Worker:
    """One pool worker process: a ProcessPoolExecutor of one process, with its own progress
    queue, so that a worker that dies breaks only its own pool and loses only its own run
    (a killed writer may also hold a queue's lock: no other worker shares it)."""

    def __init__(self, ctx, torch_threads: int, with_progress: bool):
        self._args = (ctx, torch_threads, with_progress)
        self.queue = ctx.SimpleQueue() if with_progress else None
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_worker,
                                        initargs=(torch_threads, self.queue, os.getpid()))
        self.processes: list = []  # its process, once started by the first submit

    def submit(self, call, item):
        future = self.pool.submit(call, item)
        self.processes = list(getattr(self.pool, "_processes", {}).values()) or self.processes
        return future

    def exit_status(self) -> str:
        """How its process ended ("killed by SIGKILL"), once it has (waits up to 5 s)."""
        for proc in self.processes:
            proc.join(timeout=5.0)
        return ", ".join(dict.fromkeys(_exit_status(p.exitcode) for p in self.processes
                                       if p.exitcode not in (None, 0))) or "no exit status"

    def replaced(self) -> "_Worker":
        """Shut this broken worker down -> a new one with the same settings."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        _stop(self.processes)
        self.close_queue()
        return _Worker(*self._args)

    def close_queue(self) -> None:
        if self.queue is not None:
            self.queue.close()


class WorkerLost(UserWarning):
    """A pool worker died (killed, out of memory): its runs in flight run again on a new pool."""


def _named(items: list[dict]) -> str:
    ids = [str(it.get("run_id", "?"))[:12] for it in items]
    return f": {', '.join(ids)}" if ids else ""


def _exit_status(code: int) -> str:
    """multiprocessing exit code -> "killed by SIGKILL" or "exit code 3"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _stop(processes, *, grace_s: float = 5.0) -> None:
    """Terminate pool processes (runs nobody will store), SIGKILL any still alive after grace_s."""
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=grace_s)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=grace_s)
