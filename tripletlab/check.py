"""`tripletlab check MODULE:FUNCTION --as VARIANT`: the conformance checker (losses.testing) as a command.

Exit codes: 0 the function conforms, 1 it does not, 2 it cannot be checked (bad flag; an
import string or file that does not import, or whose import exits; a class instead of an
instance; a signature that does not take the variant's tensors; a setting the checker
cannot pass; --timeout reached), each with one line on stderr.

Nothing heavy is imported at module level (torch comes with losses.testing, in `run`), so
building the parser for `tripletlab --help` costs nothing here.

--timeout uses signal.alarm in the main thread: SIGALRM interrupts pure-Python loops (and
a long torch call as soon as it returns). The import is first tried in a forked child
process, so that a module that ends the process at import (os._exit) is reported instead
of ending the command with its status; that child writes to /dev/null, and --timeout or
Ctrl-C during its import kills it, so no process outlives the command. While the function
is checked, os._exit raises SystemExit: a function that ends the process is a failing case.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path

# equal to losses.testing.VARIANT_NAMES and losses.testing.targets.DEFAULT_REDUCTION (tests/test_conformance_cli.py);
# written out so that the parser needs no torch
VARIANTS = ("naive", "batch_all", "batch_hard", "batch_hard_soft", "semi_hard_tf", "semi_hard_pml", "semi_hard", "combined",
            "batch_all_refs", "batch_hard_refs", "batch_hard_soft_refs", "semi_hard_tf_refs", "semi_hard_pml_refs",
            "semi_hard_refs")
_BATCH_REDUCTIONS = {"batch_all": "mean_positive", "batch_hard": "mean", "batch_hard_soft": "mean",
                     "semi_hard_tf": "mean", "semi_hard_pml": "mean_positive"}
DEFAULT_REDUCTIONS = {"naive": "mean", **_BATCH_REDUCTIONS, **{f"{k}_refs": v for k, v in _BATCH_REDUCTIONS.items()}}
DEFAULT_MARGIN = 0.2
DEFAULT_METRIC = "euclidean"


class CheckTimeout(BaseException):
    """--timeout reached (a BaseException, so the checker's handling of the user's errors lets it through)."""


def add_arguments(check: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `check` subcommand's description and arguments to its parser (no torch import)."""
    reductions = ", ".join(f"{k} {v}" for k, v in DEFAULT_REDUCTIONS.items())
    check.description = ("Run a battery of batches through MODULE:FUNCTION and compare value and "
                         "gradient with tripletlab's loss in float64; mismatches are named in plain "
                         "words, with the smallest failing batch as Python. Exit 0 conforms, 1 does "
                         "not, 2 cannot be checked.")
    check.add_argument("function", help="your loss: an import string mypkg.losses:batch_all, or a file "
                                        "./my_loss.py:batch_all (FUNCTION may be a callable instance)")
    check.add_argument("--as", dest="as_", required=True, choices=VARIANTS,
                       help="the variant it implements (combined: the combining step, see the README; *_refs: "
                            "between a batch and a memory, fn(anchors, labels, references, reference_labels, *, "
                            "anchor_index_in_refs, ...) as losses.batch_all_triplet_loss_refs)")
    check.add_argument("--metric", default=DEFAULT_METRIC,
                       help="euclidean | squared_euclidean | cosine (default: %(default)s)")
    check.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="(default: %(default)s)")
    check.add_argument("--reduction", default=None,
                       help=f"mean | mean_positive | sum (default: the variant's usual one: {reductions})")
    check.add_argument("--semantics", default=None, help="tf | pml (required with --as semi_hard)")
    check.add_argument("--map", action="append", default=[], metavar="SETTING=PARAM",
                       help="pass a setting (margin, metric, reduction, semantics, soft, w_*, "
                            "anchor_index_in_refs) under your "
                            "parameter's name; SETTING= (empty) does not pass it. Repeatable")
    check.add_argument("--kw", action="append", default=[], metavar="NAME=VALUE",
                       help="a fixed keyword for your function; VALUE is JSON (false, 1e-6, \"text\", [1, 2]) "
                            "or a bare word taken as a string. Repeatable")
    check.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                       help="stop with exit 2 when the check takes longer (default: no limit)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    return check


def run(args: argparse.Namespace) -> int:
    """Parsed `check` arguments -> exit code (0 conforms, 1 not, 2 cannot be checked)."""
    try:
        return _run(args)
    except CheckTimeout:
        _error(f"--timeout {args.timeout:g} s reached: {args.function} is too slow (or hangs); the check stopped")
        return 2
    except (ValueError, TypeError) as err:
        _error(str(err).splitlines()[0] if str(err) else type(err).__name__)
        return 2


def _run(args: argparse.Namespace) -> int:
    keywords = _pairs(args.map, "--map", parse=False)
    extra = _pairs(args.kw, "--kw", parse=True)
    if args.timeout is not None and args.timeout <= 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    from losses.testing import check_loss  # torch, after the cheap checks of the flags

    with _alarm(args.timeout):
        fn = load_function(args.function)
        progress = _Progress(args.function)
        with _no_hard_exit():
            report = check_loss(fn, as_=args.as_, metric=args.metric, margin=args.margin,
                                reduction=args.reduction, semantics=args.semantics, keywords=keywords,
                                extra=extra, progress=progress)
        progress.done()
    _print(report.to_json() if args.json else report.summary())
    return 0 if report.conforms else 1


def _error(line: str) -> None:
    print(f"tripletlab check: error: {line}", file=sys.stderr)


