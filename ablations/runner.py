"""`run_grid`: validate a grid file, expand it, skip finished runs, execute, store.

Results are written to the store by this process as they arrive (result.json
last), so Ctrl-C or SIGKILL loses only the runs in flight; running the same
command again runs only the cells that are missing or failed. An interrupt
(KeyboardInterrupt, which `tripletlab run` also raises on SIGTERM) stops the
workers, consolidates the store, says how many runs are stored and re-raises.

The progress bar shows the runs done and, beside it, the runs in flight with
their epoch ("a1b2c3 4/30"): executors forward the `progress` callback of
`ablations.train.run_one` from their workers to this process.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from ablations.baselines import with_baselines
from ablations.batch import check_runnable, claimed_store, execute_runs, make_executor, write_ideal
from ablations.config import RunConfig, config_hash, config_to_dict
from ablations.data import source_of
from ablations.grid import MAX_RUNS, Grid, describe_dropped, dropped_keys, expand, load_grid
from ablations.results import runs_on_data
from ablations.search import run_search
from ablations.store import ResultsStore
from ablations import train  # run_one looked up at call time: tests spy on it

def describe(grid: Grid, configs: list[RunConfig]) -> str:
    """Human summary of a grid: number of runs and the axes."""
    trained = [c for c in configs if not c.baseline]
    lines = [f"{len(trained)} runs ({grid.num_cells} cells before merging equivalent ones; "
             f"each class fold is a run) + {len(configs) - len(trained)} baseline runs "
             f"({', '.join(grid.baselines) or 'none: [baselines] include = []'})"]
    for key, values in grid.axes.items():
        lines.append(f"  {key} ({len(values)}): {', '.join(map(str, values))}")
    if grid.base:
        lines.append("  base: " + ", ".join(f"{k}={v}" for k, v in grid.base.items()))
    return "\n".join(lines)


def run_grid(grid_path: str | Path, out_dir: str | Path, *, workers: int | None = None,
             scheduler: str | None = None, dry_run: bool = False,
             extend: bool = False, max_runs: int = MAX_RUNS) -> ResultsStore | None:
    """Run every cell of `grid_path` not yet done in the store `out_dir`; return the store.

    dry_run: validate as a run does (datasets loaded), print the number of runs and the
    axes, create nothing, return None.
    extend: accept a store created by another grid file (adds this grid's cells);
    the grid file the store was made from may be edited without it.
    max_runs: refuse grids of more cells (product of the axis lengths, counted
    before expansion). The returned store's `written` counts the statuses written
    by this call (`written["failed"]` > 0: some runs failed).
    """
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        raise ValueError(f"max_runs: expected an int >= 1, got {max_runs!r}")
    grid = load_grid(grid_path, max_runs=max_runs)
    if grid.search is not None:  # [search]: trials, then the chosen configurations (ablations/search.py)
        return run_search(grid, grid_path, out_dir, workers=workers, scheduler=scheduler,
                          dry_run=dry_run, extend=extend)
    configs = with_baselines(expand(grid), include=grid.baselines)
    dropped = dropped_keys(grid)
    if dropped:
        warnings.warn(describe_dropped(dropped), UserWarning, stacklevel=2)
    check_runnable(configs)  # a dry run validates what the real run does
    store = claimed_store(out_dir, grid, grid_path, extend=extend, dry_run=dry_run)
    if dry_run:  # the store was checked as the run checks it; nothing written
        print(describe(grid, configs))
        return None
    done = store.done_ids()
    todo = [c for c in configs if config_hash(c) not in done]
    items = [{**config_to_dict(c), "run_id": config_hash(c)} for c in todo]
    executor = make_executor(workers, scheduler)
    execute_runs(store, executor, train.run_one, items, total=len(configs))
    write_ideal(store, configs)
    _say_other_data(store, configs)
    return store


def _say_other_data(store: ResultsStore, configs: list[RunConfig]) -> None:
    """One line on stderr when the store holds runs on other data than `configs` read (an
    earlier version of a data file, another dataset): they stay, the report leaves them out."""
    current = {source_of(config_to_dict(c)) for c in configs}
    _, other = runs_on_data(store.runs(), current)
    if other:
        print(f"the store also holds {sum(other.values())} runs on other data than this grid "
              f"reads now ({'; '.join(f'{n} on {s}' for s, n in sorted(other.items()))}): kept, "
              f"and left out of the report's comparison", file=sys.stderr)
