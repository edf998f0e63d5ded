"""The `[search]` section of a grid file: an equal tuning budget per variant (parsing only).

    [search]
    trials = 20          # the budget: trials per variant, the same for every variant
    seed = 0             # seed of the TPE sampler
    parallel = 2         # trials asked per batch (fixed here, so any worker count gives the same trials)
    startup_trials = 10  # optional (Optuna's default): random trials before TPE models the history

    [search.space]
    lr = {low = 1e-4, high = 1e-2, log = true}
    margin = {low = 0.05, high = 0.5}
    epochs = {low = 10, high = 40, step = 10}
    lr_schedule = ["constant", "warmup_cosine"]   # a list: choices

With `[search]`, the `[grid]` axes may only be the variant keys (loss, weighting,
id_variant) and seed; each variant (the loss, plus the weighting and id_variant of a
combined objective, as reports/variants.py names them) gets its own study of `trials`
trials. A space key is searched for a variant only when it applies to it: a key that
`ablations.config.resolve_config` resets for that variant (margin for batch_hard_soft,
temperature for every loss but ntxent) does not. The search loop is ablations/search.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ablations.config import (DATA_KEYS, DEFAULTS, FIELDS, RunConfig, check_value,
                              config_to_dict, resolve_config)

SEARCH_KEYS = ("trials", "seed", "parallel", "startup_trials", "space")
REQUIRED = ("trials", "seed", "parallel", "space")
STARTUP_TRIALS = 10  # optuna.samplers.TPESampler's n_startup_trials default
RANGE_KEYS = ("low", "high", "log", "step")
VARIANT_KEYS = ("loss", "weighting", "id_variant")
SEARCH_AXES = (*VARIANT_KEYS, "seed")  # the [grid] axes a search grid may have
UNIT_KEYS = ("seed", "fold", "class_folds")
COMBINED_LOSSES = ("combined", "triplet_ce")


@dataclass(frozen=True)
class Range:
    """One searched key: a numeric range (low, high, log, step) or a tuple of choices."""

    key: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple | None = None

    def probe(self) -> Any:
        """A value of the range that is not the key's default (to see whether the key applies)."""
        if self.choices is not None:
            return next(c for c in self.choices if c != DEFAULTS[self.key])
        return self.high if self.high != DEFAULTS[self.key] else self.low

    def as_dict(self) -> dict:
        return ({"choices": list(self.choices)} if self.choices is not None else
                {"low": self.low, "high": self.high, "log": self.log, "step": self.step})


@dataclass(frozen=True)
class Variant:
    """One study: the variant's name, its reference config (fold 0, first seed), the keys it searches."""

    label: str
    slug: str                      # file name of its journal (search/<slug>.journal)
    reference: RunConfig           # [base] + the variant's axis values, fold 0, first seed
    searched: tuple[str, ...]      # space keys that apply to this variant, in the space's order
    skipped: tuple[str, ...]       # space keys resolve_config resets for it


@dataclass(frozen=True)
class SearchSection:
    trials: int
    seed: int
    parallel: int
    startup_trials: int
    space: dict[str, Range]
    variants: tuple[Variant, ...]
    class_folds: int
    seeds: tuple[int, ...]         # the grid's seeds; trials use seeds[0]

    def plan(self) -> dict:
        """What fixes the trials (plan.json); everything but `trials` must match on resume."""
        return {"trials": self.trials, "seed": self.seed, "parallel": self.parallel, "startup_trials": self.startup_trials,
                "space": {k: r.as_dict() for k, r in self.space.items()},
                "class_folds": self.class_folds, "trial_seed": self.seeds[0],
                "variants": [{"label": v.label, "slug": v.slug, "searched": list(v.searched),
                              **{k: getattr(v.reference, k) for k in VARIANT_KEYS}}
                             for v in self.variants]}

    @property
    def trial_runs(self) -> int:
        """Runs of the trials at most: variants x trials x folds (fewer when trials coincide)."""
        return len(self.variants) * self.trials * self.class_folds

    @property
    def reproduction_runs(self) -> int:
        """New runs to reproduce each chosen configuration over every (fold, seed) unit."""
        return len(self.variants) * self.class_folds * (len(self.seeds) - 1)


