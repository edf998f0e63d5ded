"""`run_grid`: validate a grid file, expand it, skip finished runs, execute, store.

Results are written to the store by this process as they arrive (result.json
last), so Ctrl-C or SIGKILL loses only the runs in flight; running the same
command again runs only the cells that are missing or failed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ablations.baselines import with_baselines
from ablations.config import BASELINES, RunConfig, config_hash, config_to_dict
from ablations.data import Split
from ablations.grid import Grid, expand, load_grid
from ablations.store import ResultsStore

CONSOLIDATE_EVERY_S = 30.0  # also consolidated once at the end (and on interrupt)


def check_runnable(configs: list[RunConfig]) -> None:
    """Load each distinct dataset once and check that every config can sample from it."""
    from ablations.train import cached_split

    for config in configs:
        if config.loss in BASELINES:  # nothing sampled
            continue
        split: Split = cached_split(config)
        n_classes = len(split.train_classes)
        if config.sampler_p > n_classes:
            raise ValueError(f"sampler_p = {config.sampler_p} but dataset {config.dataset!r} has "
                             f"{n_classes} training classes; use sampler_p <= {n_classes}")


def describe(grid: Grid, configs: list[RunConfig]) -> str:
    """Human summary of a grid: number of runs and the axes."""
    trained = [c for c in configs if c.loss not in BASELINES]
    lines = [f"{len(trained)} runs ({grid.num_cells} cells before merging equivalent ones; "
             f"each class fold is a run) + {len(configs) - len(trained)} baseline runs "
             "(raw, untrained)"]
    for key, values in grid.axes.items():
        lines.append(f"  {key} ({len(values)}): {', '.join(map(str, values))}")
    if grid.base:
        lines.append("  base: " + ", ".join(f"{k}={v}" for k, v in grid.base.items()))
    return "\n".join(lines)


def make_executor(workers: int | None, scheduler: str | None):
    if scheduler is not None:
        from ablations.dask_executor import DaskExecutor

        return DaskExecutor(scheduler)
    from ablations.executors import LocalExecutor

    return LocalExecutor(workers)


def run_grid(grid_path: str | Path, out_dir: str | Path, *, workers: int | None = None,
             scheduler: str | None = None, dry_run: bool = False,
             extend: bool = False) -> ResultsStore | None:
    """Run every cell of `grid_path` not yet done in the store `out_dir`; return the store.

    dry_run: print the number of runs and the axes, create nothing, return None.
    extend: accept a store created by another grid file (adds this grid's cells).
    """
    grid = load_grid(grid_path)
    configs = with_baselines(expand(grid))
    if dry_run:
        print(describe(grid, configs))
        return None
    check_runnable(configs)
    store = ResultsStore(out_dir)
    store.claim(grid.text, grid_name=str(grid_path), extend=extend)
    done = store.done_ids()
    todo = [c for c in configs if config_hash(c) not in done]
    items = [{**config_to_dict(c), "run_id": config_hash(c)} for c in todo]
    executor = make_executor(workers, scheduler)
    from ablations.train import run_one

    _execute(store, executor, run_one, items, total=len(configs))
    return store


def _execute(store: ResultsStore, executor, fn, items: list[dict], *, total: int) -> None:
    from tqdm import tqdm

    stored: set[str] = set()
    counts = {"finished": 0, "diverged": 0, "failed": 0}
    last = time.monotonic()
    bar = tqdm(total=total, initial=total - len(items), unit="run", desc="runs",
               file=sys.stderr, dynamic_ncols=True)
    try:
        results = executor.map_unordered(fn, items) if items else iter(())
        try:
            for result in results:
                if result["run_id"] in stored:  # a retried task: stored once
                    continue
                store.write_run(result)
                stored.add(result["run_id"])
                counts[result["status"]] = counts.get(result["status"], 0) + 1
                bar.set_postfix(counts, refresh=False)
                bar.update(1)
                if time.monotonic() - last > CONSOLIDATE_EVERY_S:
                    store.consolidate()
                    last = time.monotonic()
        finally:
            close = getattr(results, "close", None)
            if close is not None:  # stop the workers / cancel the tasks nobody will store
                close()
    finally:
        bar.close()
        store.consolidate()
    print(f"{len(stored)} runs stored in {store.root} "
          f"({', '.join(f'{v} {k}' for k, v in counts.items())}); "
          f"{total - len(items)} were already done", file=sys.stderr)
