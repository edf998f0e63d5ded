"""One run's configuration: the flat, frozen `RunConfig`, its validation and its hash.

Every key is declared once, with its default, meaning and checks (`ablations.keys.Key`):
the keys every run shares below (SHARED_DECLARED), the others beside the component that
reads them (a dataset's in ablations/data.py, an encoder's in ablations/model.py, a loss's
in ablations/loss_specs.py, a baseline's in ablations/baseline_specs.py, a weighting
method's on its class in losses/weighting); `schema()` assembles them. A grid file sets
some keys in `[base]` and varies some in `[grid]`; `resolve_config` validates a dict of
keys, fills in the defaults and *canonicalises keys that cannot affect the run* (e.g. the
weighting of a single-component loss, mining parameters when mining is "none") back to
their defaults, so two cells that train the same thing get the same `run_id` and run once.
The keys kept are those the chosen components read (`keys_read` below, from the
components' declarations: a baseline run, `baseline` != "", reads only its data keys and
the metric, plus what its BaselineSpec adds: the encoder's keys and the seed for
"untrained"); and the losses defined on cosine similarity (multi_similarity, circle,
ntxent) get metric = "cosine", which evaluation then uses too.

`config_hash` is the run's id: the first 12 hex digits of the sha256 of the
canonical JSON (sorted keys, no whitespace) of the keys the resolved configuration's
components read (`stored_config`, also what the store keeps as the run's config.json)
plus `store_format` (STORE_FORMAT). Every key a run reads enters, whatever its value: a
changed default changes the id of the runs that read the key (an old run is never taken
for a new one); a key no run of a store reads (a component registered later, with keys of
its own) changes none of its ids; a new key that existing runs read, or a new meaning of a
value, is a new store format, to which existing stores are migrated once
(ablations/migrate.py).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from ablations.baseline_specs import BASELINE_SPECS
from ablations.data import (DATASET_SPECS, PLUGIN_DATASET_KEYS, SPLIT_KEYS, data_file_keys, data_fingerprint_of,
                            split_keys)
from ablations.keys import NON_NEGATIVE, POSITIVE, SEED_RANGE, Key, above, at_least, merge, names
from ablations.loss_specs import LOSS_SPECS, MARGIN_KEYS, WEIGHT_KEYS, LossSpec
from ablations.mining import MINING_KEYS
from ablations.model import ENCODER_KEYS, ENCODER_SPECS
from ablations.plugin_import import is_import_string
from ablations.plugins import check_plugin, loss_plugin
from losses.distances import METRICS as LOSSES_METRICS
from losses.validation import did_you_mean
from losses.weighting import WEIGHTINGS as LOSSES_WEIGHTINGS

# The names come from the registries of the components: datasets (ablations.data.DATASET_SPECS),
# losses (ablations.loss_specs.LOSS_SPECS), encoders (ablations.model.ENCODER_SPECS).
DATASETS = DATASET_SPECS.keys()  # a live view: a dataset registered later is valid too
LOSSES = tuple(LOSS_SPECS)
# Batch variants that `triplet_ce` can put beside its class cross-entropy.
BATCH_VARIANTS = tuple(name for name, spec in LOSS_SPECS.items() if spec.batch_variant)
# Losses trained on explicit (anchor, positive, negative) triplets drawn offline
# (randomly, or by offline hard mining): the only ones `mining` applies to.
EXPLICIT_TRIPLET_LOSSES = tuple(name for name, spec in LOSS_SPECS.items() if spec.explicit_triplets)
RIVALS = tuple(name for name, spec in LOSS_SPECS.items() if spec.rival)
# Reference points evaluated for every grid (ablations/baseline_specs.py), never trained and
# never selected as a variant: runs with `baseline` = one of these names (a trained run has
# baseline = ""). Live views of the registry, as DATASETS.
BASELINES = BASELINE_SPECS.keys()
# Defined on cosine similarity: their runs train and evaluate with metric = "cosine".
COSINE_ONLY = tuple(name for name, spec in LOSS_SPECS.items() if spec.cosine_only)
# One source of truth: the names the losses package defines.
METRICS = LOSSES_METRICS
WEIGHTINGS = LOSSES_WEIGHTINGS.keys()  # a live view of losses.weighting's registry
LR_SCHEDULES = ("constant", "warmup_cosine")
ENCODERS = ENCODER_SPECS.keys()  # a live view, as DATASETS
# Every run stored before `split_protocol` existed used "rotated" folds (a stored config
# without the key: ablations/migrate.py fills it in).
LEGACY_SPLIT_PROTOCOL = "rotated"
# The version of the store layout and of the run ids (written to DIR/store.json). Adding a
# key to the schema, or changing what a value means, changes run ids: bump it and add the step
# that rewrites older stores to ablations/migrate.py.
STORE_FORMAT = 3

_BATCH_OF_TWO = POSITIVE + (at_least(2, "a batch needs positives and negatives"),)
# The keys every run shares (besides the ones each component declares beside its code).
SHARED_DECLARED = (
    Key("dataset", "digits", "digits | blobs | npz | nuisance | idx | pose (ablations/data.py)",
        choices=lambda: tuple(DATASET_SPECS), plugin=True),
    Key("loss", "batch_hard", "the trained loss (ablations/loss_specs.py)", choices=lambda: tuple(LOSS_SPECS),
        plugin=True),
    Key("baseline", "", 'a baseline evaluated instead of training (ablations/baseline_specs.py); "" = a '
        'trained run', choices=lambda: ("", *BASELINE_SPECS)),
    Key("metric", "euclidean", "distance used by the loss AND by evaluation", choices=METRICS),
    Key("weighting", "fixed", "losses of several components: a losses.weighting method",
        choices=lambda: tuple(LOSSES_WEIGHTINGS)),
    Key("lr", 1e-3, "Adam learning rate (peak under warmup_cosine)", (above(0),)),
    Key("lr_schedule", "constant", "constant | warmup_cosine", choices=LR_SCHEDULES),
    Key("warmup_epochs", 2, "warmup_cosine: linear warmup length", NON_NEGATIVE),
    Key("epochs", 30, "training epochs", POSITIVE),
    Key("seed", 0, "model init, sampling, mining", (SEED_RANGE,)),
    Key("sampler_p", 5, "classes per batch", _BATCH_OF_TWO),
    Key("sampler_k", 16, "samples per class in a batch (batch = P * K)", _BATCH_OF_TWO),
    Key("eval_every", 10, "validation every N epochs, and always after the last", POSITIVE),
    Key("encoder", "mlp", "mlp | conv (ablations/model.py)", choices=lambda: tuple(ENCODER_SPECS), plugin=True),
    Key("memory_size", 0, "cross-batch memory (XBM) entries; 0 = off (losses/memory.py)", NON_NEGATIVE),
    Key("memory_weight", 1.0, "memory: w in loss(batch, batch) + w * loss(batch, memory)", NON_NEGATIVE),
    Key("memory_start_epoch", 0, "memory: first epoch that enqueues and adds the memory term", NON_NEGATIVE),
)


def _method_check(cls, keyword: str):
    """A weighting method's parameter -> a check that builds the method with it (its own
    checks are the key's)."""
    def check(value: Any) -> str:
        try:
            cls(components=("a", "b"), **{keyword: value})
        except (TypeError, ValueError) as error:
            return f"is not a valid {keyword} of {cls.__name__}: {str(error).rpartition(', got ')[0] or error}"
        return ""
    return check