def variant_label(config: RunConfig) -> str:
    """A resolved config -> its variant name, as reports/variants.py writes it."""
    if config.loss not in COMBINED_LOSSES:
        return config.loss
    base = f"triplet_ce({config.id_variant})" if config.loss == "triplet_ce" else config.loss
    return f"{base} [{config.weighting}]"


def parse_search(table: Any, *, base: dict, axes: dict, configs: tuple[RunConfig, ...],
                 source: str, max_runs: int) -> SearchSection:
    """The [search] table of a grid file -> SearchSection; ValueError naming the key."""
    if not isinstance(table, dict):
        raise ValueError(f"{source}: [search] must be a table, got {type(table).__name__}")
    for key in table:
        if key not in SEARCH_KEYS:
            raise ValueError(f"{source}: unknown key search.{key}; valid keys: "
                             f"{', '.join(SEARCH_KEYS)}")
    for key in REQUIRED:
        if key not in table:
            raise ValueError(f"{source}: search.{key} is missing (required: {', '.join(REQUIRED)})")
    ints = {}
    for key, low in (("trials", 1), ("seed", 0), ("parallel", 1), ("startup_trials", 0)):
        value = table.get(key, STARTUP_TRIALS)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{source}: search.{key} must be an int >= {low}, got {value!r}")
        ints[key] = value
    if ints["seed"] > 2**32 - 1:
        raise ValueError(f"{source}: search.seed must be < 2**32, got {ints['seed']!r}")
    for key in axes:
        if key not in SEARCH_AXES:
            raise ValueError(f"{source}: axis grid.{key} cannot be used with [search]: its axes "
                             f"may only be {', '.join(SEARCH_AXES)}; put {key} in [base] (one "
                             f"value) or in [search.space] (searched)")
    space = _parse_space(table["space"], base=base, axes=axes, source=source)
    seeds = tuple(axes.get("seed", [base.get("seed", DEFAULTS["seed"])]))
    class_folds = base.get("class_folds", DEFAULTS["class_folds"])
    variants = _variants(configs, space, source=source, seed=seeds[0])
    for key in space:
        if not any(key in v.searched for v in variants):
            raise ValueError(f"{source}: search.space.{key} applies to none of the grid's "
                             f"variants ({', '.join(v.label for v in variants)}): resolve_config "
                             f"resets it for each of them; remove it")
    section = SearchSection(trials=ints["trials"], seed=ints["seed"], parallel=ints["parallel"],
                            startup_trials=ints["startup_trials"], space=space,
                            variants=variants, class_folds=class_folds, seeds=seeds)
    if section.trial_runs > max_runs:
        raise ValueError(f"{source}: the search has up to {section.trial_runs} trial runs "
                         f"({len(variants)} variants x {section.trials} trials x {class_folds} "
                         f"folds), more than the limit of {max_runs} runs; lower search.trials, "
                         f"or raise the limit with --max-runs {section.trial_runs}")
    return section


def _parse_space(space: Any, *, base: dict, axes: dict, source: str) -> dict[str, Range]:
    if not isinstance(space, dict) or not space:
        raise ValueError(f"{source}: search.space must be a non-empty table of key = range "
                         f"(e.g. lr = {{low = 1e-4, high = 1e-2, log = true}}), got {space!r}")
    out = {}
    for key, spec in space.items():
        where = f"{source}: search.space.{key}"
        if key not in FIELDS:
            raise ValueError(f"{where}: unknown key {key!r}; valid keys: {', '.join(FIELDS)}")
        if key in VARIANT_KEYS or key in UNIT_KEYS or key in DATA_KEYS:
            raise ValueError(f"{where}: {key!r} cannot be searched (variant keys, seed, folds "
                             f"and data keys are fixed by the grid)")
        if key in base or key in axes:
            raise ValueError(f"{where}: {key!r} is also set in [{'base' if key in base else 'grid'}]"
                             f"; a searched key is set by the search only: remove it there")
        out[key] = _parse_range(key, spec, where)
    return out


