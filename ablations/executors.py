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

    A worker that dies (SIGKILL, SIGTERM, out of memory) breaks the pool: its runs
    in flight are re-run on a new pool, each at most `retries` more times, and a
    `WorkerLost` warning says so in one line; a run lost more often is given up
    (ChildProcessError naming it, raised after every other run has been yielded).
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
        tries: Counter[int] = Counter()  # index in items -> pools it was lost with
        index = {id(item): i for i, item in enumerate(items)}
        given_up: list[tuple[dict, str]] = []
        while todo:
            lost, why = yield from self._one_pool(ctx, fn, todo, progress)
            for item in lost:
                tries[index[id(item)]] += 1
            again = [it for it in lost if tries[index[id(it)]] <= self.retries]
            dropped = [it for it in lost if tries[index[id(it)]] > self.retries]
            given_up += [(it, why) for it in dropped]
            todo.extendleft(reversed(again))
            if lost:
                warnings.warn(
                    f"a pool worker died ({why}); {len(again)} run(s) in flight re-run on a new "
                    f"pool{_named(again)}" + (f"; {len(dropped)} given up after "
                                              f"{self.retries + 1} tries{_named(dropped)}"
                                              if dropped else ""), WorkerLost, stacklevel=2)
        if given_up:
            raise ChildProcessError(
                f"{len(given_up)} run(s) lost their worker process {self.retries + 1} times "
                f"({given_up[-1][1]}){_named([it for it, _ in given_up])}; every other run "
                f"finished; run the same command again to retry them")

    def _one_pool(self, ctx, fn, todo, progress):
        """Run `todo` (a deque, consumed) on one new pool, yielding results; return (lost, why).

        lost: the items in flight when a worker died (BrokenProcessPool), `why` its
        exit status; the pool is then ended, and the caller decides what runs again.
        Each pool has its own progress queue (a killed worker may hold a queue's lock).
        """
        progress_queue = ctx.SimpleQueue() if progress is not None else None
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(todo)), mp_context=ctx,
                                   initializer=_init_worker,
                                   initargs=(self.torch_threads, progress_queue, os.getpid()))
        call = functools.partial(_call_in_worker, fn=fn)
        running: dict = {}  # future -> item
        lost: list[dict] = []
        processes = list(getattr(pool, "_processes", {}).values())
        try:
            while todo and len(running) < 2 * self.workers:  # keep the pool queue fed
                item = todo.popleft()
                running[pool.submit(call, item)] = item
            processes = list(getattr(pool, "_processes", {}).values())
            while running:
                done, _ = wait(running, timeout=None if progress is None else POLL_S,
                               return_when=FIRST_COMPLETED)
                if progress is not None:
                    _drain(progress_queue, progress)
                for future in done:
                    item = running.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        lost.append(item)
                        continue
                    if todo and not lost:
                        nxt = todo.popleft()
                        running[pool.submit(call, nxt)] = nxt
                    yield result
                if lost:  # every future of a broken pool fails: keep what finished before
                    for future in list(running):
                        item = running.pop(future)
                        if future.done() and not future.cancelled() and future.exception() is None:
                            yield future.result()
                        else:
                            lost.append(item)
            for proc in processes if lost else ():  # their exit status, once ended
                proc.join(timeout=5.0)
            why = ", ".join(dict.fromkeys(_exit_status(p.exitcode) for p in processes
                                          if p.exitcode not in (None, 0))) or "no exit status"
            return lost, why
        finally:
            for future in running:
                future.cancel()
            processes = list(getattr(pool, "_processes", {}).values()) or processes
            pool.shutdown(wait=False, cancel_futures=True)
            _stop(processes)
            if progress_queue is not None:
                progress_queue.close()


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
