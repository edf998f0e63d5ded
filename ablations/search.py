"""The equal-budget search of a grid's `[search]` section (ablations/search_section.py).

For each variant, in grid order, an Optuna study (JournalStorage, file
DIR/search/<slug>.journal inside the results store) runs `trials` trials. A trial is
one configuration: the variant's reference config with the trial's values of the
keys that apply to it; its objective is the mean validation MAP@R (val_map_at_r)
over the grid's class folds 0..K-1 at the first seed of the grid, never test. Its
runs are ordinary runs (resolve_config, the executor's map_unordered with the
progress bar, ResultsStore.write_run), so a stored run is never run again. A trial
with a run that did not finish (failed, diverged) is told FAIL: it uses its share
of the budget and is never chosen.

Determinism: trials are asked in batches of `parallel` (trial numbers
[b * parallel, (b + 1) * parallel)); a batch is asked whole, its runs executed,
then told, before the next batch is asked. Trial n's values are drawn by a fresh
TPESampler seeded from (seed, n) (multivariate, constant_liar off) on an in-memory
copy of the COMPLETE trials numbered below its batch, then written to the journal
as one RUNNING trial (one journal line, params and distributions together). So
the trials depend only on the section and the runs' results, never on the worker
count, the executor, or where a search was killed: on a rerun the RUNNING trials of
the unfinished batch are evaluated with their stored values (their stored runs
reused), the missing ones of the batch are asked, and nothing is asked twice.

After every variant's budget, the chosen configuration of each variant (its COMPLETE
trial with the highest value; ties: the lower trial number) is run over every
(fold, seed) unit of the grid, with the baselines; its seed-0 runs are the trial's
own. DIR/search/trials.parquet (one row per trial, TRIAL_COLUMNS + `param_<key>`)
and DIR/search/plan.json are what reports read (reports/search.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import pandas as pd

from ablations.baselines import with_baselines
from ablations.config import RunConfig, config_hash, config_to_dict, resolve_config
from ablations.grid import Grid
from ablations.batch import check_runnable, claimed_store, execute_runs, make_executor, write_ideal
from ablations.search_section import Range, SearchSection, Variant
from ablations.store import ResultsStore, atomic_write_json, atomic_write_parquet
from ablations import train  # run_one looked up at call time: tests spy on it

SEARCH_DIR = "search"
TRIALS_FILE = "trials.parquet"
PLAN_FILE = "plan.json"
OBJECTIVE = "val_map_at_r"
TRIAL_COLUMNS = ("variant", "loss", "weighting", "id_variant", "trial", "batch", "state", "value",
                 "best_so_far", "budget", "searched", "run_ids", "chosen", "error")


def describe_search(grid: Grid, baselines: int) -> str:
    """What `--dry-run` prints for a search grid: the budget in runs, nothing trained."""
    s = grid.search
    units = s.class_folds * len(s.seeds)
    lines = [f"search: {len(s.variants)} variants x {s.trials} trials x {s.class_folds} folds "
             f"(seed {s.seeds[0]}) = {s.trial_runs} trial runs at most (trials with equal "
             f"values share runs), then the chosen configuration of each variant over its "
             f"{units} (fold, seed) units: {len(s.variants)} x {units} = {len(s.variants) * units} "
             f"runs, {s.reproduction_runs} of them new (seed {s.seeds[0]} is the trial's own); "
             f"+ {baselines} baseline runs ({', '.join(grid.baselines) or 'none'}); at most "
             f"{s.trial_runs + s.reproduction_runs + baselines} runs in all",
             f"  sampler: TPE, seed {s.seed}, {s.startup_trials} random startup trials, "
             f"batches of {s.parallel}"]
    for v in s.variants:
        lines.append(f"  {v.label}: searches {', '.join(v.searched) or 'nothing (lr etc. do not apply)'}"
                     + (f" (not {', '.join(v.skipped)}: it does not apply)" if v.skipped else ""))
    for key, r in s.space.items():
        lines.append(f"  space {key}: {json.dumps(r.as_dict())}")
    return "\n".join(lines)


def run_search(grid: Grid, grid_path, out_dir, *, workers: int | None, scheduler: str | None,
               dry_run: bool, extend: bool) -> ResultsStore | None:
    """Run (or resume) the search of `grid` into the store `out_dir`; return the store."""
    section = grid.search
    bases = with_baselines(list(_unit_configs(section, {v.label: v.reference for v in section.variants})),
                           include=grid.baselines)
    n_baselines = sum(bool(c.baseline) for c in bases)
    check_runnable([v.reference for v in section.variants])  # a dry run validates as a run does
    store = claimed_store(out_dir, grid, grid_path, extend=extend, dry_run=dry_run)
    if dry_run:
        _check_plan(store.root / SEARCH_DIR / PLAN_FILE, section.plan(), write=False)
        print(describe_search(grid, n_baselines))
        return None
    folder = store.root / SEARCH_DIR
    folder.mkdir(exist_ok=True)
    _check_plan(folder / PLAN_FILE, section.plan())
    executor = make_executor(workers, scheduler)
    tables = {}
    chosen: dict[str, RunConfig] = {}
    for index, variant in enumerate(section.variants, start=1):
        study = _open_study(folder, variant)
        def write(rows, label=variant.label):
            tables[label] = rows
            _write_trials(folder, tables)

        tables[variant.label] = _search_variant(store, executor, train.run_one, section, variant,
                                                study, where=f"{index}/{len(section.variants)}",
                                                write=write)
        best = _best(tables[variant.label])
        if best is not None:
            chosen[variant.label] = _trial_config(variant, best["params"], section, fold=0,
                                                  seed=section.seeds[0])
            tables[variant.label] = [{**row, "chosen": row["trial"] == best["trial"]}
                                     for row in tables[variant.label]]
        _write_trials(folder, tables)
    configs = with_baselines(list(_unit_configs(section, chosen)), include=grid.baselines)
    done = store.done_ids()
    items = [{**config_to_dict(c), "run_id": config_hash(c)} for c in configs
             if config_hash(c) not in done]
    print(f"search done: reproducing the chosen configuration of {len(chosen)} variant(s) over "
          f"{section.class_folds * len(section.seeds)} (fold, seed) units, with the baselines",
          file=sys.stderr)
    execute_runs(store, executor, train.run_one, items, total=len(configs), desc="reproduce")
    write_ideal(store, configs)
    return store


def _unit_configs(section: SearchSection, configs: dict[str, RunConfig]):
    """variant -> a config -> the config over every (fold, seed) unit of the grid."""
    for config in configs.values():
        for seed in section.seeds:
            for fold in range(section.class_folds):
                yield resolve_config({**config_to_dict(config), "fold": fold,
                                      "class_folds": section.class_folds, "seed": seed})


def _check_plan(path: Path, plan: dict, *, write: bool = True) -> None:
    """Write plan.json (unless not `write`), or refuse a store whose search was started with
    another section."""
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{str(path)!r} is not readable JSON ({err}); it records the search "
                             f"this store was started with: restore it or use another --out") from err
        changed = sorted(k for k in set(old) | set(plan)
                         if k != "trials" and old.get(k) != plan.get(k))
        if changed:
            raise ValueError(f"the search in {str(path.parent)!r} was started with another "
                             f"[search] section or grid (changed: {', '.join(changed)}); only "
                             f"search.trials may change on a resume: restore the section or use "
                             f"another --out")
    if write:
        atomic_write_json(path, plan)


def _optuna():
    """optuna, imported here only (a grid without [search] never imports it), quiet below WARNING."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _open_study(folder: Path, variant: Variant):
    """The variant's study in folder/<slug>.journal (created, or loaded to resume)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna = _optuna()
    path = folder / f"{variant.slug}.journal"
    _repair_journal(path)
    storage = JournalStorage(JournalFileBackend(str(path)))
    return optuna.create_study(storage=storage, study_name=variant.slug, direction="maximize",
                               load_if_exists=True)


def _repair_journal(path: Path) -> None:
    """Drop a half-written last line (a kill mid-append) and a lock left by a killed process.

    The store has one writer (this process), so a lock file present now is stale.
    """
    Path(f"{path}.lock").unlink(missing_ok=True)
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[:data.rfind(b"\n") + 1])


def trial_seed(seed: int, number: int) -> int:
    """The TPE sampler seed of trial `number`: from (seed, number) only, in [0, 2**32)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "big")


