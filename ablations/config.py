"""One run's configuration: the flat, frozen `RunConfig`, its validation and its hash.

Every key has a documented default (the dataclass below). A grid file sets some of
them in `[base]` and varies some in `[grid]`; `resolve_config` validates a dict of
keys, fills in the defaults and *canonicalises keys that cannot affect the run*
(e.g. the weighting of a single-component loss, mining parameters when mining is
"none") back to their defaults, so two cells that train the same thing get the
same `run_id` and run once. The keys kept are those the chosen components read
(`keys_read` below, from the components' declarations: a baseline, `loss` in
BASELINES, reads only its data keys and the metric, plus the encoder's keys and the
seed for "untrained", the one baseline not in SEED_FREE_BASELINES); and the
losses defined on cosine similarity (multi_similarity, circle) get
metric = "cosine", which evaluation then uses too.

`config_hash` is the run's id: the first 12 hex digits of the sha256 of the
canonical JSON (sorted keys, no whitespace) of every key of the resolved
configuration plus `store_format` (STORE_FORMAT). Every key enters, whatever its
value: a changed default changes the id of the runs made with it (an old run is never
taken for a new one), and a new key or a new meaning of a value changes every id, a
new store format to which existing stores are migrated once (ablations/migrate.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from ablations.data import (DATASET_SPECS, PLUGIN_DATASET_KEYS, SPLIT_PROTOCOLS,
                            files_fingerprint, plugin_fingerprint, split_keys)
from ablations.loss_specs import LOSS_SPECS, MARGIN_KEYS, MINING_KEYS, LossSpec
from ablations.model import ENCODER_SPECS, parse_image_shape
from ablations.plugin_import import is_import_string
from ablations.plugins import PLUGIN_KEYS, check_plugin, loss_plugin
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
# Reference points evaluated for every grid (ablations/baselines.py), never trained and never
# selected as a variant: "raw" = the standardised input features of the split, "untrained" =
# the encoder at its initialisation for the run's seed, and the classical linear metrics fitted
# on the training classes (ablations/classical.py): "lda" (linear discriminant analysis), "nca"
# (neighbourhood components analysis), "pca_whiten" (PCA whitening). Valid values of `loss`.
CLASSICAL_BASELINES = ("lda", "nca", "pca_whiten")
BASELINES = ("raw", "untrained", *CLASSICAL_BASELINES)
# Baselines that do not depend on the seed (deterministic): one run per data keys and metric.
SEED_FREE_BASELINES = ("raw", *CLASSICAL_BASELINES)
# Defined on cosine similarity: their runs train and evaluate with metric = "cosine".
COSINE_ONLY = tuple(name for name, spec in LOSS_SPECS.items() if spec.cosine_only)
# One source of truth: the names the losses package defines.
METRICS = LOSSES_METRICS
WEIGHTINGS = LOSSES_WEIGHTINGS.keys()  # a live view of losses.weighting's registry
MARGIN_SCHEDULES = ("constant", "linear")
LR_SCHEDULES = ("constant", "warmup_cosine")
MININGS = ("none", "offline_hard")
CE_INPUTS = ("logits", "probabilities")
CE_KINDS = ("ce", "focal")
ENCODERS = ENCODER_SPECS.keys()  # a live view, as DATASETS
# Every run stored before `split_protocol` existed used "rotated" folds (a stored config
# without the key: ablations/migrate.py fills it in).
LEGACY_SPLIT_PROTOCOL = "rotated"
# The version of the store layout and of the run ids (written to DIR/store.json). Adding a
# key to RunConfig, or changing what a value means, changes run ids: bump it and add the step
# that rewrites older stores to ablations/migrate.py.
STORE_FORMAT = 2

CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": DATASETS, "loss": LOSSES + BASELINES, "metric": METRICS, "weighting": WEIGHTINGS,
    "margin_schedule": MARGIN_SCHEDULES, "lr_schedule": LR_SCHEDULES, "mining": MININGS,
    "id_variant": BATCH_VARIANTS, "ce_input": CE_INPUTS, "encoder": ENCODERS, "ce": CE_KINDS,
    "split_protocol": SPLIT_PROTOCOLS,
}


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run depends on; the defaults are the documentation."""

    # --- data -------------------------------------------------------------
    dataset: str = "digits"             # digits | blobs | npz (splits: ablations/data.py)
    blobs_classes: int = 40             # blobs: number of Gaussian classes
    blobs_dim: int = 32                 # blobs: feature dimension
    blobs_points_per_class: int = 30    # blobs: points drawn per class
    blobs_spread: float = 1.0           # blobs: std of points around their centre (centres ~ N(0, 1)*4)
    blobs_label_noise: float = 0.0      # blobs: share of training labels replaced at random
    data_seed: int = 0                  # blobs: seed of the generated data (not of training)
    npz_path: str = ""                  # npz: file with X (N, D) float and y (N,) int
    # --- objective --------------------------------------------------------
    loss: str = "batch_hard"            # one of LOSSES
    metric: str = "euclidean"           # distance used by the loss AND by evaluation
    margin: float = 0.2                 # triplet margin (final value under a schedule)
    margin_schedule: str = "constant"   # constant | linear (ramp from margin_start)
    margin_start: float = 0.0           # linear: margin at step 0
    margin_ramp_epochs: int = 10        # linear: epochs to reach `margin`
    id_variant: str = "batch_hard"      # triplet_ce: batch variant beside the class CE
    ce_input: str = "logits"            # combined/triplet_ce: "probabilities" is the documented bug, an ablation only
    weighting: str = "fixed"            # combined/triplet_ce: losses.weighting method
    w_triplet: float = 1.0              # fixed weighting: weight of the triplet term
    w_pos: float = 1.0                  # fixed weighting: CE on (anchor, positive) pairs (combined)
    w_neg: float = 1.0                  # fixed weighting: CE on (anchor, negative) pairs (combined)
    w_ce: float = 1.0                   # fixed weighting: class CE (triplet_ce)
    ema_momentum: float = 0.9           # inverse_ema: momentum of the loss EMA
    uncertainty_init: float = -0.5      # uncertainty: initial log-variance s_i (Kendall et al.)
    gradnorm_alpha: float = 1.5         # gradnorm: asymmetry alpha (Chen et al., NYUv2)
    gradnorm_lr: float = 0.025          # gradnorm: learning rate of its weight update
    dwa_temperature: float = 2.0        # dwa: temperature T (Liu et al.)
    # --- optimisation -----------------------------------------------------
    lr: float = 1e-3                    # Adam learning rate (peak under warmup_cosine)
    lr_schedule: str = "constant"       # constant | warmup_cosine
    warmup_epochs: int = 2              # warmup_cosine: linear warmup length
    epochs: int = 30
    seed: int = 0                       # model init, sampling, mining
    sampler_p: int = 5                  # classes per batch
    sampler_k: int = 16                 # samples per class in a batch (batch = P * K)
    # --- model ------------------------------------------------------------
    hidden_layers: int = 1              # hidden Linear+ReLU layers of the MLP
    width: int = 128                    # hidden width
    embedding_dim: int = 32
    normalize: bool = True              # L2-normalise the embeddings
    # --- offline hard mining (naive and combined only) ---------------------
    mining: str = "none"                # none (random triplets) | offline_hard (BallTree)
    mining_refresh_epochs: int = 5      # rebuild the BallTree every N epochs
    mining_neighbours: int = 20         # neighbours queried per anchor for a hard negative
    mining_random_rate: float = 0.5     # share of negatives always drawn at random
    mining_hard_start: float = 0.0      # hard share of the other negatives at epoch 0 ...
    mining_hard_end: float = 1.0        # ... ramped linearly to this at the last epoch
    # --- evaluation -------------------------------------------------------
    eval_every: int = 10                # validation every N epochs, and always after the last
    # --- keys added after the first store format ---
    encoder: str = "mlp"                # mlp | conv (ablations/model.py)
    image_shape: str = ""               # conv: "CxHxW" of each row of X; "" = 1 x s x s for F = s^2 features
    conv_channels: int = 32             # conv: channels of the first block (doubled once)
    nuisance_classes: int = 120         # nuisance: number of classes (ablations/nuisance.py)
    nuisance_points_per_class: int = 40
    nuisance_content_dim: int = 8       # nuisance: dimensions that carry the class
    nuisance_dim: int = 24              # nuisance: dimensions shared by every class
    nuisance_scale: float = 1.0         # nuisance: std of the nuisance (class means have std 1)
    nuisance_within: float = 0.5        # nuisance: within-class std of the content
    nuisance_warp: float = 1.0          # nuisance: strength of the non-linear mixing (0 = a rotation)
    idx_images: str = ""                # idx: MNIST-format image file (.gz or not)
    idx_labels: str = ""                # idx: MNIST-format label file (.gz or not)
    class_folds: int = 1                # K class partitions; a grid runs folds 0..K-1 of each cell
    fold: int = 0                       # which partition (0 <= fold < class_folds; set by the grid)
    data_fingerprint: str = ""          # npz / idx: sha256 of the file(s), a loader's: of its arrays; filled by resolve_config (changed data = new run id)
    temperature: float = 0.07           # ntxent: temperature t of the softmax over s / t (PML's default)
    ce: str = "ce"                      # combined/triplet_ce: "ce" | "focal" for the cross-entropy terms
    focal_gamma: float = 2.0            # ce = "focal": focusing exponent gamma (Lin et al.); 0 = CE
    focal_alpha: float = -1.0           # ce = "focal", combined: class-1 weight alpha in (0, 1); -1 = none
    split_protocol: str = "fixed_test"  # class folds: "fixed_test" (fixed test classes, folds over the rest) | "rotated" (stores before it)
    pose_classes: int = 120             # pose: number of classes (ablations/pose.py)
    pose_points_per_class: int = 40
    pose_content_dim: int = 8           # pose: dimensions of the content (even: dc / 2 rotation planes)
    pose_dim: int = 8                   # pose: dimensions of the additive nuisance shared by every class
    pose_scale: float = 1.0             # pose: std of the additive nuisance (class means have std 1)
    pose_within: float = 0.5            # pose: within-class std of the content
    pose_gain: float = 0.2              # pose: std of the log of the per-sample gain ("lighting")
    pose_warp: float = 0.5              # pose: strength of the non-linear mixing (0 = a rotation)
    memory_size: int = 0                # cross-batch memory (XBM) entries; 0 = off (losses/memory.py)
    memory_weight: float = 1.0          # memory: w in loss(batch, batch) + w * loss(batch, memory)
    memory_start_epoch: int = 0         # memory: first epoch that enqueues and adds the memory term


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunConfig)}
# The keys that make a run's data (its split included): one loaded split per distinct value,
# and what a `raw` baseline depends on.
DATA_KEYS = ("dataset", *dict.fromkeys(k for spec in DATASET_SPECS.values() for k in spec.keys),
             "class_folds", "fold", "split_protocol")