def weighting_keys() -> tuple[Key, ...]:
    """The keys of the weighting methods' parameters, from the methods' classes
    (`config_keys`: config key -> keyword; the keyword's default is the key's)."""
    out = []
    for method, cls in LOSSES_WEIGHTINGS.items():
        params = inspect.signature(cls.__init__).parameters
        out += [Key(key, params[keyword].default, f"weighting = {method}: its {keyword} "
                    f"(losses.weighting.{cls.__name__})", (_method_check(cls, keyword),))
                for key, keyword in cls.config_keys.items()]
    return tuple(out)


# The order the keys were introduced in: the column order of the results tables of every store
# written so far (and of the configurations their reports describe). Keys declared later follow
# in the order of their declarations. Not a declaration: the components declare the keys.
# Append only (ablations/migrate.py reads format 2's keys off it).
INTRODUCED = (
    "dataset", "blobs_classes", "blobs_dim", "blobs_points_per_class", "blobs_spread", "blobs_label_noise",
    "data_seed", "npz_path", "loss", "metric", "margin", "margin_schedule", "margin_start",
    "margin_ramp_epochs", "id_variant", "ce_input", "weighting", "w_triplet", "w_pos", "w_neg", "w_ce",
    "ema_momentum", "uncertainty_init", "gradnorm_alpha", "gradnorm_lr", "dwa_temperature", "lr",
    "lr_schedule", "warmup_epochs", "epochs", "seed", "sampler_p", "sampler_k", "hidden_layers", "width",
    "embedding_dim", "normalize", "mining", "mining_refresh_epochs", "mining_neighbours",
    "mining_random_rate", "mining_hard_start", "mining_hard_end", "eval_every", "encoder", "image_shape",
    "conv_channels", "nuisance_classes", "nuisance_points_per_class", "nuisance_content_dim",
    "nuisance_dim", "nuisance_scale", "nuisance_within", "nuisance_warp", "idx_images", "idx_labels",
    "class_folds", "fold", "data_fingerprint", "temperature", "ce", "focal_gamma", "focal_alpha",
    "split_protocol", "pose_classes", "pose_points_per_class", "pose_content_dim", "pose_dim",
    "pose_scale", "pose_within", "pose_gain", "pose_warp", "memory_size", "memory_weight",
    "memory_start_epoch", "baseline",
)
_SCHEMA: list = [None, {}]  # [token of the registries it was built from, name -> Key]


