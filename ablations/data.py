"""Datasets and the class-disjoint train / validation / test split.

Every dataset is split by *class* (the metric-learning protocol): no class of the
validation or test set is seen in training. Classes are sorted and cut in order:

    n_test  = max(2, round(0.3 * C)),  n_val = max(2, round(0.2 * C)),
    n_train = C - n_val - n_test  (must be >= 2, so at least 6 classes)

Class folds (`class_folds` = K, `fold` = f), by `split_protocol`:
- "fixed_test" (the default; the protocol of Musgrave, Belongie and Lim 2020, "A
  Metric Learning Reality Check"): the test classes are fixed, the last n_test of the
  sorted classes for every fold, and never take part in selection. With K >= 2 the
  other C - n_test classes (the development classes) are cut in order into K blocks
  of near-equal size (np.array_split); fold f validates on block f and trains on the
  other blocks. K = 1 is the single cut above (train, validation, test).
- "rotated" (stores made before `split_protocol` existed): the sorted class list is
  first rotated left by round(f * C / K) places, then cut as above. Each fold is
  class-disjoint in itself, but the validation classes of one fold are test classes
  of another, so selection over folds sees test classes: kept only so old stores
  report and resume as they were made.
Fold 0 of "rotated" is the plain cut whatever K (the split of every store made before
folds existed); fold 0 of "fixed_test" with K >= 2 is not.

- digits (scikit-learn's bundled 8x8 handwritten digits, 1797 x 64, no download):
  train digits 0-4 (901 images), validation 5-6 (363), test 7-9 (533).
- blobs (generated): `blobs_classes` Gaussian classes in `blobs_dim` dimensions,
  centres ~ N(0, 4^2), points ~ centre + N(0, blobs_spread^2), `blobs_points_per_class`
  each, `data_seed` fixes it; `blobs_label_noise` replaces that share of the
  *training* labels by a random training class (noisy supervision; evaluation
  labels stay clean).
- npz: arrays X (N, D) float and y (N,) int from `npz_path`, split as above
  (`dataset = "PATH.npz"` is shorthand for dataset = "npz", npz_path = PATH).
- nuisance (generated, the default benchmark of `make demo`): many classes that
  share a nuisance a learned metric must remove; ablations/nuisance.py says how
  and why it is a fair test.
- pose (generated): many classes whose content each sample shows in its own random
  pose (a rotation) and gain, beside a shared nuisance: the class means coincide,
  so no linear map separates the classes; ablations/pose.py says how and why.
- idx: MNIST-format IDX files `idx_images`, `idx_labels` (.gz or not; e.g. Debian's
  dataset-fashion-mnist), images flattened to rows (ablations/idx.py).
  For npz, X must be
  real (integer or float, no complex, no object arrays) with D >= 1, and every class
  needs at least 2 samples (a query with no same-class neighbour has no precision
  or MAP@R): a class with fewer is an error naming it, not a silent NaN. The file's
  sha256 is the run's `data_fingerprint` (part of its run id, see
  `ablations.config`): changed data means new runs; a run whose file changed
  after its grid was resolved fails with an error naming the file.
- "package.module:loader": the user's loader() -> (X, y), checked as npz arrays
  (ablations.plugins); the sha256 of the arrays is the run's `data_fingerprint`, so a
  loader that returns other data (changed, or differing between processes) is named.

Features are standardised with the training split's mean and standard deviation.
Model selection uses the validation split only; test metrics are computed for
every run, and reports pick configurations on validation.
"""

from __future__ import annotations

import functools
import hashlib
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ablations.idx import load_idx_xy
from ablations.keys import DATA_SEED, NON_NEGATIVE, POSITIVE, TWO_POINTS, UNIT_INTERVAL, Key, names
from ablations.nuisance import NUISANCE_KEYS, nuisance_xy_of
from ablations.plugin_import import checked_signature, import_object, is_import_string
from ablations.pose import POSE_KEYS, pose_xy_of


MIN_CLASSES = 6
MIN_CLASS_SIZE = 2
_FINGERPRINTS: dict[tuple, str] = {}  # (resolved path, size, mtime_ns) -> sha256


