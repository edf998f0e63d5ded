"""The `tripletlab` command: `run` a grid into a results store, `report` on a store, `migrate` a
store of an older format, `check` a loss.

Data flows one way (losses <- ablations <- reports); this module sits on top of
both and imports each lazily, so `tripletlab run` never pays for UMAP or seaborn
and `tripletlab --help` imports neither torch nor pandas.

Each subcommand is a triple in COMMANDS: its one-line help, a function adding its
arguments to its parser (imports allowed: it runs only for the command invoked) and
a handler `(args) -> exit status`. `run` and `check` import users' modules from the
current directory (tripletlab/imports.py). Exit status: 0 done; 1 runs failed
(their count is printed); 2 bad input (a message naming the argument, key or file,
or the module that shadows one of ours), an unusable or lost Dask scheduler, or a run
whose worker died more often than it is retried; 130 / 143 interrupted by SIGINT /
SIGTERM (workers stopped, finished runs kept). `tripletlab run --help` lists them.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from tripletlab import imports

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


def _add_run(run: argparse.ArgumentParser) -> None:
    from ablations.grid import MAX_RUNS

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


def _add_report(report: argparse.ArgumentParser) -> None:
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


def _add_migrate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", type=Path, help="results store directory (from `tripletlab run`)")


def _migrate(args: argparse.Namespace) -> int:
    from ablations.config import STORE_FORMAT
    from ablations.migrate import migrate_store

    if migrate_store(args.store) == 0:
        print(f"store {args.store} is of store format {STORE_FORMAT}: nothing to migrate")
    return 0


def _add_check(parser: argparse.ArgumentParser) -> None:
    from tripletlab import check

    check.add_arguments(parser)


def _check(args: argparse.Namespace) -> int:
    from tripletlab import check

    return check.run(args)


# name -> (one-line help, add its arguments to its parser, handler args -> exit status)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                          Callable[[argparse.Namespace], int]]] = {
    "run": ("train and evaluate every cell of a grid into a results store", _add_run, _run),
    "report": ("write the HTML report of a results store", _add_report, _report),
    "migrate": ("rewrite a results store of an older store format (run ids) to the current one",
                _add_migrate, _migrate),
    "check": ("check your own triplet-loss function against the reference, with diagnoses",
              _add_check, _check),
}
# name -> the end of its --help: what each exit status means
EPILOGS = {
    "run": """exit status:
  0    every run finished or diverged (also when a pool worker died and its run was
       re-run: a warning names the run)
  1    some runs failed: their count is printed, their errors are in runs.parquet;
       the same command retries them
  2    the grid, a key, a file or an argument is wrong; the --scheduler address is no
       Dask scheduler, cannot be reached, or was lost mid-grid; a run lost its worker
       process more often than it is retried (one line names what; finished runs kept)
  130  interrupted by SIGINT (Ctrl-C), also while starting; 143 by SIGTERM: every
       worker stopped, finished runs kept, the same command resumes
  SIGKILL (shell status 137) stores nothing more, keeps what is stored, and leaves no
  worker, fork server or resource tracker behind""",
}
IMPORTS_FROM_CWD = ("run", "check")  # the commands that import users' modules ("mypkg.data:load")


def version() -> str:
    """The installed distribution's version, else (a checkout not installed) the package's."""
    from importlib import metadata

    try:
        return metadata.version("tripletlab")
    except metadata.PackageNotFoundError:
        from tripletlab import __version__

        return __version__


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a misspelt choice: a subcommand, `check --as VARIANT`
    (Python 3.14's suggest_on_error, here for 3.11). Subcommands' parsers are of this class too."""

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            choices = [str(c) for c in action.choices]
            close = difflib.get_close_matches(str(value), choices, n=1)
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}"
                                         + (f"; did you mean {close[0]!r}?" if close else "")
                                         + f" (choose from {', '.join(map(repr, choices))})")


class _Version(argparse.Action):
    """--version: print `tripletlab VERSION` and exit (the metadata is read only then)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"tripletlab {version()}")
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s arguments are added (None: every command's), so that
    `tripletlab --help` imports nothing of torch."""
    parser = _Parser(
        prog="tripletlab",
        description="Benchmark and ablation suite for triplet and metric-learning losses.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add, _) in COMMANDS.items():
        if command in (None, name):
            add(sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                               epilog=EPILOGS.get(name),
                               formatter_class=argparse.RawDescriptionHelpFormatter))
        else:
            sub.add_parser(name, help=help_text)
    return parser


def _command(argv: list[str]) -> str | None:
    """The subcommand named in argv (its first word not an option), None when there is none."""
    return next((word for word in argv if not word.startswith("-")), None)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM raises Terminated (a KeyboardInterrupt) while the command runs; warnings are one line."""

    def terminate(signum, frame):
        raise Terminated()

    def one_line(message, category, filename, lineno, file=None, line=None):
        text, file = f"tripletlab: warning: {message}", sys.stderr if file is None else file
        tqdm = sys.modules.get("tqdm")
        if tqdm is not None:  # on a line of its own, above the progress bar
            tqdm.tqdm.write(text, file=file)
        else:
            print(text, file=file)

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
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command(argv)
    command = command if command in COMMANDS else None  # unknown: the parser says so ("did you mean")
    # users' modules from the current directory, and none of them in place of ours (checked
    # before a command's parser imports anything of ours)
    with imports.cwd_on_path() if command in IMPORTS_FROM_CWD else contextlib.nullcontext():
        shadow = imports.shadowing() if command is not None else None
        if shadow:
            print(f"tripletlab {command}: error: {shadow}", file=sys.stderr)
            return 2
        try:  # building a command's parser imports torch (seconds): Ctrl-C there is an interrupt too
            args = build_parser(command or "").parse_args(argv)  # no command: --help, --version or an error
        except KeyboardInterrupt:
            print("tripletlab: interrupted by SIGINT (while starting)", file=sys.stderr)
            return 128 + int(signal.SIGINT)
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; errors and interrupts -> a one-line message and the exit status."""
    try:
        with _interruptible():
            return COMMANDS[args.command][2](args)
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