DEFAULTS: dict[str, Any] = {name: f.default for name, f in FIELDS.items()}
# Keys set by the grid (fold) or by resolve_config (data_fingerprint), not by users: valid, but
# left out of the key list an unknown key's error shows.
INTERNAL_KEYS = ("data_fingerprint", "fold")

_POSITIVE_INTS = ("class_folds", "blobs_classes", "blobs_dim", "blobs_points_per_class",
                  "margin_ramp_epochs", "conv_channels", "nuisance_classes",
                  "nuisance_points_per_class", "nuisance_content_dim", "nuisance_dim",
                  "pose_classes", "pose_points_per_class", "pose_content_dim",
                  "epochs", "sampler_p", "sampler_k", "width", "embedding_dim",
                  "mining_refresh_epochs", "mining_neighbours", "eval_every")
_NON_NEGATIVE = ("blobs_spread", "nuisance_scale", "nuisance_within", "nuisance_warp", "margin",
                 "pose_dim", "pose_scale", "pose_within", "pose_gain", "pose_warp",
                 "margin_start", "w_triplet", "w_pos", "w_neg", "w_ce", "hidden_layers",
                 "warmup_epochs", "seed", "data_seed", "gradnorm_alpha", "fold",
                 "focal_gamma", "memory_size", "memory_weight", "memory_start_epoch")
