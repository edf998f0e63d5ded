"""The `tripletlab` command: `run` a grid into a results store, `report` on a store, `check` a loss.

Data flows one way (losses <- ablations <- reports); this module sits on top of
both and imports each lazily, so `tripletlab run` never pays for UMAP or seaborn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tripletlab",
        description="Benchmark and ablation suite for triplet and metric-learning losses.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

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

    report = sub.add_parser("report", help="write the HTML report of a results store")
    report.add_argument("store", type=Path, help="results store directory (from `tripletlab run`)")
    report.add_argument("--out", type=Path, default=None,
                        help="report directory (default: STORE/report)")

    from tripletlab import check

    check.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check":
        from tripletlab import check

        return check.run(args)
    try:
        if args.command == "run":
            from ablations.runner import run_grid

            run_grid(args.grid, args.out, workers=args.workers, scheduler=args.scheduler,
                     dry_run=args.dry_run, extend=args.extend)
        else:
            from reports.build import build_report

            path = build_report(args.store, args.out)
            print(f"report written to {path}")
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        print(f"tripletlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
