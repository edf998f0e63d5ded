"""Running a batch of configurations into a store (for `run_grid` and the search): the checks
that every config can sample and be evaluated, the executor, the progress bar with the runs in
flight, each result stored as it lands, and DIR/ideal.json.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ablations.ceiling import ideal_summary
from ablations.baseline_specs import BASELINE_SPECS
from ablations.config import DATA_KEYS, RunConfig, check_input_layer
from ablations.data import Split, cached_split
from ablations.executors import LocalExecutor
from ablations.migrate import open_store
from ablations.store import ResultsStore, atomic_write_json

CONSOLIDATE_EVERY_S = 30.0  # also consolidated once at the end (and on interrupt)
REFRESH_S = 0.5  # the progress bar is redrawn at most this often on epoch news
SHOWN_IN_FLIGHT = 4  # runs in flight named in the progress bar (the rest are counted)


def check_runnable(configs: list[RunConfig]) -> None:
    """Load each distinct dataset once and check that every config can sample from it."""
    check_distinct_folds(configs)
    for config in configs:
        if config.baseline and not BASELINE_SPECS[config.baseline].reads_encoder:  # no encoder
            continue
        split: Split = cached_split(config)
        dataset = {"npz": config.npz_path}.get(config.dataset, config.dataset)
        check_input_layer(config, split.num_features, dataset=dataset)
        if config.baseline:  # nothing sampled
            continue
        n_classes = len(split.train_classes)
        if config.sampler_p > n_classes:
            raise ValueError(f"sampler_p = {config.sampler_p} but dataset {config.dataset!r} has "
                             f"{n_classes} training classes; use sampler_p <= {n_classes}")
        for name, labels in (("validation", split.y_val), ("test", split.y_test)):
            check_evaluable(labels, split=name, dataset=dataset)


def check_distinct_folds(configs: list[RunConfig]) -> None:
    """ValueError when two folds of one class_folds = K split the classes identically.

    Identical folds would be counted as independent units by the statistics (a
    K larger than the classes allow, e.g. class_folds = 100 on 10 classes).
    """
    seen: dict[tuple, dict[tuple, int]] = {}  # data keys but the fold -> validation classes -> fold
    for config in configs:
        if config.split_protocol != "rotated":  # fixed_test folds are disjoint validation
            continue                             # blocks (ablations/data.py): always distinct
        if config.fold == 0:  # fold 0 is every K's first fold: added with K's other folds
            continue
        key = tuple(getattr(config, k) for k in DATA_KEYS if k != "fold")
        if key not in seen:
            first = cached_split(config.replace(fold=0, class_folds=1))
            seen[key] = {tuple(np.unique(first.y_val)): 0}
        split = cached_split(config)
        other = seen[key].setdefault(tuple(np.unique(split.y_val)), config.fold)
        if other != config.fold:
            n = len(np.unique(np.concatenate([split.y_train, split.y_val, split.y_test])))
            raise ValueError(
                f"class_folds = {config.class_folds}: folds {other} and {config.fold} of dataset "
                f"{config.dataset!r} split its {n} classes identically, so they are not "
                f"independent runs; use fewer folds")


MAX_EVAL_CLASSES = 2000  # classes of a validation or test split: NMI's KMeans has one cluster each
MAX_EVAL_POINTS = 65_536  # points of a split: its N x N float32 distance matrix is <= 16 GiB


def check_evaluable(labels, *, split: str, dataset: str) -> None:
    """ValueError with a cost estimate when a split has more classes than MAX_EVAL_CLASSES,
    or more points than MAX_EVAL_POINTS.

    Evaluation (ablations/evaluate.py) ranks all N points of the split against each
    other (an N x N distance matrix) and runs KMeans with one cluster per class: its
    k-means++ start alone costs about N x C^2 distances, so 100 000 classes of 2 points
    would run for hours with no sign of progress.
    """
    n, c = len(labels), len(np.unique(labels))
    if c > MAX_EVAL_CLASSES:
        raise ValueError(
            f"dataset {dataset!r}: its {split} split has {c} classes ({n} points), more than "
            f"the {MAX_EVAL_CLASSES} an evaluation handles: each evaluation builds a {n} x {n} "
            f"distance matrix ({n * n * 4 / 2**30:.3g} GiB) and a KMeans of {c} clusters "
            f"(~{3 * n * c * c:.2g} distance computations for its 3 k-means++ starts); use "
            f"fewer classes (at most {MAX_EVAL_CLASSES / 0.3:.0f} in all)")
    if n > MAX_EVAL_POINTS:
        raise ValueError(
            f"dataset {dataset!r}: its {split} split has {n} points, more than the "
            f"{MAX_EVAL_POINTS} an evaluation handles: each evaluation builds a {n} x {n} "
            f"distance matrix ({n * n * 4 / 2**30:.3g} GiB) and ranks each point's "
            f"{int(np.unique(labels, return_counts=True)[1].max())} nearest neighbours (its "
            f"largest class); use fewer points per class")


def make_executor(workers: int | None, scheduler: str | None):
    """A DaskExecutor on `scheduler`, else a LocalExecutor of `workers` processes."""
    if scheduler is not None:
        from ablations.dask_executor import DaskExecutor  # lazily: imports dask, only for --scheduler

        return DaskExecutor(scheduler)
    return LocalExecutor(workers)


def write_ideal(store: ResultsStore, configs: list[RunConfig]) -> None:
    """DIR/ideal.json: the ceiling of the grid's dataset (ablations/ceiling.py), where it has one;
    the report shows it beside the leaderboard."""
    ideal = ideal_summary([c for c in configs if not c.baseline])
    if ideal is not None:
        atomic_write_json(store.root / "ideal.json", ideal)


class _Progress:
    """The tqdm bar: runs done, statuses, and the runs in flight with their epoch."""

    def __init__(self, total: int, initial: int, desc: str = "runs"):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="run", desc=desc,
                        file=sys.stderr, dynamic_ncols=True)
        self.counts = {"finished": 0, "diverged": 0, "failed": 0}
        self.in_flight: dict[str, tuple[int, int]] = {}
        self.finished: set[str] = set()
        self.shown_at = 0.0

    def epoch(self, run_id: str, epoch: int, epochs: int) -> None:
        """Callback of run_one (forwarded by the executor): run_id is at epoch / epochs."""
        if run_id in self.finished:  # a late message (e.g. from a retried task)
            return
        self.in_flight[run_id] = (epoch, epochs)
        self._show()

    def done(self, run_id: str, status: str) -> None:
        self.finished.add(run_id)
        self.in_flight.pop(run_id, None)
        self.counts[status] = self.counts.get(status, 0) + 1
        self.bar.update(1)
        self._show()

    def _show(self) -> None:
        text = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        if self.in_flight:
            shown = [f"{rid[:6]} {e}/{n}" for rid, (e, n) in
                     list(self.in_flight.items())[:SHOWN_IN_FLIGHT]]
            more = len(self.in_flight) - len(shown)
            text += " | running: " + ", ".join(shown) + (f" +{more} more" if more > 0 else "")
        self.bar.set_postfix_str(text, refresh=False)
        if time.monotonic() - self.shown_at >= REFRESH_S:  # epochs can be many a second
            self.bar.refresh()
            self.shown_at = time.monotonic()

    def close(self) -> None:
        self.bar.close()


def execute_runs(store: ResultsStore, executor, fn, items: list[dict], *, total: int,
             desc: str = "runs") -> None:
    """Run `items` (of `total` runs, the rest already done) and store each result as it lands.

    desc: the progress bar's label (the search names its variant and trials there).
    """
    stored: set[str] = set()
    last = time.monotonic()
    bar = _Progress(total, total - len(items), desc)
    interrupted = False
    try:
        kwargs = {"progress": bar.epoch}
        results = executor.map_unordered(fn, items, **kwargs) if items else iter(())
        try:
            for result in results:
                if result["run_id"] in stored:  # a retried task: stored once
                    continue
                store.write_run(result)
                stored.add(result["run_id"])
                bar.done(result["run_id"], result["status"])
                if time.monotonic() - last > CONSOLIDATE_EVERY_S:
                    store.consolidate()
                    last = time.monotonic()
        finally:
            close = getattr(results, "close", None)
            if close is not None:  # stop the workers / cancel the tasks nobody will store
                close()
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        bar.close()
        store.consolidate()
        counts = bar.counts
        done_before = total - len(items)
        if interrupted:
            print(f"interrupted: {len(store.stored_ids())} runs are stored in {store.root} "
                  f"({len(stored)} from this session, {done_before} done before); the "
                  f"{len(items) - len(stored)} runs in flight or not started are not. Run the "
                  f"same command again to resume: stored runs are kept, the rest run",
                  file=sys.stderr)
        else:
            print(f"{len(stored)} runs stored in {store.root} "
                  f"({', '.join(f'{v} {k}' for k, v in counts.items())}); "
                  f"{done_before} were already done", file=sys.stderr)


def claimed_store(out_dir, grid, grid_path, *, extend: bool, dry_run: bool) -> ResultsStore:
    """The store `out_dir` for `grid`: refused first, reading only, where `claim` would refuse it
    (a file as --out, a store of another grid); a dry run gets it as it is, a run gets it
    migrated to the current store format (`open_store`) and claimed."""
    names = dict(grid_name=str(grid_path), extend=extend, grid_path=grid_path)
    store = ResultsStore(out_dir)
    store.check_claim(grid.text, **names)
    if dry_run:
        return store
    store = open_store(out_dir)
    store.claim(grid.text, **names)
    return store