_POSITIVE_FLOATS = ("gradnorm_lr", "dwa_temperature", "temperature")
SEED_KEYS = ("seed", "data_seed")
MAX_SEED = 2**32 - 1  # numpy and torch take < 2**63, scikit-learn's KMeans (evaluation) < 2**32
# datasets read from a file: their runs carry the file's sha256 as data_fingerprint
# weighting method -> (config key, keyword of losses.weighting.make_weighting)
WEIGHTING_PARAMS = {
    "inverse_ema": (("ema_momentum", "momentum"),),
    "uncertainty": (("uncertainty_init", "init"),),
    "gradnorm": (("gradnorm_alpha", "alpha"), ("gradnorm_lr", "lr")),
    "dwa": (("dwa_temperature", "temperature"),),
}
# fixed weighting: config key -> the component it weights
FIXED_WEIGHT_KEYS = {"w_triplet": "triplet", "w_pos": "ce_pos", "w_neg": "ce_neg", "w_ce": "ce_id"}
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
    **{key: ("mining", lambda v: v != "none", 'mining is not "none"') for key in MINING_KEYS if key != "mining"},
}
_UNIT_INTERVAL = ("blobs_label_noise", "mining_random_rate", "mining_hard_start",
                  "mining_hard_end")


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
    read = {"dataset", "loss", "metric",
            *(PLUGIN_DATASET_KEYS if is_import_string(dataset) else
              DATASET_SPECS[dataset].keys if dataset in DATASET_SPECS else ()),
            *split_keys(class_folds=cfg["class_folds"], fold=cfg["fold"], split_protocol=cfg["split_protocol"])}
    spec = ENCODER_SPECS.get(cfg["encoder"])
    encoder = {"encoder", "embedding_dim", "seed", *(spec.keys if spec else ())}
    if loss in BASELINES:  # nothing is trained: only the data (and the initial encoder) matter
        return read if loss in SEED_FREE_BASELINES else read | encoder
    spec = loss_spec(loss)
    read |= encoder | set(SHARED_KEYS) | set(spec.keys)
    if spec.reads_margin(cfg, LOSS_SPECS):
        read |= set(MARGIN_KEYS)
    if len(spec.components) > 1:
        read |= {"weighting", *(key for key, _ in WEIGHTING_PARAMS.get(cfg["weighting"], ()))}
        if cfg["weighting"] == "fixed":
            read |= {key for key, component in FIXED_WEIGHT_KEYS.items() if component in spec.components}
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
    if losses := [name for name, spec in LOSS_SPECS.items() if key in spec.keys]:
        return named("loss", losses)
    if key in MARGIN_KEYS:
        return ("read only by losses with a margin (not "
                + ", ".join(n for n, s in LOSS_SPECS.items() if not s.takes_margin and not s.margin_of)
                + "; " + ", ".join(f"{n} as its {s.margin_of}" for n, s in LOSS_SPECS.items() if s.margin_of) + ")")
    if datasets := [name for name, spec in DATASET_SPECS.items() if key in spec.keys]:
        return named("dataset", datasets)
    if encoders := [name for name, spec in ENCODER_SPECS.items() if key in spec.keys]:
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
    out = dict(cfg)
    for key in _keys_to_reset(out):
        out[key] = DEFAULTS[key]
    return out