@dataclass(frozen=True)
class Split:
    """Float32 features and int64 labels of the three class-disjoint splits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def train_classes(self) -> np.ndarray:
        return np.unique(self.y_train)


def class_counts(num_classes: int) -> tuple[int, int, int]:
    """C classes -> (n_train, n_val, n_test) by the rule in the module docstring."""
    n_test = max(2, round(0.3 * num_classes))
    n_val = max(2, round(0.2 * num_classes))
    n_train = num_classes - n_val - n_test
    if n_train < 2:
        raise ValueError(f"labels y have {num_classes} classes; the class-disjoint split "
                         f"needs at least {MIN_CLASSES} (2 train, 2 validation, 2 test)")
    return n_train, n_val, n_test


SPLIT_PROTOCOLS = ("fixed_test", "rotated")  # values of the `split_protocol` key
# The split's keys (which of them a run reads: `split_keys`).
SPLIT_KEYS = (
    Key("class_folds", 1, "K class partitions; a grid runs folds 0..K-1 of each cell", POSITIVE),
    Key("fold", 0, "which partition (0 <= fold < class_folds; set by the grid)", NON_NEGATIVE),
    Key("split_protocol", "fixed_test", 'class folds: "fixed_test" (fixed test classes, folds over '
        'the rest) | "rotated" (stores before it)', choices=SPLIT_PROTOCOLS),
)


def split_keys(*, class_folds: int, fold: int, split_protocol: str) -> tuple[str, ...]:
    """The split's keys that change which classes a run trains, validates and tests on: fold 0
    of "rotated" is the plain cut whatever class_folds, and with one fold both protocols cut
    the same classes."""
    keys = ("fold",) if fold == 0 and split_protocol == "rotated" else ("fold", "class_folds")
    return keys + ("split_protocol",) if "class_folds" in keys and class_folds != 1 else keys


def fold_classes(classes: np.ndarray, *, class_folds: int, fold: int,
                 split_protocol: str = "fixed_test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """classes (C,) sorted -> (train, validation, test) classes of fold `fold` of `class_folds`.

    "fixed_test": test = the last n_test classes for every fold; with K >= 2 the others are
    cut into K blocks, validation = block `fold`, train = the other blocks. "rotated": the
    class list rotated left by round(fold * C / class_folds), cut by `class_counts`. A K that
    cannot give K distinct folds is a ValueError naming class_folds.
    """
    if split_protocol not in SPLIT_PROTOCOLS:
        raise ValueError(f"split_protocol must be one of {', '.join(SPLIT_PROTOCOLS)}, "
                         f"got {split_protocol!r}")
    if not 0 <= fold < class_folds:
        raise ValueError(f"fold must be in 0..class_folds-1 = 0..{class_folds - 1}, got {fold!r}")
    classes = np.asarray(classes)
    n_train, n_val, n_test = class_counts(len(classes))
    if split_protocol == "rotated" or class_folds == 1:
        if class_folds > len(classes):
            raise ValueError(f"class_folds = {class_folds} but the data have {len(classes)} "
                             f"classes: rotated folds repeat beyond class_folds = {len(classes)}")
        shift = round(fold * len(classes) / class_folds)
        order = np.roll(classes, -shift)
        return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    development, test = classes[:-n_test], classes[-n_test:]
    most = len(development) // 2  # every validation block and the training part need >= 2 classes
    if class_folds > most:
        raise ValueError(f"class_folds = {class_folds} is too many for {len(classes)} classes: "
                         f"the {len(development)} classes outside the fixed test classes give "
                         f"at most {most} folds of >= 2 validation classes; use class_folds <= "
                         f"{most}")
    blocks = np.array_split(development, class_folds)
    train = np.concatenate([b for i, b in enumerate(blocks) if i != fold])
    return train, blocks[fold], test


def split_by_class(x: np.ndarray, y: np.ndarray, *, class_folds: int = 1, fold: int = 0,
                   split_protocol: str = "fixed_test") -> Split:
    """x (N, D) float, y (N,) int -> Split with classes cut in sorted order (by the fold and
    `split_protocol`, see `fold_classes`), standardised on the training classes."""
    train_c, val_c, test_c = fold_classes(np.unique(y), class_folds=class_folds, fold=fold,
                                          split_protocol=split_protocol)
    parts = [np.isin(y, c) for c in (train_c, val_c, test_c)]
    x = x.astype(np.float64)
    mean = x[parts[0]].mean(axis=0)
    std = x[parts[0]].std(axis=0)
    std[std == 0] = 1.0  # constant features (digits has some) stay 0
    x = ((x - mean) / std).astype(np.float32)
    y = y.astype(np.int64)
    return Split(*(a for m in parts for a in (x[m], y[m])))


def load_digits_xy() -> tuple[np.ndarray, np.ndarray]:
    """-> X (1797, 64) float, y (1797,) int: scikit-learn's bundled digits."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data, data.target