def _distribution(r: Range):
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    if r.choices is not None:
        return CategoricalDistribution(list(r.choices))
    if isinstance(r.low, int):
        return IntDistribution(r.low, r.high, log=r.log, step=r.step or 1)
    return FloatDistribution(r.low, r.high, log=r.log, step=r.step)


def _suggest(section: SearchSection, variant: Variant, number: int, history: list) -> dict:
    """Trial `number`'s values: a TPESampler seeded from (seed, number) over `history`."""
    optuna = _optuna()

    sampler = optuna.samplers.TPESampler(seed=trial_seed(section.seed, number),
                                         n_startup_trials=section.startup_trials,
                                         multivariate=True, constant_liar=False)
    scratch = optuna.create_study(direction="maximize", sampler=sampler)
    scratch.add_trials(history)
    trial = scratch.ask({key: _distribution(section.space[key]) for key in variant.searched})
    return {key: trial.params[key] for key in variant.searched}


def _ask(study, section: SearchSection, variant: Variant, number: int, start: int) -> None:
    """Add trial `number` (RUNNING, its values drawn from the COMPLETE trials below `start`)."""
    import optuna
    from optuna.trial import TrialState

    history = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if t.number < start]
    params = _suggest(section, variant, number, history)
    dists = {key: _distribution(section.space[key]) for key in variant.searched}
    study.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING, params=params,
                                              distributions=dists))
    added = study.get_trials(deepcopy=False)[-1].number
    if added != number:
        raise RuntimeError(f"search of {variant.label}: asked trial {number}, the journal "
                           f"numbered it {added}")