def schema() -> dict[str, Key]:
    """Every config key -> its Key: the shared ones, the split's, and those every registered
    dataset, encoder, loss and weighting method declares (rebuilt when a registry changes)."""
    token = tuple((name, id(spec)) for registry in (DATASET_SPECS, ENCODER_SPECS, LOSS_SPECS, BASELINE_SPECS,
                                                    LOSSES_WEIGHTINGS)
                  for name, spec in registry.items())
    if _SCHEMA[0] != token:
        _SCHEMA[1] = merge([SHARED_DECLARED, MARGIN_KEYS, WEIGHT_KEYS.values(), ENCODER_KEYS, SPLIT_KEYS,
                            PLUGIN_DATASET_KEYS, *(spec.keys for spec in DATASET_SPECS.values()),
                            *(spec.keys for spec in ENCODER_SPECS.values()),
                            *(spec.keys for spec in LOSS_SPECS.values()),
                            *(spec.keys for spec in BASELINE_SPECS.values()), MINING_KEYS, weighting_keys()])
        _SCHEMA[1] = {**{name: _SCHEMA[1][name] for name in INTRODUCED if name in _SCHEMA[1]}, **_SCHEMA[1]}
        _SCHEMA[0] = token
    return _SCHEMA[1]


class _Live(Mapping):
    """A read-only mapping derived from the registries: rebuilt when the schema changes (a
    component registered or removed), else the one built last."""

    def __init__(self, build):
        self._build = build
        self._cached: tuple[Any, dict] = (None, {})

    def _value(self) -> dict:
        current = schema()
        token = (_SCHEMA[0], id(current))
        if self._cached[0] != token:
            self._cached = (token, self._build())
        return self._cached[1]

    def __getitem__(self, key):
        return self._value()[key]

    def __iter__(self) -> Iterator:
        return iter(self._value())

    def __len__(self) -> int:
        return len(self._value())

    def __repr__(self) -> str:
        return repr(self._value())

    # one look at the registries per call, not one per key
    def __contains__(self, key) -> bool:
        return key in self._value()

    def keys(self):
        return self._value().keys()

    def items(self):
        return self._value().items()

    def values(self):
        return self._value().values()

    def get(self, key, default=None):
        return self._value().get(key, default)

    def as_dict(self) -> dict:
        """A copy of the current mapping."""
        return dict(self._value())


FIELDS: Mapping[str, Key] = _Live(schema)  # key -> Key (.default, .type, .doc, checks)
DEFAULTS: Mapping[str, Any] = _Live(lambda: {name: key.default for name, key in schema().items()})
CHOICES: Mapping[str, tuple[str, ...]] = _Live(
    lambda: {name: key.valid_choices() for name, key in schema().items() if key.choices})