def make_blobs_xy(*, classes: int, dim: int, points_per_class: int, spread: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """-> X (classes * points_per_class, dim) float, y int: Gaussian classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, size=(classes, dim))
    y = np.repeat(np.arange(classes), points_per_class)
    x = centres[y] + rng.normal(0.0, spread, size=(len(y), dim))
    return x, y


def file_fingerprint(path: str | Path, *, key: str = "path") -> str:
    """file -> sha256 hex digest of its bytes (cached while its size and mtime stay the same).

    ValueError naming `key` and the file when it is missing or unreadable.
    """
    path = Path(path)
    try:
        stat = path.stat()
        if not path.is_file():
            raise IsADirectoryError(21, "not a file")
        cache_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if cache_key not in _FINGERPRINTS:
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            _FINGERPRINTS[cache_key] = digest.hexdigest()
    except FileNotFoundError:
        raise ValueError(f"{key}: file not found: {str(path)!r}") from None
    except OSError as err:
        raise ValueError(f"{key}: cannot read {str(path)!r} ({err.strerror or err})") from err
    return _FINGERPRINTS[cache_key]


def check_class_sizes(y: np.ndarray, *, source: str) -> None:
    """y (N,) int -> None; ValueError naming the classes with fewer than MIN_CLASS_SIZE samples."""
    classes, counts = np.unique(y, return_counts=True)
    small = classes[counts < MIN_CLASS_SIZE]
    if len(small):
        shown = ", ".join(map(str, small[:20].tolist())) + (" ..." if len(small) > 20 else "")
        raise ValueError(f"{source}: {len(small)} class(es) of y have fewer than "
                         f"{MIN_CLASS_SIZE} samples ({shown}); every class needs at least "
                         f"{MIN_CLASS_SIZE} (a query needs a same-class neighbour): remove them "
                         f"or add samples")


def load_npz_xy(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """.npz with X (N, D) float and y (N,) int -> (X, y); ValueError on anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"npz_path: file not found: {str(path)!r}")
    where = f"npz_path {str(path)!r}"
    wrong = not_an_npz(path)
    if wrong:
        raise ValueError(f"{where}: {wrong}; save X and y with numpy.savez")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(f"{where}: not an .npz archive (a single .npy array?); "
                             f"save X and y with numpy.savez")
        with loaded as data:
            missing = [name for name in ("X", "y") if name not in data.files]
            if missing:
                raise ValueError(f"{where}: missing array(s) {missing}; "
                                 f"found {sorted(data.files)}, need X (N, D) float and y (N,) int")
            x, y = data["X"], data["y"]
    except ValueError as err:
        if str(err).startswith(where):
            raise
        raise ValueError(f"{where}: cannot be read as an .npz of plain arrays ({err}); "
                         f"need X (N, D) float and y (N,) int, no object arrays") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{where}: not a readable .npz archive ({err})") from err
    check_xy(x, y, source=where)
    return x, y


