"""`tripletlab check MODULE:FUNCTION --as VARIANT`: the conformance checker (losses.testing) as a command.

Exit codes: 0 the function conforms, 1 it does not, 2 usage error (bad flag, import
string that does not import, setting the checker cannot pass to the function).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_arguments(check: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `check` subcommand's description and arguments to its parser."""
    from losses.testing.targets import VARIANT_NAMES

    check.description = ("Run a battery of batches through MODULE:FUNCTION and compare value and gradient "
                         "with tripletlab's loss in float64; mismatches are named in plain words.")
    check.add_argument("function", help="import string of your loss, e.g. mypkg.losses:batch_all")
    check.add_argument("--as", dest="as_", required=True, choices=VARIANT_NAMES,
                       help="the variant it implements (combined: the combining step, see the README)")
    check.add_argument("--metric", default="euclidean", help="euclidean | squared_euclidean | cosine")
    check.add_argument("--margin", type=float, default=0.2)
    check.add_argument("--reduction", default=None,
                       help="mean | mean_positive | sum (default: the variant's usual one)")
    check.add_argument("--semantics", default=None, help="tf | pml (with --as semi_hard)")
    check.add_argument("--map", action="append", default=[], metavar="SETTING=PARAM",
                       help="pass a setting (margin, metric, reduction, semantics, soft, w_*) under your "
                            "parameter's name; SETTING= (empty) does not pass it. Repeatable")
    check.add_argument("--kw", action="append", default=[], metavar="NAME=VALUE",
                       help="a fixed keyword for your function (VALUE as JSON, else a string). Repeatable")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    return check


def run(args: argparse.Namespace) -> int:
    """Parsed `check` arguments -> exit code (0 conforms, 1 not, 2 usage error)."""
    from ablations.plugins import import_object
    from losses.testing import check_loss

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # MODULE as seen from where the command runs
    try:
        fn = import_object(args.function, key=None)
        report = check_loss(fn, as_=args.as_, metric=args.metric, margin=args.margin, reduction=args.reduction,
                            semantics=args.semantics, keywords=_pairs(args.map, "--map", parse=False),
                            extra=_pairs(args.kw, "--kw", parse=True))
    except ValueError as err:
        print(f"tripletlab check: error: {err}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.summary())
    return 0 if report.conforms else 1


def _pairs(items: list[str], flag: str, *, parse: bool) -> dict:
    """["a=b", ...] -> {"a": b}; --map values: a name or None (empty); --kw values: JSON or the string."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} expects NAME=VALUE, got {item!r}")
        if parse:
            try:
                out[name] = json.loads(value)
            except json.JSONDecodeError:
                out[name] = value
        else:
            out[name] = value or None
    return out
