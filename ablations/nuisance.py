"""The `nuisance` dataset: many classes that share a nuisance a learned metric must remove.

A controlled few-shot metric-learning task, generated (nothing to download):

    content   c = mu_y + N(0, within^2 I_dc)       mu_y ~ N(0, I_dc), one per class
    nuisance  n ~ N(0, scale^2 I_dn)                the same distribution for every class
    h = [c, n] (dc + dn),  x = Q h + warp * tanh(R (Q h) / sqrt(D))

with Q a random rotation of the D = dc + dn dimensions and R a random Gaussian
matrix (a smooth non-linear mixing, so content and nuisance are no longer two
coordinate blocks, nor even two linear subspaces when warp > 0).

Why it is a fair test of what a metric-learning benchmark measures:
- Classes are many (default 120: 60 train, 24 validation, 36 test with the
  class-disjoint split), as on CUB-200 / Cars196 / SOP, so what is learned must
  transfer to classes never seen in training.
- Raw distances are dominated by the nuisance (by default it has the spread of
  the class means, `scale` = 1, in 3x as many dimensions: 24 of 32), as pixel
  distances are dominated by pose, lighting and background on images; an
  untrained encoder is a random (non-linear) projection and keeps that nuisance. A metric that transfers has to
  learn *which directions do not matter*, from the training classes, and that
  knowledge is valid on every class because the nuisance is shared: exactly the
  inductive step metric learning is for.
- It is not solved by construction: classes overlap in content (within = 0.5
  against unit-variance means in dc = 8 dimensions), so even the ideal metric (the
  content coordinates c) does not reach MAP@R = 1: `python -m benchmarks.nuisance_scores`
  prints raw, untrained and ideal test MAP@R for the default keys.
The data depend only on the keys below and `data_seed` (same seed, same bytes).
"""

from __future__ import annotations

import numpy as np

from ablations.keys import DATA_SEED, NON_NEGATIVE, POSITIVE, Key

# The config keys the dataset reads (its entry in ablations.data.DATASET_SPECS).
# The config keys the dataset reads (its entry in ablations.data.DATASET_SPECS).
NUISANCE_KEYS = (
    Key("nuisance_classes", 120, "number of classes", POSITIVE),
    Key("nuisance_points_per_class", 40, "points drawn per class", POSITIVE),
    Key("nuisance_content_dim", 8, "dimensions that carry the class", POSITIVE),
    Key("nuisance_dim", 24, "dimensions shared by every class", POSITIVE),
    Key("nuisance_scale", 1.0, "std of the nuisance (class means have std 1)", NON_NEGATIVE),
    Key("nuisance_within", 0.5, "within-class std of the content", NON_NEGATIVE),
    Key("nuisance_warp", 1.0, "strength of the non-linear mixing (0 = a rotation)", NON_NEGATIVE),
    DATA_SEED,
)


def nuisance_xy_of(config, *, return_content: bool = False):
    """RunConfig (its nuisance_* keys and data_seed) -> make_nuisance_xy(...) for that run."""
    return make_nuisance_xy(
        classes=config.nuisance_classes, points_per_class=config.nuisance_points_per_class,
        content_dim=config.nuisance_content_dim, nuisance_dim=config.nuisance_dim,
        scale=config.nuisance_scale, within=config.nuisance_within, warp=config.nuisance_warp,
        seed=config.data_seed, return_content=return_content)


def make_nuisance_xy(*, classes: int, points_per_class: int, content_dim: int,
                     nuisance_dim: int, scale: float, within: float, warp: float,
                     seed: int, return_content: bool = False):
    """-> X (classes * points_per_class, content_dim + nuisance_dim) float32, y (N,) int64.

    With return_content=True also the content coordinates c (N, content_dim): the
    ideal metric's features (for measuring an upper bound, never used in training).
    """
    rng = np.random.default_rng([seed, 7])
    dim = content_dim + nuisance_dim
    means = rng.normal(0.0, 1.0, size=(classes, content_dim))
    y = np.repeat(np.arange(classes, dtype=np.int64), points_per_class)
    content = means[y] + rng.normal(0.0, within, size=(len(y), content_dim))
    nuisance = rng.normal(0.0, scale, size=(len(y), nuisance_dim))
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))            # (D, D) rotation
    r = rng.normal(size=(dim, dim))                              # (D, D) mixing of the warp
    x = np.concatenate([content, nuisance], axis=1) @ q.T        # (N, D)
    x = x + warp * np.tanh(x @ r.T / np.sqrt(dim))
    x = x.astype(np.float32)
    if return_content:
        return x, y, content.astype(np.float32)
    return x, y