# weighting method -> ((config key, keyword of losses.weighting.make_weighting), ...)
WEIGHTING_PARAMS: Mapping[str, tuple[tuple[str, str], ...]] = _Live(
    lambda: {method: tuple(cls.config_keys.items()) for method, cls in LOSSES_WEIGHTINGS.items() if cls.config_keys})
# name -> BaselineSpec of the baselines that do not depend on the seed (one run per data keys and
# metric), and of the classical metrics fitted on the training classes (lda, nca, pca_whiten)
SEED_FREE_BASELINES: Mapping[str, Any] = _Live(lambda: {n: s for n, s in BASELINE_SPECS.items() if not s.seeded})
CLASSICAL_BASELINES: Mapping[str, Any] = _Live(lambda: {n: s for n, s in BASELINE_SPECS.items() if s.classical})
# fixed weighting: config key -> the component it weights
FIXED_WEIGHT_KEYS = {key.name: component for component, key in WEIGHT_KEYS.items()}


class RunConfig:
    """Everything one training run depends on: one attribute per key of the schema (`FIELDS`),
    a key not given taking its declared default. Frozen; `replace(**changes)` is a changed copy.
    Made valid by `resolve_config`; built directly, it checks only that the keys exist."""

    __slots__ = ("_values",)

    def __init__(self, **values: Any):
        fields = schema()
        if unknown := [key for key in values if key not in fields]:
            raise TypeError(f"RunConfig: unknown keys {unknown}")
        object.__setattr__(self, "_values", {name: values.get(name, key.default) for name, key in fields.items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(f"RunConfig has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"RunConfig is frozen: use config.replace({name}=...)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunConfig) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        return "RunConfig(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def __reduce__(self):
        return _restored, (self._values,)

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig(**{**self._values, **changes})

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


def _restored(values: dict[str, Any]) -> RunConfig:
    """Unpickling: the values as they were (a process that has not registered a component of
    the sender's still reads its config)."""
    config = object.__new__(RunConfig)
    object.__setattr__(config, "_values", dict(values))
    return config


# The keys that make a run's data (its split included): one loaded split per distinct value,
# and what a `raw` baseline depends on.
DATA_KEYS: Mapping[str, None] = _Live(lambda: dict.fromkeys(  # a live view: iterate it for the names
    ("dataset", *(k.name for spec in DATASET_SPECS.values() for k in spec.keys), *names(SPLIT_KEYS))))
# Keys set by the grid (fold) or by resolve_config (data_fingerprint), not by users: valid, but
# left out of the key list an unknown key's error shows.
INTERNAL_KEYS = ("data_fingerprint", "fold")
# Documented caps on sizes (a typo like embedding_dim = 1000000 would run for minutes at GBs):
# a layer size above MAX_LAYER_SIZE, or a batch sampler_p x sampler_k above MAX_BATCH, is refused
# with an estimate of its memory. Every grid of this suite is far below (width 128, batch 128).
MAX_LAYER_SIZE = 8192  # width, embedding_dim: a width x embedding_dim layer is <= 67M weights
MAX_BATCH = 4096  # sampler_p x sampler_k: the (B, B) distance matrices are <= 64 MiB each
_BYTES_PER_WEIGHT = 16  # float32 weight + gradient + Adam's two moments
MAX_LAYER_WEIGHTS = MAX_LAYER_SIZE * MAX_LAYER_SIZE  # the MLP's input layer too: features x width
# Read by every trained run (besides the dataset's, the split's and the encoder's keys).
SHARED_KEYS = ("lr", "lr_schedule", "warmup_epochs", "epochs", "sampler_p", "sampler_k", "eval_every",
               "memory_size", "memory_weight", "memory_start_epoch")
# key -> (the key it refines, whether that key's value makes it read, that condition in
# words): read only then.
REFINES: dict[str, tuple[str, Any, str]] = {
    "margin_start": ("margin_schedule", lambda v: v != "constant", "margin_schedule is not constant"),
    "margin_ramp_epochs": ("margin_schedule", lambda v: v != "constant", "margin_schedule is not constant"),
    "warmup_epochs": ("lr_schedule", lambda v: v != "constant", "lr_schedule is not constant"),
    "focal_gamma": ("ce", lambda v: v == "focal", 'ce = "focal"'),
    "focal_alpha": ("ce", lambda v: v == "focal", 'ce = "focal"'),
    "memory_weight": ("memory_size", lambda v: v > 0, "memory_size > 0"),
    "memory_start_epoch": ("memory_size", lambda v: v > 0, "memory_size > 0"),
    **{key: ("mining", lambda v: v != "none", 'mining is not "none"') for key in names(MINING_KEYS) if key != "mining"},
}


def _keys_to_reset(cfg: dict[str, Any]) -> list[str]:
    """Keys that cannot change what `cfg` trains (reset to defaults before hashing): those no
    chosen component reads (`keys_read`)."""
    read = keys_read(cfg)
    return [key for key in FIELDS if key not in read]


def keys_read(cfg: dict[str, Any]) -> set[str]:
    """A full config dict -> the keys its components read: the dataset's (data.DATASET_SPECS) and
    the split's (data.split_keys); for a trained run also SHARED_KEYS, the encoder's
    (model.ENCODER_SPECS), the loss's (loss_specs.LOSS_SPECS, or a user's loss's keywords) and,
    for a loss of several components, the weighting's; each key of REFINES only where the key
    it refines is read with a value that uses it. A baseline reads the data keys and the metric
    (`untrained` also the encoder's keys and the seed)."""
    loss = cfg["loss"]
    dataset = cfg["dataset"]
    read = {"dataset", "baseline", "metric",
            *names(PLUGIN_DATASET_KEYS if is_import_string(dataset) else
              DATASET_SPECS[dataset].keys if dataset in DATASET_SPECS else ()),
            *split_keys(class_folds=cfg["class_folds"], fold=cfg["fold"], split_protocol=cfg["split_protocol"])}
    spec = ENCODER_SPECS.get(cfg["encoder"])
    encoder = {"encoder", "seed", *names(ENCODER_KEYS), *names(spec.keys if spec else ())}
    if cfg["baseline"]:  # nothing is trained: only the data (and the initial encoder) matter
        baseline = BASELINE_SPECS[cfg["baseline"]]
        read |= set(baseline.key_names) | (encoder if baseline.reads_encoder else set()) | (
            {"seed"} if baseline.seeded else set())
        return _refined(read, cfg)
    spec = loss_spec(loss)
    read |= {"loss"} | encoder | set(SHARED_KEYS) | set(spec.key_names)
    if spec.reads_margin(cfg, LOSS_SPECS):
        read |= set(names(MARGIN_KEYS))
    if len(spec.components) > 1:
        read |= {"weighting", *(key for key, _ in WEIGHTING_PARAMS.get(cfg["weighting"], ()))}
        if cfg["weighting"] == "fixed":
            read |= {key for key, component in FIXED_WEIGHT_KEYS.items() if component in spec.components}
    return _refined(read, cfg)


def _refined(read: set[str], cfg: dict[str, Any]) -> set[str]:
    """The keys read, each key of REFINES only where the key it refines is read with a value
    that uses it."""
    return {key for key in read
            if key not in REFINES or (REFINES[key][0] in read and REFINES[key][1](cfg[REFINES[key][0]]))}


def readers(key: str) -> str:
    """A config key -> which components read it, from their declarations (for the message
    on keys a run does not use)."""
    own = _own_readers(key)
    if key in REFINES:
        parent, _, when = REFINES[key]
        inner = own or (readers(parent) if parent not in SHARED_KEYS else "")
        return f"read only when {when}" + (f" ({inner})" if inner else "")
    return own or "not read by those runs"


def _own_readers(key: str) -> str:
    """A config key -> "read only by ..." from the declarations that list it, or ""."""
    def named(what: str, names) -> str:
        return f"read only by {what} = {', '.join(names)}"

    several = ", ".join(n for n, s in LOSS_SPECS.items() if len(s.components) > 1)
    if key == "loss":
        return 'read only by trained runs (baseline = "")'
    if baselines := [name for name, spec in BASELINE_SPECS.items() if key in spec.key_names]:
        return named("baseline", baselines)
    if losses := [name for name, spec in LOSS_SPECS.items() if key in spec.key_names]:
        return named("loss", losses)
    if key in names(MARGIN_KEYS):
        return ("read only by losses with a margin (not "
                + ", ".join(n for n, s in LOSS_SPECS.items() if not s.takes_margin and not s.margin_of)
                + "; " + ", ".join(f"{n} as its {s.margin_of}" for n, s in LOSS_SPECS.items() if s.margin_of) + ")")
    if datasets := [name for name, spec in DATASET_SPECS.items() if key in names(spec.keys)]:
        return named("dataset", datasets)
    if encoders := [name for name, spec in ENCODER_SPECS.items() if key in names(spec.keys)]:
        return named("encoder", encoders)
    if methods := [m for m, params in WEIGHTING_PARAMS.items() if key in dict(params)]:
        return named("weighting", methods) + f", for losses of several components ({several})"
    if key in FIXED_WEIGHT_KEYS:
        return (f"read only with weighting = \"fixed\", by losses with a "
                f"{FIXED_WEIGHT_KEYS[key]!r} component")
    if key == "weighting":
        return f"read only by losses of several components ({several}, or a user's loss returning several)"
    if key in ("class_folds", "split_protocol"):
        return "read only with class_folds > 1 (fold 0 of rotated folds is the plain cut)"
    return ""


def loss_spec(loss: str) -> LossSpec:
    """A value of `loss` (a name or a user's "package.module:name") -> its LossSpec."""
    if not is_import_string(loss):
        return LOSS_SPECS[loss]
    plugin = loss_plugin(loss)  # imports the user's loss (ablations.plugins)
    return LossSpec(takes_margin="margin" in plugin.keywords, components=plugin.components)


def canonical(cfg: dict[str, Any]) -> dict[str, Any]:
    """Every key's value -> a copy with the keys `cfg` does not use reset to their defaults."""
    out, defaults = dict(cfg), DEFAULTS.as_dict()
    for key in _keys_to_reset(out):
        out[key] = defaults[key]
    return out


def check_value(key: str, value: Any) -> Any:
    """Validate one key's value by its declaration (FIELDS); return it converted to the key's
    type (int -> float)."""
    if key == "dataset" and isinstance(value, str) and value.endswith(".npz"):
        return value  # shorthand for dataset = "npz" + npz_path, expanded by resolve_config
    fields = schema()
    if key not in fields:
        user_keys = [k for k in fields if k not in INTERNAL_KEYS]
        raise ValueError(f"unknown key {key!r}{did_you_mean(key, user_keys)}; "
                         f"valid keys: {', '.join(user_keys)}")
    declared = fields[key]
    kind = declared.type
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"key {key!r} must be of type {kind.__name__}, "
                         f"got {type(value).__name__} {value!r}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"key {key!r} must be finite, got {value!r}")
    if declared.plugin and is_import_string(value):  # "package.module:name": the user's own piece
        check_plugin(key, value)
    elif key == "loss" and value in BASELINE_SPECS:
        raise ValueError(f"key 'loss' got {value!r}, a baseline, not a loss: the baselines run beside "
                         f"every grid's cells ([baselines] include = [...] chooses them); a run config "
                         f"names one with baseline = {value!r}")
    elif declared.choices and value not in (choices := declared.valid_choices()):
        raise ValueError(f"key {key!r} got unknown value {value!r}; "
                         f"valid choices: {', '.join(choices)}"
                         + (", or 'package.module:name' (your own)" if declared.plugin else "")
                         + did_you_mean(value, choices))
    if problem := declared.problem(value):
        raise ValueError(f"key {key!r} {problem}, got {value!r}")
    return value


def _check_sizes(cfg: dict[str, Any]) -> None:
    """ValueError naming the key when a layer or the batch is larger than the documented caps."""
    for key in ("width", "embedding_dim"):
        if cfg[key] > MAX_LAYER_SIZE:
            other = "embedding_dim" if key == "width" else "width"
            weights = cfg["width"] * cfg["embedding_dim"]
            raise ValueError(
                f"key {key!r} = {cfg[key]} is larger than the cap of {MAX_LAYER_SIZE}: the "
                f"width x embedding_dim layer alone holds {weights:.3g} weights, about "
                f"{weights * _BYTES_PER_WEIGHT / 2**30:.3g} GiB with its gradient and Adam's "
                f"state (with {other} = {cfg[other]}); use {key} <= {MAX_LAYER_SIZE}")
    batch = cfg["sampler_p"] * cfg["sampler_k"]
    if batch > MAX_BATCH:
        raise ValueError(
            f"keys 'sampler_p' x 'sampler_k' = {cfg['sampler_p']} x {cfg['sampler_k']} = {batch} "
            f"samples per batch, more than the cap of {MAX_BATCH}: each (B, B) distance matrix "
            f"takes {batch * batch * 4 / 2**30:.3g} GiB (batch_all's (B, B, B) triplets "
            f"{batch ** 3 * 4 / 2**40:.3g} TiB); use sampler_p x sampler_k <= {MAX_BATCH}")


def check_input_layer(config: RunConfig, num_features: int, *, dataset: str) -> None:
    """ValueError when the MLP's first layer on the data's `num_features` inputs holds more
    than MAX_LAYER_WEIGHTS weights (the caps above are on the keys; this one needs the data)."""
    if config.encoder != "mlp":
        return
    key = "width" if config.hidden_layers > 0 else "embedding_dim"
    weights = num_features * getattr(config, key)
    if weights > MAX_LAYER_WEIGHTS:
        raise ValueError(
            f"dataset {dataset!r} has {num_features} features: the encoder's first layer "
            f"({num_features} x {key} {getattr(config, key)} = {weights:.3g} weights, about "
            f"{weights * _BYTES_PER_WEIGHT / 2**30:.3g} GiB with its gradient and Adam's state) "
            f"is larger than the cap of {MAX_LAYER_WEIGHTS:.3g} weights; reduce the features "
            f"(e.g. with PCA) or {key}")


def _check_schedules(cfg: dict[str, Any]) -> None:
    """A schedule longer than training is an error naming both keys."""
    lengths = []
    if cfg["lr_schedule"] == "warmup_cosine":
        lengths.append(("warmup_epochs", "lr_schedule = 'warmup_cosine'"))
    if cfg["margin_schedule"] == "linear":
        lengths.append(("margin_ramp_epochs", "margin_schedule = 'linear'"))
    for key, where in lengths:
        if cfg[key] > cfg["epochs"]:
            raise ValueError(f"key {key!r} = {cfg[key]} (with {where}) is longer than training "
                             f"(epochs = {cfg['epochs']}); use {key} <= epochs")


# losses a cross-batch memory applies to: the triplet losses (their triplet component gets
# + memory_weight * the same variant against the memory; naive and combined: batch-all)
MEMORY_LOSSES = BATCH_VARIANTS + ("triplet_ce",) + EXPLICIT_TRIPLET_LOSSES


def _check_memory(cfg: dict[str, Any]) -> None:
    """memory_size > 0 needs a triplet loss, a memory that holds a step's rows and a start within training."""
    if cfg["memory_size"] == 0 or cfg["baseline"]:
        return
    if cfg["loss"] not in MEMORY_LOSSES:
        raise ValueError(f"key 'memory_size' = {cfg['memory_size']} needs a triplet loss "
                         f"({', '.join(MEMORY_LOSSES)}), got loss = {cfg['loss']!r}; use memory_size = 0")
    rows = cfg["sampler_p"] * cfg["sampler_k"] * (3 if cfg["loss"] in EXPLICIT_TRIPLET_LOSSES else 1)
    if cfg["memory_size"] < rows:
        raise ValueError(f"key 'memory_size' = {cfg['memory_size']} is smaller than a step's {rows} embeddings "
                         f"(sampler_p * sampler_k{' * 3 (triplets)' if rows > cfg['sampler_p'] * cfg['sampler_k'] else ''}); "
                         f"use memory_size >= {rows}")
    if cfg["memory_start_epoch"] >= cfg["epochs"]:
        raise ValueError(f"key 'memory_start_epoch' = {cfg['memory_start_epoch']} is not within training "
                         f"(epochs = {cfg['epochs']}); use memory_start_epoch < epochs")


def resolve_config(values: dict[str, Any]) -> RunConfig:
    """Validate `values` (a subset of the keys), fill defaults, canonicalise unused keys."""
    if not isinstance(values, dict):
        raise ValueError(f"config must be a dict, got {type(values).__name__}")
    if isinstance(values.get("loss"), str) and values["loss"] in BASELINE_SPECS:
        values = _baseline_as_loss(values)
    cfg = DEFAULTS.as_dict()
    for key, value in values.items():
        cfg[key] = check_value(key, value)
    if cfg["dataset"].endswith(".npz"):  # dataset = "PATH.npz" is dataset = "npz", npz_path = PATH
        if values.get("npz_path", cfg["dataset"]) != cfg["dataset"]:
            raise ValueError(f"dataset = {cfg['dataset']!r} names an npz file, but npz_path = "
                             f"{values['npz_path']!r} names another; set one of them")
        cfg["dataset"], cfg["npz_path"] = "npz", cfg["dataset"]
    if cfg["dataset"] == "npz" and not cfg["npz_path"]:
        raise ValueError("key 'npz_path' must name a .npz file when dataset = 'npz'")
    if cfg["dataset"] == "idx" and not (cfg["idx_images"] and cfg["idx_labels"]):
        raise ValueError("keys 'idx_images' and 'idx_labels' must name MNIST-format IDX files "
                         "(.gz or not) when dataset = 'idx'")
    if cfg["fold"] >= cfg["class_folds"]:
        raise ValueError(f"key 'fold' must be in 0..class_folds-1 = 0..{cfg['class_folds'] - 1}, "
                         f"got {cfg['fold']!r}")
    cfg = canonical(cfg)
    _check_schedules(cfg)
    _check_sizes(cfg)
    _check_memory(cfg)
    if not cfg["data_fingerprint"]:  # npz / idx: the files' sha256, a user's loader: its arrays'
        files = {key: cfg[key] for key in data_file_keys(cfg["dataset"])}
        cfg["data_fingerprint"] = data_fingerprint_of(cfg["dataset"], files)
    if cfg["loss"] in COSINE_ONLY:
        cfg["metric"] = "cosine"
    return RunConfig(**cfg)


def _baseline_as_loss(values: dict[str, Any]) -> dict[str, Any]:
    """A config that names a baseline as its loss (how configs were written before store format
    3, and still accepted) -> the same config with `baseline` set and `loss` left out."""
    name = values["loss"]
    if values.get("baseline", name) not in (name, ""):
        raise ValueError(f"loss = {name!r} names a baseline, but baseline = {values['baseline']!r} "
                         f"names another; set baseline alone")
    return {**{k: v for k, v in values.items() if k != "loss"}, "baseline": name}


def unique_configs(configs) -> list[RunConfig]:
    """RunConfigs -> the first of each run id, in order (equivalent cells run once)."""
    seen: set[str] = set()
    out: list[RunConfig] = []
    for config in configs:
        run_id = config_hash(config)
        if run_id not in seen:
            seen.add(run_id)
            out.append(config)
    return out


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """The flat dict of a RunConfig (JSON-serialisable)."""
    return config.as_dict()


def config_hash(config: RunConfig | dict[str, Any]) -> str:
    """The run id: first 12 hex digits of sha256 over the canonical JSON of the keys the
    resolved config's components read (`stored_config`) and the store format."""
    if not isinstance(config, RunConfig):
        config = resolve_config(config)
    return _hash_fields(stored_config(config))


def stored_config(config: RunConfig) -> dict[str, Any]:
    """A resolved config -> what a store holds of it (config.json) and its id hashes: the keys
    its components read (`keys_read`), in schema order. The others are at their defaults and
    cannot change the run, so a component registered later, with keys of its own, changes no
    other run's id."""
    return read_part(config_to_dict(config))


def read_part(values: dict[str, Any]) -> dict[str, Any]:
    """A full config dict (every key) -> the part its components read."""
    read = keys_read(values)
    return {key: value for key, value in values.items() if key in read}


def stored_config_hash(stored: dict[str, Any]) -> str:
    """The run id of a config as a store holds it (config.json), without re-validating it:
    every key it holds but "run_id" (a config stored by an older store format has the id of
    that format until ablations/migrate.py rewrites it). Equals `config_hash` for the config
    that was written."""
    return _hash_fields({k: v for k, v in stored.items() if k != "run_id"})


def _hash_fields(values: dict[str, Any]) -> str:
    """RunConfig fields -> first 12 hex digits of the sha256 of their canonical JSON with the store format."""
    text = json.dumps({"store_format": STORE_FORMAT, **values}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