def not_an_npz(path: Path) -> str | None:
    """A file -> why its first bytes are not those of an .npz archive (numpy would read them
    as pickled data), or None when they may be."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith((b"PK", b"\x93NUMPY")):  # a zip (.npz), or a .npy
        return None
    return (f"not an .npz archive (a zip of arrays): it begins with {head!r}"
            + (" (a text file?)" if _looks_like_text(head) else ""))


def _looks_like_text(head: bytes) -> bool:
    try:
        return head.decode("utf-8").isprintable() or "\n" in head.decode("utf-8")
    except UnicodeDecodeError:
        return False


def check_xy(x: np.ndarray, y: np.ndarray, *, source: str) -> None:
    """x (N, D >= 1) real finite, y (N,) int, >= 2 classes of >= 2 samples; ValueError naming `source`."""
    real = np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
    if x.ndim != 2 or not real:
        raise ValueError(f"{source}: X must be a 2-D real (integer or float) array, "
                         f"got shape {x.shape} dtype {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(f"{source}: X has zero columns (shape {x.shape}); need at least 1 feature")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{source}: y must be a 1-D integer array, "
                         f"got shape {y.shape} dtype {y.dtype}")
    if len(x) != len(y):
        raise ValueError(f"{source}: X has {len(x)} rows but y has {len(y)} labels")
    if len(x) == 0:
        raise ValueError(f"{source}: X and y have zero rows; need samples of at least "
                         f"{MIN_CLASSES} classes")
    if not np.isfinite(x).all():
        raise ValueError(f"{source}: X has {int((~np.isfinite(x)).sum())} non-finite values")
    if len(np.unique(y)) < 2:
        raise ValueError(f"{source}: y has a single class; "
                         f"the split needs at least {MIN_CLASSES}")
    check_class_sizes(y, source=source)


@dataclass(frozen=True)
class DatasetSpec:
    """One value of `dataset`: the config keys it reads besides the split's (`split_keys`; the
    config resets the keys no chosen component reads), with their defaults and checks; the
    keys naming its data files (their sha256 is the run's data_fingerprint); and its arrays."""

    keys: tuple[Key, ...]
    xy: Callable[[Any], tuple[np.ndarray, np.ndarray]]   # RunConfig -> X (N, D), y (N,)
    files: tuple[str, ...] = ()
    after_split: Callable[[Split, Any], Split] | None = None   # (split, RunConfig) -> split


def _blobs_xy(config) -> tuple[np.ndarray, np.ndarray]:
    return make_blobs_xy(classes=config.blobs_classes, dim=config.blobs_dim,
                         points_per_class=config.blobs_points_per_class,
                         spread=config.blobs_spread, seed=config.data_seed)


def _idx_xy(config) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_idx_xy(config.idx_images, config.idx_labels)
    check_xy(x, y, source=f"idx_images {config.idx_images!r}, idx_labels {config.idx_labels!r}")
    return x, y


def _sha256_or_empty(value: str) -> str:
    if value and (len(value) != 64 or value.strip("0123456789abcdef")):
        return "must be empty (filled from the data file) or a sha256 of 64 lowercase hex digits"
    return ""


# npz / idx: sha256 of the file(s), a loader's: of its arrays; filled by the config's
# resolution (changed data = new run id)
DATA_FINGERPRINT = Key("data_fingerprint", "", "sha256 of the run's data", (_sha256_or_empty,))
BLOBS_KEYS = (
    Key("blobs_classes", 40, "number of Gaussian classes", POSITIVE),
    Key("blobs_dim", 32, "feature dimension", POSITIVE),
    Key("blobs_points_per_class", 30, "points drawn per class", POSITIVE + (TWO_POINTS,)),
    Key("blobs_spread", 1.0, "std of points around their centre (centres ~ N(0, 1)*4)", NON_NEGATIVE),
    Key("blobs_label_noise", 0.0, "share of training labels replaced at random", UNIT_INTERVAL),
    DATA_SEED,
)
DATASET_SPECS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec((), lambda config: load_digits_xy()),
    "blobs": DatasetSpec(BLOBS_KEYS, _blobs_xy,
                         after_split=lambda split, config: _with_label_noise(
                             split, rate=config.blobs_label_noise, seed=config.data_seed)),
    "npz": DatasetSpec((Key("npz_path", "", "file with X (N, D) float and y (N,) int"), DATA_FINGERPRINT),
                       lambda config: load_npz_xy(config.npz_path), files=("npz_path",)),
    "nuisance": DatasetSpec(NUISANCE_KEYS, nuisance_xy_of),
    "idx": DatasetSpec((Key("idx_images", "", "MNIST-format image file (.gz or not)"),
                        Key("idx_labels", "", "MNIST-format label file (.gz or not)"), DATA_FINGERPRINT),
                       _idx_xy, files=("idx_images", "idx_labels")),
    "pose": DatasetSpec(POSE_KEYS, pose_xy_of),
}
PLUGIN_DATASET_KEYS = (DATA_FINGERPRINT,)  # a user's loader: the sha256 of the arrays it returns