def _checked(key: str, value: Any, where: str) -> Any:
    try:
        return check_value(key, value)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def _parse_range(key: str, spec: Any, where: str) -> Range:
    kind = FIELDS[key].type.__name__
    if isinstance(spec, list):
        if len(spec) < 2:
            raise ValueError(f"{where}: a list of choices needs at least 2 values, got {spec!r} "
                             f"(one value: set it in [base])")
        choices = tuple(_checked(key, v, where) for v in spec)
        if len(set(map(repr, choices))) != len(choices):
            raise ValueError(f"{where}: the choices repeat a value: {spec!r}")
        return Range(key, choices=choices)
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a range {{low = .., high = ..}} or a list of "
                         f"choices, got {type(spec).__name__} {spec!r}")
    for name in spec:
        if name not in RANGE_KEYS:
            raise ValueError(f"{where}: unknown key {name!r} of a range; valid keys: "
                             f"{', '.join(RANGE_KEYS)} (or give a list of choices)")
    if kind not in ("int", "float"):
        raise ValueError(f"{where}: {key!r} is a {kind} key: give a list of choices, not a range")
    for name in ("low", "high"):
        if name not in spec:
            raise ValueError(f"{where}: the range needs {name!r} (got {spec!r})")
    low, high = (_checked(key, spec[n], f"{where}.{n}") for n in ("low", "high"))
    if not low < high:
        raise ValueError(f"{where}: expected low < high, got low = {low!r}, high = {high!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ValueError(f"{where}: log = true needs low > 0, got {low!r}")
    step = spec.get("step")
    if step is not None:
        if log:
            raise ValueError(f"{where}: give step or log = true, not both")
        step_ok = isinstance(step, int) if kind == "int" else isinstance(step, (int, float))
        if isinstance(step, bool) or not step_ok or step <= 0:
            raise ValueError(f"{where}.step must be a positive {kind}, got {step!r}")
        step = float(step) if kind == "float" else step
    return Range(key, low=low, high=high, log=log, step=step)


def _variants(configs: tuple[RunConfig, ...], space: dict[str, Range], *, source: str,
              seed: int) -> tuple[Variant, ...]:
    """The grid's distinct variants (grid order), each with the space keys that apply to it."""
    seen: dict[str, Variant] = {}
    slugs: set[str] = set()
    for config in configs:
        label = variant_label(config)
        if label in seen or config.fold != 0 or config.seed != seed:
            continue
        searched, skipped = _applying(config, space, source=source, label=label)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")
        while slug in slugs:
            slug += "_"
        slugs.add(slug)
        seen[label] = Variant(label=label, slug=slug, reference=config, searched=searched,
                              skipped=skipped)
    return tuple(seen.values())


def _applying(config: RunConfig, space: dict[str, Range], *, source: str,
              label: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(keys that apply, keys resolve_config resets) for one variant's reference config.

    Every key is set to a value of its range other than its default, all at once (so
    a key that applies only under another searched key, e.g. warmup_epochs under a
    searched lr_schedule, is found); a key applies when the resolved config keeps it.
    """
    probes = {key: r.probe() for key, r in space.items()}
    values = config_to_dict(config)
    try:
        resolved = config_to_dict(resolve_config({**values, **probes}))
        kept = {key for key, v in probes.items() if resolved[key] == v}
    except ValueError:  # the probes together break a cross-key rule: one key at a time
        kept = set()
        for key, v in probes.items():
            try:
                if config_to_dict(resolve_config({**values, key: v}))[key] == v:
                    kept.add(key)
            except ValueError as err:
                raise ValueError(f"{source}: search.space.{key} = {v!r} is invalid for "
                                 f"{label}: {err}") from err
    return (tuple(k for k in space if k in kept), tuple(k for k in space if k not in kept))