def _trial_config(variant: Variant, params: dict, section: SearchSection, *, fold: int,
                  seed: int) -> RunConfig:
    return resolve_config({**config_to_dict(variant.reference), **params, "fold": fold,
                           "class_folds": section.class_folds, "seed": seed})


def _search_variant(store: ResultsStore, executor, fn, section: SearchSection, variant: Variant,
                    study, *, where: str, write) -> list[dict]:
    """Run the variant's trials not yet told, batch by batch; return its trial rows."""
    from optuna.trial import TrialState

    while True:
        trials = study.get_trials(deepcopy=False)
        open_ = [t.number for t in trials if not t.state.is_finished()]
        if len(trials) >= section.trials and not open_:
            break
        # the batch of the first trial not told (or of the next trial to ask)
        start = (open_[0] if open_ else len(trials)) // section.parallel * section.parallel
        end = min(start + section.parallel, max(section.trials, len(trials)))
        for number in range(len(trials), end):
            _ask(study, section, variant, number, start)
        batch = [t for t in study.get_trials(deepcopy=False)
                 if start <= t.number < end and t.state == TrialState.RUNNING]
        if not batch:  # only trials this search did not create (e.g. WAITING) are open
            raise ValueError(f"the journal of {variant.label} holds trials this search cannot "
                             f"run ({[t.number for t in trials if not t.state.is_finished()]}); "
                             f"use another --out")
        planned = {t.number: _trial_runs(variant, t.params, section) for t in batch}
        done = store.done_ids()
        runs = {config_hash(c): c for configs in planned.values() if isinstance(configs, list)
                for c in configs}  # trials with equal values share their runs
        items = [{**config_to_dict(c), "run_id": rid} for rid, c in runs.items() if rid not in done]
        first, last = batch[0].number + 1, batch[-1].number + 1
        trials_text = f"trial {first}" if first == last else f"trials {first}-{last}"
        execute_runs(store, executor, fn, items, total=len(runs),
                 desc=f"search {where} {variant.label}: {trials_text}/{section.trials}")
        for number, configs in sorted(planned.items()):
            value = _objective(store, configs) if isinstance(configs, list) else None
            if value is None:
                study.tell(number, state=TrialState.FAIL)
            else:
                study.tell(number, value)
        write(_rows(study, section, variant))
    return _rows(study, section, variant)


def _trial_runs(variant: Variant, params: dict, section: SearchSection) -> list[RunConfig] | str:
    """A trial's runs (one per fold at the first seed), or the error when its values are invalid."""
    try:
        return [_trial_config(variant, params, section, fold=f, seed=section.seeds[0])
                for f in range(section.class_folds)]
    except ValueError as err:
        return str(err)


def _objective(store: ResultsStore, configs: list[RunConfig]) -> float | None:
    """Mean validation MAP@R over the folds, or None when a fold's run did not finish."""
    values = []
    for c in configs:
        result = store.result(config_hash(c))
        value = (result or {}).get("metrics", {}).get(OBJECTIVE)
        if result is None or result["status"] != "finished" or value is None or math.isnan(value):
            return None
        values.append(float(value))
    return sum(values) / len(values)


def _rows(study, section: SearchSection, variant: Variant) -> list[dict]:
    """The variant's trials -> rows of trials.parquet (trial order, best value so far)."""
    rows, best = [], -math.inf
    for t in study.get_trials(deepcopy=False):
        runs = _trial_runs(variant, t.params, section)
        complete = t.state.name == "COMPLETE"
        if complete:
            best = max(best, t.value)
        rows.append({"variant": variant.label, **{k: getattr(variant.reference, k)
                                                  for k in ("loss", "weighting", "id_variant")},
                     "trial": t.number, "batch": t.number // section.parallel,
                     "state": t.state.name.lower(), "value": t.value if complete else math.nan,
                     "best_so_far": best if best > -math.inf else math.nan,
                     "budget": section.trials, "searched": ",".join(variant.searched),
                     "run_ids": ",".join(config_hash(c) for c in runs) if isinstance(runs, list) else "",
                     "chosen": False, "error": runs if isinstance(runs, str) else "",
                     "params": dict(t.params)})
    return rows


def _best(rows: list[dict]) -> dict | None:
    """The COMPLETE trial with the highest value (ties: the lower trial number), or None."""
    complete = [r for r in rows if r["state"] == "complete"]
    return max(complete, key=lambda r: (r["value"], -r["trial"])) if complete else None


def _write_trials(folder: Path, tables: dict[str, list[dict]]) -> None:
    """search/trials.parquet: every trial of every variant so far (atomic)."""
    rows = [row for rows in tables.values() for row in rows]
    keys = sorted({k for row in rows for k in row["params"]})
    frame = pd.DataFrame([{**{c: row[c] for c in TRIAL_COLUMNS},
                           **{f"param_{k}": row["params"].get(k) for k in keys}} for row in rows],
                         columns=[*TRIAL_COLUMNS, *(f"param_{k}" for k in keys)])
    atomic_write_parquet(folder / TRIALS_FILE, frame)