def data_key_names(dataset: str) -> tuple[str, ...]:
    """A value of `dataset` -> the keys that make a run's data: the dataset's own (from its
    spec; a user's loader: its fingerprint) and the split's."""
    keys = PLUGIN_DATASET_KEYS if is_import_string(dataset) else (
        DATASET_SPECS[dataset].keys if dataset in DATASET_SPECS else ())
    return ("dataset", *names(keys), *names(SPLIT_KEYS))


_SPLITS: dict[tuple, Split] = {}  # per-process cache of loaded datasets


def cached_split(config) -> Split:
    """`load_split(config)`, loaded once per process per data configuration."""
    key = tuple((k, getattr(config, k)) for k in data_key_names(config.dataset))
    if key not in _SPLITS:
        _SPLITS[key] = load_split(config)
    return _SPLITS[key]


def load_split(config) -> Split:
    """RunConfig (or anything with its attributes) -> the dataset's class-disjoint Split."""
    folds = dict(class_folds=config.class_folds, fold=config.fold,
                 split_protocol=config.split_protocol)
    dataset, plugin = config.dataset, is_import_string(config.dataset)
    if not plugin and dataset not in DATASET_SPECS:
        raise ValueError(f"dataset: unknown {dataset!r}; valid: {', '.join(DATASET_SPECS)}")
    files = {key: getattr(config, key) for key in data_file_keys(dataset)}
    expected = getattr(config, "data_fingerprint", "")
    if files or (plugin and expected):  # data files are hashed even with no recorded fingerprint
        check_data_fingerprint(expected, data_fingerprint_of(dataset, files),
                               dataset=dataset, files=files)
    if plugin:  # a user's loader, "package.module:function"
        return split_by_class(*load_plugin_xy(dataset), **folds)
    spec = DATASET_SPECS[dataset]
    split = split_by_class(*spec.xy(config), **folds)
    return spec.after_split(split, config) if spec.after_split else split


def data_file_keys(dataset: str) -> tuple[str, ...]:
    """A value of `dataset` -> the config keys naming its data files (npz, idx); () for the
    others and for a user's loader."""
    return DATASET_SPECS[dataset].files if dataset in DATASET_SPECS else ()


def files_fingerprint(files: dict[str, str]) -> str:
    """{config key: path} -> the data's fingerprint: the file's sha256 for one file, else the
    sha256 of "key=sha256;" over the keys in order (idx: images and labels)."""
    digests = {key: file_fingerprint(path, key=key) for key, path in files.items()}
    if len(digests) == 1:
        return next(iter(digests.values()))
    text = "".join(f"{key}={digest};" for key, digest in digests.items())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def arrays_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """x (N, D), y (N,) -> sha256 over their dtypes, shapes and bytes (a loader's data, as a
    file's sha256 is an npz's)."""
    digest = hashlib.sha256()
    for array in (x, y):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def plugin_fingerprint(text: str) -> str:
    """"module:loader" -> the fingerprint of the (X, y) it returns in this process."""
    return arrays_fingerprint(*load_plugin_xy(text))


SOURCE_KEYS = ("dataset", "npz_path", "idx_images", "idx_labels", "data_fingerprint")