def _print(text: str) -> None:
    """print, where a closed pipe (`tripletlab check ... | head -1`) ends the output without a traceback."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the final flush must not fail again


@contextlib.contextmanager
def _alarm(seconds: float | None):
    if seconds is None:
        yield
        return

    def stop(signum, frame):
        raise CheckTimeout()

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _no_hard_exit():
    """os._exit raises SystemExit while the function is checked: a function that ends the process
    (with status 0 and no output) is a failing case, not a pass."""
    hard_exit = os._exit

    def refuse(code):
        raise SystemExit(f"os._exit({code}) called: the checked code tried to end the process")

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = hard_exit


class _Progress:
    """Prints "case i/n: name" to stderr once the check has taken more than a second."""

    def __init__(self, what: str):
        self.what, self.start, self.shown = what, time.monotonic(), False

    def __call__(self, i: int, n: int, name: str) -> None:
        if time.monotonic() - self.start > 1.0:
            self.shown = True
            print(f"tripletlab check: {self.what}: case {i}/{n} ({name}), {time.monotonic() - self.start:.0f} s",
                  file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.shown:
            print(f"tripletlab check: done in {time.monotonic() - self.start:.1f} s", file=sys.stderr)


def load_function(text: str):
    """"pkg.module:name" or "path/to/file.py:name" -> the callable; ValueError with one clear line."""
    module_text, sep, attr = text.rpartition(":")
    if not sep or not module_text or not attr:
        raise ValueError(f"{text!r} must look like 'package.module:function' or './file.py:function'")
    by_path = module_text.endswith(".py") or os.sep in module_text or module_text.startswith(".")
    if not by_path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # MODULE as seen from where the command runs
    if not by_path:
        _refuse_shadowed(module_text)
    _import_in_child(module_text, by_path)
    module = _import(module_text, by_path)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{text!r}: module {module_text!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type):
        raise ValueError(f"{text!r} is a class ({obj.__name__}); pass an instance (e.g. `loss = {obj.__name__}()` "
                         f"in your module, then {module_text}:loss) or a function")
    if not callable(obj):
        raise ValueError(f"{text!r} is a {type(obj).__name__}, not a callable")
    return obj


def _refuse_shadowed(module_text: str) -> None:
    """A user's module named like one of tripletlab's packages (losses, ablations, reports) is shadowed by ours."""
    top = module_text.split(".")[0]
    if top not in ("losses", "ablations", "reports", "tripletlab"):
        return
    mine = [p for p in (Path.cwd() / f"{top}.py", Path.cwd() / top) if p.exists()]
    ours = Path(importlib.import_module(top).__file__).resolve().parent
    if mine and not any(p.resolve() == ours for p in mine):
        raise ValueError(f"your module {top!r} ({mine[0]}) has the name of tripletlab's own package {top!r} "
                         f"({ours}), which is imported instead; rename yours (e.g. my_{top}) or pass it by "
                         f"path: ./{mine[0].name}:FUNCTION")


def _import(module_text: str, by_path: bool):
    try:
        if by_path:
            path = Path(module_text)
            if not path.is_file():
                raise ValueError(f"no such file: {module_text!r}")
            name = path.stem if path.stem not in sys.modules else f"_tripletlab_check_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            sys.path.insert(0, str(path.resolve().parent))  # its own imports of sibling files
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(module_text)
    except ValueError:
        raise
    except SystemExit as err:
        raise ValueError(f"importing {module_text!r} called sys.exit({err.code!r}): nothing was checked; "
                         f"keep the module's top level free of exits (use if __name__ == '__main__':)") from None
    except Exception as err:  # noqa: BLE001 - any import failure is the user's to see, in one line
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"cannot import {module_text!r}: {type(err).__name__}: {first}") from None


def _import_in_child(module_text: str, by_path: bool) -> None:
    """Import once in a forked child: a module whose import ends the process (os._exit, a signal) is an error."""
    if not hasattr(os, "fork"):
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: import, say so, leave without running any cleanup of the parent's
        os.close(read)
        code = 0
        try:
            quiet = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):  # not the caller's stdout and stderr: a pipe there must not wait on the child
                os.dup2(quiet, fd)
            _import(module_text, by_path)
        except BaseException:  # noqa: BLE001 - the parent imports again and reports the error itself
            code = 1
        os.write(write, b"imported")
        os._exit(code)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            said = pipe.read()
    except BaseException:  # --timeout or Ctrl-C while the child imports: the child ends with the command
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    _, status = os.waitpid(pid, 0)
    if said != b"imported":
        how = (f"with status {os.waitstatus_to_exitcode(status)}" if os.WIFEXITED(status)
               else f"by signal {os.WTERMSIG(status)}")
        raise ValueError(f"importing {module_text!r} ended the process {how} (os._exit or a signal at import): "
                         f"nothing was checked")


def _pairs(items: list[str], flag: str, *, parse: bool) -> dict:
    """["a=b", ...] -> {"a": b}; --map values: a name or None (empty); --kw values: JSON or a bare word."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} expects NAME=VALUE, got {item!r}")
        if not parse:
            out[name] = value or None
            continue
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError as err:
            if value in ("True", "False", "None"):
                raise ValueError(f"{flag} {item}: VALUE is JSON, write {value.lower() if value != 'None' else 'null'} "
                                 f"(a string {value!r} would be truthy)") from None
            if not value.replace("_", "").replace("-", "").replace(".", "").isalnum():
                raise ValueError(f"{flag} {item}: VALUE is not valid JSON ({err.msg} at character {err.pos}); "
                                 f"quote a string as '\"text\"'") from None
            out[name] = value  # a bare word: a string, e.g. --kw distance=cosine
    return out
