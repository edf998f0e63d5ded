"""The `tripletlab` command: `run` a grid into a results store, `report` on a store, `check` a loss.

Data flows one way (losses <- ablations <- reports); this module sits on top of
both and imports each lazily, so `tripletlab run` never pays for UMAP or seaborn.

Each subcommand is a pair in COMMANDS: a function adding its parser and a
handler `(args) -> exit status`. Exit status: 0 done; 1 runs failed (their count
is printed); 2 bad input (a message naming the argument, key or file); 130 / 143
interrupted by SIGINT / SIGTERM (workers stopped, finished runs kept).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every cleanup path runs the same way."""

    signum = signal.SIGTERM


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _add_run(sub) -> None:
    from ablations.grid import MAX_RUNS

    run = sub.add_parser("run", help="train and evaluate every cell of a grid into a results store")
    run.add_argument("grid", type=Path, help="grid file (TOML with [base] and [grid])")
    run.add_argument("--out", type=Path, required=True, help="results store directory")
    run.add_argument("--workers", type=_positive_int, default=None,
                     help="local worker processes (default: one per core)")
    run.add_argument("--scheduler", default=None,
                     help="Dask scheduler address, e.g. tcp://127.0.0.1:8786 (default: local pool)")
    run.add_argument("--dry-run", action="store_true",
                     help="validate the grid, print the number of runs and the axes, run nothing")
    run.add_argument("--extend", action="store_true",
                     help="allow adding this grid's cells to a store made by another grid file")
    run.add_argument("--max-runs", type=_positive_int, default=MAX_RUNS,
                     help=f"refuse grids of more cells than this (default {MAX_RUNS})")


def _run(args: argparse.Namespace) -> int:
    from ablations.runner import run_grid

    store = run_grid(args.grid, args.out, workers=args.workers, scheduler=args.scheduler,
                     dry_run=args.dry_run, extend=args.extend, max_runs=args.max_runs)
    failed = store.written["failed"] if store is not None else 0
    if failed:
        print(f"tripletlab run: {failed} run(s) failed (their errors are in "
              f"{args.out / 'runs.parquet'} and the report); running the same command again "
              f"retries them", file=sys.stderr)
        return 1
    return 0


def _add_report(sub) -> None:
    report = sub.add_parser("report", help="write the HTML report of a results store")
    report.add_argument("store", type=Path, help="results store directory (from `tripletlab run`)")
    report.add_argument("--out", type=Path, default=None,
                        help="report directory (default: STORE/report)")


def _report(args: argparse.Namespace) -> int:
    from ablations.store import ensure_writable_dir
    from reports.build import build_report

    if args.out is not None:
        ensure_writable_dir(args.out, what="--out")
    from reports.verdict import read_warning

    path = build_report(args.store, args.out)
    print(f"report written to {path}")
    warning = read_warning(path.parent)
    if warning:
        print(f"tripletlab report: WARNING: {warning}", file=sys.stderr)
    return 0


def _add_check(sub) -> None:
    from tripletlab import check

    check.add_parser(sub)


def _check(args: argparse.Namespace) -> int:
    from tripletlab import check

    return check.run(args)


# name -> (add its parser to the subparsers, handler args -> exit status)
COMMANDS: dict[str, tuple[Callable, Callable[[argparse.Namespace], int]]] = {
    "run": (_add_run, _run),
    "report": (_add_report, _report),
    "check": (_add_check, _check),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tripletlab",
        description="Benchmark and ablation suite for triplet and metric-learning losses.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM raises Terminated (a KeyboardInterrupt) while the command runs; warnings are one line."""

    def terminate(signum, frame):
        raise Terminated()

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"tripletlab: warning: {message}", file=sys.stderr if file is None else file)

    previous_show = warnings.showwarning
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave signals alone
        pass
    warnings.showwarning = one_line
    try:
        yield
    finally:
        warnings.showwarning = previous_show
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    try:  # building the parser imports torch (seconds): Ctrl-C there is an interrupt too
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("tripletlab: interrupted by SIGINT (while starting)", file=sys.stderr)
        return 128 + int(signal.SIGINT)
    try:
        with _interruptible():
            return COMMANDS[args.command][1](args)
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        print(f"tripletlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        where = f": {err.filename!r}" if err.filename else ""
        print(f"tripletlab {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"tripletlab {args.command}: interrupted by {signal.Signals(signum).name}",
              file=sys.stderr)
        return 128 + int(signum)


if __name__ == "__main__":
    sys.exit(main())