def source_of(values: Mapping) -> str:
    """A run's (or config's) data keys -> e.g. "npz d.npz (sha256 ab12...)" or "digits"."""
    path = values.get("npz_path") or values.get("idx_images") or ""
    digest = values.get("data_fingerprint") or ""
    return (" ".join(str(p) for p in (values.get("dataset"), path) if isinstance(p, str) and p)
            + (f" (sha256 {digest[:16]}...)" if isinstance(digest, str) and digest else ""))


def data_fingerprint_of(dataset: str, files: Mapping[str, str]) -> str:
    """A value of `dataset` and its data files ({key: path} over `data_file_keys(dataset)`) ->
    the run's data_fingerprint: a user's loader's arrays' (`plugin_fingerprint`), the files'
    (`files_fingerprint`), or "" for data without files (digits, blobs, nuisance, pose)."""
    if is_import_string(dataset):
        return plugin_fingerprint(dataset)
    return files_fingerprint(files) if files else ""


def check_data_fingerprint(expected: str, actual: str, *, dataset: str,
                           files: Mapping[str, str]) -> None:
    """The data_fingerprint a config records ("" for none) and its data's fingerprint now ->
    None, or ValueError when both differ (the data changed since the grid was resolved): naming
    the files ({key: path}), or with no files the user's loader `dataset`."""
    if not expected or actual == expected:
        return
    if not files:
        raise ValueError(f"key 'dataset': {dataset!r} returned other data in this "
                         f"process (sha256 {actual[:16]}...) than "
                         f"when the grid was resolved (data_fingerprint {expected[:16]}...); a "
                         f"loader must return the same X and y on every call (fix its random "
                         f"seed, read a fixed file)")
    names = ", ".join(f"{key} {path!r}" for key, path in files.items())
    raise ValueError(f"{names} changed after the grid was resolved: the data's sha256 is "
                     f"{actual[:16]}..., the run expects data_fingerprint "
                     f"{expected[:16]}...; run the grid again to make runs for the new data")


def _with_label_noise(split: Split, *, rate: float, seed: int) -> Split:
    if rate == 0.0:
        return split
    rng = np.random.default_rng([seed, 1])
    y = split.y_train.copy()
    flip = rng.random(len(y)) < rate
    y[flip] = rng.choice(split.train_classes, size=int(flip.sum()))
    return Split(split.x_train, y, split.x_val, split.y_val, split.x_test, split.y_test)


@functools.lru_cache(maxsize=None)
def load_plugin_xy(text: str) -> tuple[np.ndarray, np.ndarray]:
    """"module:loader" -> (X (N, D) float, y (N,) int) from loader(), checked like an npz file."""
    loader = import_object(text, key="dataset")
    checked_signature(loader, key="dataset", text=text, positional=0)
    try:
        out = loader()
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"key 'dataset': {text!r} raised {type(err).__name__}: {err}") from err
    except SystemExit as err:  # a loader written as a script: not the command's exit
        raise ValueError(f"key 'dataset': {text!r} called sys.exit({err.code!r}) instead of "
                         f"returning (X, y)") from None
    if not isinstance(out, tuple) or len(out) != 2:
        raise ValueError(f"key 'dataset': {text!r} must return a pair (X, y), got {type(out).__name__}")
    x, y = (_plain_array(a, text=text, name=name) for a, name in zip(out, "Xy"))
    check_xy(x, y, source=f"key 'dataset': {text!r}")
    return x, y


def _plain_array(value: Any, *, text: str, name: str) -> np.ndarray:
    """A loader's X or y -> numpy array; a torch tensor is detached and copied to the CPU."""
    if hasattr(value, "detach") and hasattr(value, "device"):  # a torch tensor (maybe requires_grad)
        if value.device.type == "meta":
            raise ValueError(f"key 'dataset': {text!r} returned {name} on the meta device "
                             f"(no data); return real arrays or CPU tensors")
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"key 'dataset': {text!r} returned {name} that is not an array "
                         f"({type(value).__name__}: {err})") from err