def check_value(key: str, value: Any) -> Any:
    """Validate one key's value; return it converted to the field's type (int -> float)."""
    if key == "dataset" and isinstance(value, str) and value.endswith(".npz"):
        return value  # shorthand for dataset = "npz" + npz_path, expanded by resolve_config
    if key not in FIELDS:
        user_keys = [k for k in FIELDS if k not in INTERNAL_KEYS]
        raise ValueError(f"unknown key {key!r}{did_you_mean(key, user_keys)}; "
                         f"valid keys: {', '.join(user_keys)}")
    kind = FIELDS[key].type
    kind = {"str": str, "int": int, "float": float, "bool": bool}.get(kind, kind)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"key {key!r} must be of type {kind.__name__}, "
                         f"got {type(value).__name__} {value!r}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"key {key!r} must be finite, got {value!r}")
    if key in PLUGIN_KEYS and is_import_string(value):  # "package.module:name": the user's own piece
        check_plugin(key, value)
    elif key in CHOICES and value not in CHOICES[key]:
        raise ValueError(f"key {key!r} got unknown value {value!r}; "
                         f"valid choices: {', '.join(CHOICES[key])}"
                         + (", or 'package.module:name' (your own)" if key in PLUGIN_KEYS else "")
                         + did_you_mean(value, CHOICES[key]))
    if key in _POSITIVE_INTS and value < 1:
        raise ValueError(f"key {key!r} must be >= 1, got {value!r}")
    if key in SEED_KEYS and not 0 <= value <= MAX_SEED:
        raise ValueError(f"key {key!r} must be in [0, 2**32 - 1] = [0, {MAX_SEED}] "
                         f"(scikit-learn's KMeans takes no larger seed), got {value!r}")
    if key in _NON_NEGATIVE and value < 0:
        raise ValueError(f"key {key!r} must be >= 0, got {value!r}")
    if (key == "lr" or key in _POSITIVE_FLOATS) and value <= 0:
        raise ValueError(f"key {key!r} must be > 0, got {value!r}")
    if key == "ema_momentum" and not 0.0 <= value < 1.0:
        raise ValueError(f"key 'ema_momentum' must be in [0, 1), got {value!r}")
    if key == "focal_alpha" and value != -1.0 and not 0.0 < value < 1.0:
        raise ValueError(f"key 'focal_alpha' must be in (0, 1), or -1 for none, got {value!r}")
    if key in _UNIT_INTERVAL and not 0.0 <= value <= 1.0:
        raise ValueError(f"key {key!r} must be in [0, 1], got {value!r}")
    if key == "blobs_points_per_class" and value < 2:
        raise ValueError(f"key 'blobs_points_per_class' must be >= 2 (a class with one point "
                         f"has no positive pair to retrieve), got {value!r}")
    if key == "data_fingerprint" and value and (
            len(value) != 64 or value.strip("0123456789abcdef")):
        raise ValueError(f"key 'data_fingerprint' must be empty (filled from the data file) or "
                         f"a sha256 of 64 lowercase hex digits, got {value!r}")
    if key == "pose_points_per_class" and value < 2:
        raise ValueError(f"key 'pose_points_per_class' must be >= 2 (a class with one point "
                         f"has no positive pair to retrieve), got {value!r}")
    if key == "pose_content_dim" and value % 2:
        raise ValueError(f"key 'pose_content_dim' must be even (the pose rotates planes of two "
                         f"coordinates), got {value!r}")
    if key in ("sampler_p", "sampler_k") and value < 2:
        raise ValueError(f"key {key!r} must be >= 2 (a batch needs positives and negatives), "
                         f"got {value!r}")
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
    if cfg["memory_size"] == 0 or cfg["loss"] in BASELINES:
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
    cfg = dict(DEFAULTS)
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
    if cfg["image_shape"]:
        parse_image_shape(cfg["image_shape"])
    if cfg["fold"] >= cfg["class_folds"]:
        raise ValueError(f"key 'fold' must be in 0..class_folds-1 = 0..{cfg['class_folds'] - 1}, "
                         f"got {cfg['fold']!r}")
    cfg = canonical(cfg)
    _check_schedules(cfg)
    _check_sizes(cfg)
    _check_memory(cfg)
    files = DATASET_SPECS[cfg["dataset"]].files if cfg["dataset"] in DATASET_SPECS else ()
    if files and not cfg["data_fingerprint"]:
        cfg["data_fingerprint"] = files_fingerprint({key: cfg[key] for key in files})
    elif is_import_string(cfg["dataset"]) and not cfg["data_fingerprint"]:
        cfg["data_fingerprint"] = plugin_fingerprint(cfg["dataset"])  # the loader's arrays
    if cfg["loss"] in COSINE_ONLY:
        cfg["metric"] = "cosine"
    return RunConfig(**cfg)


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
    return dataclasses.asdict(config)


def config_hash(config: RunConfig | dict[str, Any]) -> str:
    """The run id: first 12 hex digits of sha256 over the canonical JSON of the resolved config."""
    if not isinstance(config, RunConfig):
        config = resolve_config(config)
    return _hash_fields(config_to_dict(config))


def stored_config_hash(stored: dict[str, Any]) -> str:
    """The run id of a config as a store holds it (config.json), without re-validating it.

    Keys that are not RunConfig fields (e.g. "run_id") are left out; a missing key is
    not filled in (a config stored by an older store format has the id of that format
    until ablations/migrate.py rewrites it). Equals `config_hash` for the config that was
    written.
    """
    return _hash_fields({k: v for k, v in stored.items() if k in FIELDS})


def _hash_fields(values: dict[str, Any]) -> str:
    """RunConfig fields -> first 12 hex digits of the sha256 of their canonical JSON with the store format."""
    text = json.dumps({"store_format": STORE_FORMAT, **values}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
