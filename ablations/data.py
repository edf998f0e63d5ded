"""Datasets and the class-disjoint train / validation / test split.

Every dataset is split by *class* (the metric-learning protocol): no class of the
validation or test set is seen in training. Classes are sorted and cut in order:

    n_test  = max(2, round(0.3 * C)),  n_val = max(2, round(0.2 * C)),
    n_train = C - n_val - n_test  (must be >= 2, so at least 6 classes)

- digits (scikit-learn's bundled 8x8 handwritten digits, 1797 x 64, no download):
  train digits 0-4 (901 images), validation 5-6 (363), test 7-9 (533).
- blobs (generated): `blobs_classes` Gaussian classes in `blobs_dim` dimensions,
  centres ~ N(0, 4^2), points ~ centre + N(0, blobs_spread^2), `blobs_points_per_class`
  each, `data_seed` fixes it; `blobs_label_noise` replaces that share of the
  *training* labels by a random training class (noisy supervision; evaluation
  labels stay clean).
- npz: arrays X (N, D) float and y (N,) int from `npz_path`, split as above.
- "package.module:loader": the user's loader() -> (X, y), checked as npz arrays
  (ablations.plugins).

Features are standardised with the training split's mean and standard deviation.
Model selection uses the validation split only; test metrics are computed for
every run, and reports pick configurations on validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_CLASSES = 6


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


def split_by_class(x: np.ndarray, y: np.ndarray) -> Split:
    """x (N, D) float, y (N,) int -> Split with classes cut in sorted order, standardised."""
    classes = np.unique(y)
    n_train, n_val, _ = class_counts(len(classes))
    train_c, val_c, test_c = (classes[:n_train], classes[n_train:n_train + n_val],
                              classes[n_train + n_val:])
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


def load_npz_xy(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """.npz with X (N, D) float and y (N,) int -> (X, y); ValueError on anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"npz_path: file not found: {str(path)!r}")
    with np.load(path, allow_pickle=False) as data:
        missing = [name for name in ("X", "y") if name not in data.files]
        if missing:
            raise ValueError(f"npz_path {str(path)!r}: missing array(s) {missing}; "
                             f"found {sorted(data.files)}, need X (N, D) float and y (N,) int")
        x, y = data["X"], data["y"]
    check_xy(x, y, source=f"npz_path {str(path)!r}")
    return x, y


def check_xy(x: np.ndarray, y: np.ndarray, *, source: str) -> None:
    """x (N, D) numeric finite, y (N,) int with >= 2 classes, same N; ValueError starting with `source`."""
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{source}: X must be a 2-D numeric array, "
                         f"got shape {x.shape} dtype {x.dtype}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{source}: y must be a 1-D integer array, "
                         f"got shape {y.shape} dtype {y.dtype}")
    if len(x) != len(y):
        raise ValueError(f"{source}: X has {len(x)} rows but y has {len(y)} labels")
    if not np.isfinite(x).all():
        raise ValueError(f"{source}: X has {int((~np.isfinite(x)).sum())} "
                         f"non-finite values")
    if len(np.unique(y)) < 2:
        raise ValueError(f"{source}: y has a single class; "
                         f"the split needs at least {MIN_CLASSES}")


def load_split(config) -> Split:
    """RunConfig (or anything with its attributes) -> the dataset's class-disjoint Split."""
    if config.dataset == "digits":
        x, y = load_digits_xy()
        return split_by_class(x, y)
    if config.dataset == "blobs":
        x, y = make_blobs_xy(classes=config.blobs_classes, dim=config.blobs_dim,
                             points_per_class=config.blobs_points_per_class,
                             spread=config.blobs_spread, seed=config.data_seed)
        split = split_by_class(x, y)
        return _with_label_noise(split, rate=config.blobs_label_noise, seed=config.data_seed)
    if config.dataset == "npz":
        x, y = load_npz_xy(config.npz_path)
        return split_by_class(x, y)
    if ":" in config.dataset:  # a user's loader, "package.module:function" (ablations.plugins)
        from ablations.plugins import load_plugin_xy

        return split_by_class(*load_plugin_xy(config.dataset))
    raise ValueError(f"dataset: unknown {config.dataset!r}; valid: digits, blobs, npz")


def _with_label_noise(split: Split, *, rate: float, seed: int) -> Split:
    if rate == 0.0:
        return split
    rng = np.random.default_rng([seed, 1])
    y = split.y_train.copy()
    flip = rng.random(len(y)) < rate
    y[flip] = rng.choice(split.train_classes, size=int(flip.sum()))
    return Split(split.x_train, y, split.x_val, split.y_val, split.x_test, split.y_test)
