"""Run grid cells on a Dask distributed cluster (the ``--scheduler`` path).

``DaskExecutor(address)`` implements the ``Executor`` protocol of
``ablations/executors.py``: ``map_unordered(fn, items)`` submits one task per
run config and yields each result as it finishes. The calling process writes
the results to the store, keyed by ``run_id``.

Fault tolerance: a task whose worker dies (crash, SIGKILL, lost node) is
re-run by the scheduler on another worker, up to the scheduler's
``distributed.scheduler.allowed-failures`` (default 3) deaths per task. Each
task has the explicit key ``"<fn name>-<run_id>"``, so a task re-run after a
worker death, or a grid resubmitted while the scheduler still holds its
tasks, is the same task: its result is yielded once. ``retries`` re-runs a
task that raised (``run_one`` records its own errors as failed runs, so this
only matters for errors outside it, such as an out-of-memory kill of the
task's process pool).

Determinism: each task sets torch to ``torch_threads`` intra-op threads
(default 1) before running, whatever the worker's ``--nthreads`` and
environment, so a worker does not oversubscribe its cores and a run gives the
same numbers on a worker as in a local process.

Progress: with ``map_unordered(..., progress=cb)`` each task calls ``fn(item,
progress=...)``, which logs ``(run_id, epoch, epochs)`` as a Dask event
(``Worker.log_event``) under a topic unique to this call; the client subscribes
to it and calls ``cb`` from the thread iterating the results.

Workers: ``dask worker tcp://HOST:PORT --nthreads 1 --nworkers N``, in an
environment where this checkout's ``losses`` and ``ablations`` import (the
project installed with ``pip install -e .``, or ``PYTHONPATH=<repo root>``;
the ``dask`` command does not put its working directory on ``sys.path``).
Workers need no shared filesystem: results travel back to the calling
process, which writes the store. An ``npz`` dataset's ``npz_path`` must exist
on every worker.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
import uuid
from concurrent.futures import CancelledError
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ablations.config import config_hash
from ablations.executors import POLL_S

__all__ = ["DaskExecutor", "task_key"]

_ADDRESS_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")
MAX_HANDSHAKE_BYTES = 2**20  # a scheduler's first message (its handshake) is under 100 bytes


def probe_scheduler(address: str, timeout_s: float) -> None:
    """ConnectionError naming `address` unless a tcp:// address answers like a Dask scheduler.

    A Dask server writes its handshake as soon as a connection opens: an 8-byte
    native-order length ("Q", as distributed.comm.tcp packs it), then that many
    bytes of frames holding a msgpack dict with "compression" and "python".
    Something else (an HTTP server waits for a request; a random service sends
    other bytes) would leave `distributed.Client` waiting past its timeout, or
    allocating what it takes for a length, or failing with a traceback on the
    frames: this reads and decodes the whole greeting (at most
    MAX_HANDSHAKE_BYTES) within `timeout_s`. Other schemes are left to the client.
    """
    if not address.startswith("tcp://"):
        return
    host, _, port = address[len("tcp://"):].rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit():
        raise ConnectionError(f"Dask scheduler address {address!r} has no port "
                              f"(expected tcp://HOST:PORT)")
    deadline = time.monotonic() + timeout_s
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            head, closed = _receive(sock, 8, deadline)
            length = struct.unpack("Q", head)[0] if len(head) == 8 else 0
            body = b""
            if 0 < length <= MAX_HANDSHAKE_BYTES:
                body, closed = _receive(sock, length, deadline)
    except OSError as exc:
        raise ConnectionError(f"could not connect to the Dask scheduler at {address} "
                              f"within {timeout_s:g} s: {exc.strerror or exc}") from exc
    if len(head) == 8 and 0 < length <= MAX_HANDSHAKE_BYTES and len(body) == length:
        if _is_handshake(body):
            return
        what = f"sent {length} bytes that are not a Dask handshake ({body[:16]!r}...)"
    elif len(head) == 8 and length > MAX_HANDSHAKE_BYTES:
        what = (f"announced a first message of {length} bytes (a Dask handshake is under "
                f"{MAX_HANDSHAKE_BYTES} bytes; {head!r} is not a Dask message)")
    elif len(head) == 8:
        what = (f"announced a {length}-byte handshake and sent {len(body)} bytes of it "
                + ("before closing the connection" if closed else f"within {timeout_s:g} s"))
    else:
        what = (f"sent {head!r}, not a Dask message" if head else
                "closed the connection without a word" if closed else
                f"sent nothing within {timeout_s:g} s")
    raise ConnectionError(f"{address} is not a Dask scheduler: it {what} "
                          f"(a scheduler greets every connection); check --scheduler")


def _receive(sock: socket.socket, n: int, deadline: float) -> tuple[bytes, bool]:
    """Up to n bytes from sock before `deadline` (time.monotonic) -> (bytes, peer closed)."""
    data = bytearray()
    try:
        while len(data) < n and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(min(n - len(data), 2**16))
            if not chunk:
                return bytes(data), True
            data += chunk
    except socket.timeout:
        pass
    return bytes(data), False


def _is_handshake(body: bytes) -> bool:
    """Whether `body` (a message after its length) decodes as a Dask handshake dict."""
    from distributed.protocol import loads
    from distributed.protocol.utils import unpack_frames

    try:
        frames, rest = unpack_frames(body, partial=True)
        message = loads(frames, deserialize=False) if not rest else None
    except Exception:  # noqa: BLE001 - any decoding failure means "not a handshake"
        return False
    return isinstance(message, dict) and {"compression", "python"} <= message.keys()


def task_key(fn: Callable[[dict], dict], item: dict) -> str:
    """fn, run config dict -> the Dask key of its task, "<fn name>-<run_id>".

    The run_id is the item's "run_id" when it carries one, else
    ``ablations.config.config_hash(item)``. The key is stable across
    submissions of the same run, so the scheduler recognises a resubmitted
    run as the task it already holds.
    """
    if not isinstance(item, dict):
        raise ValueError(f"items: expected dicts (run configs), got {type(item).__name__}")
    run_id = item.get("run_id")
    if run_id is None:
        run_id = config_hash(item)
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"items: expected 'run_id' to be a non-empty str, got {run_id!r}")
    name = getattr(fn, "__name__", type(fn).__name__)
    return f"{name}-{run_id}"


def _call_with_torch_threads(item: dict, *, fn: Callable[..., dict], torch_threads: int,
                             progress_topic: str | None = None) -> dict:
    """run config dict -> fn(item), with torch limited to torch_threads intra-op threads.

    progress_topic: fn also gets `progress`, which logs [run_id, epoch, epochs]
    as a Dask event under that topic.
    """
    import torch

    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    if progress_topic is None:
        return fn(item)
    from distributed import get_worker

    worker = get_worker()

    def progress(run_id: str, epoch: int, epochs: int) -> None:
        worker.log_event(progress_topic, [run_id, int(epoch), int(epochs)])

    return fn(item, progress=progress)


class _QuietOnceLost(logging.Filter):
    """Drops the records of `distributed.client` once the scheduler is known lost (`lost`):
    its failed reconnection, and the traceback of the reconnection cancelled when the
    client closes, say again what the ConnectionError raised here says in one line."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.lost


class DaskExecutor:
    """Executor over a running Dask scheduler at ``address`` ("tcp://HOST:PORT").

    Keyword-only settings (none of them changes what a run computes):
    ``retries``: re-runs of a task that raised (worker deaths are handled by
    the scheduler, see the module docstring); ``torch_threads``: intra-op
    threads each task gives torch; ``connect_timeout_s``: how long to wait
    for the scheduler before failing.

    One ``distributed.Client`` is opened per ``map_unordered`` call and
    closed when the iteration ends, is abandoned (generator closed) or
    raises; unfinished tasks are cancelled then.
    """

    def __init__(
        self,
        address: str,
        *,
        retries: int = 2,
        torch_threads: int = 1,
        connect_timeout_s: float = 30.0,
    ) -> None:
        if not isinstance(address, str) or not address.startswith(_ADDRESS_SCHEMES):
            raise ValueError(
                f"address: expected a Dask scheduler address like 'tcp://HOST:PORT' "
                f"(schemes {', '.join(_ADDRESS_SCHEMES)}), got {address!r}"
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries: expected an int >= 0, got {retries!r}")
        if (isinstance(torch_threads, bool) or not isinstance(torch_threads, int)
                or torch_threads < 1):
            raise ValueError(f"torch_threads: expected an int >= 1, got {torch_threads!r}")
        if (isinstance(connect_timeout_s, bool) or not isinstance(connect_timeout_s, (int, float))
                or not connect_timeout_s > 0):
            raise ValueError(f"connect_timeout_s: expected a number > 0, got {connect_timeout_s!r}")
        self.address = address
        self.retries = retries
        self.torch_threads = torch_threads
        self.connect_timeout_s = float(connect_timeout_s)

    def __repr__(self) -> str:
        return (f"DaskExecutor({self.address!r}, retries={self.retries}, "
                f"torch_threads={self.torch_threads})")

    def map_unordered(self, fn: Callable[[dict], dict], items: Sequence[dict], *,
                      progress: Callable[[str, int, int], None] | None = None) -> Iterator[dict]:
        """fn (config dict -> result dict), N config dicts -> the N results, in finishing order.

        progress: (run_id, epoch, epochs) -> None, called here for every progress
        call of fn on the workers (fn must then accept a `progress` keyword).

        The items must be distinct runs (distinct run_ids). A task that raised (after
        ``retries``) or died with too many workers re-raises its error here,
        after the remaining tasks are cancelled.
        """
        items = list(items)
        keys = [task_key(fn, item) for item in items]
        dupes = sorted(key for key, count in Counter(keys).items() if count > 1)
        if dupes:
            raise ValueError(f"items: expected distinct run_ids, got duplicates {dupes}")
        return self._iterate(fn, items, keys, progress)

    def _iterate(self, fn: Callable[[dict], dict], items: list[dict],
                 keys: list[str], progress=None) -> Iterator[dict]:
        if not items:
            return
        from distributed import Client

        probe_scheduler(self.address, self.connect_timeout_s)
        try:
            client = Client(self.address, timeout=self.connect_timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(
                f"could not connect to the Dask scheduler at {self.address} "
                f"within {self.connect_timeout_s:g} s: {exc}"
            ) from exc
        quiet = _QuietOnceLost()
        client_logger = logging.getLogger("distributed.client")
        client_logger.addFilter(quiet)
        try:
            yield from self._results(client, fn, items, keys, progress, quiet)
        finally:
            client_logger.removeFilter(quiet)

    def _results(self, client, fn, items, keys, progress, quiet) -> Iterator[dict]:
        """Submit `items` on `client`, yield their results; closes the client at the end."""
        from distributed import as_completed

        with client:
            futures: dict[Any, Any] = {}
            topic = None
            events: deque = deque()  # appended by the client's event loop thread
            if progress is not None:
                topic = f"tripletlab-progress-{uuid.uuid4().hex}"
                client.subscribe_topic(topic, lambda event: events.append(event[1]))
            try:
                submitted = client.map(
                    _call_with_torch_threads,
                    items,
                    key=keys,
                    pure=False,
                    retries=self.retries,
                    fn=fn,
                    torch_threads=self.torch_threads,
                    progress_topic=topic,
                )
                futures = {f.key: f for f in submitted}
                finished = as_completed(submitted, loop=client.loop)
                while not finished.is_empty():
                    if progress is None:
                        batch = finished.next_batch(block=True)
                    else:
                        while events:
                            progress(*events.popleft())
                        batch = finished.next_batch(block=False)
                        if not batch:
                            time.sleep(POLL_S)
                    for future in batch:
                        try:
                            result = future.result()
                        except (CancelledError, OSError) as exc:
                            # OSError: distributed's CommClosedError, the scheduler gone while
                            # it sent a finished run's result (that run runs again)
                            lost = (isinstance(exc, OSError)
                                    or getattr(exc, "reason", "") == "scheduler-connection-lost")
                            quiet.lost = lost
                            what = (f"lost the Dask scheduler at {self.address} mid-grid"
                                    if lost else
                                    f"the Dask scheduler at {self.address} cancelled run "
                                    f"{future.key!r} ({getattr(exc, 'reason', 'no reason')})")
                            raise ConnectionError(
                                f"{what}; every run that finished is stored; run the same "
                                f"command again to run the rest") from None
                        futures.pop(future.key, None)
                        future.release()
                        yield result
            finally:
                if futures and not quiet.lost:
                    client.cancel(list(futures.values()))
                if topic is not None and not quiet.lost:
                    client.unsubscribe_topic(topic)
