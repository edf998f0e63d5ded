"""The `pose` dataset: every sample shows its class's content in its own random pose.

Design (written and committed before any result on it was measured; the notes at
the end record each design tried and its numbers):

    content   c = mu_y + N(0, within^2 I_dc)        mu_y ~ N(0, I_dc), one per class
    pose      one angle theta ~ U[0, 2 pi) per sample, applied to all dc / 2 planes
              of c (coordinates (2p, 2p+1)): c' = R(theta) c, the same rotation in
              every plane (an in-plane rotation of an image turns its circular
              harmonics the same way)
    lighting  a gain s = exp(gain * N(0, 1)) per sample: c'' = s c'
    nuisance  n ~ N(0, scale^2 I_dn), one distribution for every class
    h = [c'', n] (D = dc + dn),  x = Q h + warp * tanh(R (Q h) / sqrt(D))

with Q a random rotation of the D dimensions and R a random Gaussian matrix (the
mixing of `nuisance`, ablations/nuisance.py, a mild warp at the default 0.5).
Defaults: 120 classes x 40 points, dc = 8 (4 planes), dn = 8, within 0.5,
scale 1, gain 0.2, warp 0.5: D = 16 features.

Why learning a non-linear metric is the point here, and why that is fair:
- The nuisance acts per sample on the content, as pose and lighting act on images,
  not as a block of coordinates beside it. Averaged over poses, R(theta) mu_y = 0 for
  every class: the class means coincide in input space (up to sampling noise and the
  warp's small curvature). Each class lies on its own closed orbit (a circle of
  radius ~|mu_y| in the plane span{mu_y, J mu_y}, thickened by noise and gain), and
  the orbits of all classes pass around the same centre. A linear map can shrink the
  additive nuisance n, but it cannot bring the two sides of an orbit together
  without merging every class's orbit with it: LDA (its between-class scatter is
  that of coinciding means), NCA, PCA whitening and the raw features all keep the
  pose. That is what the old `nuisance` set got wrong: there a linear projection
  removes the nuisance, and LDA beat every trained loss.
- A metric that transfers has to be pose-invariant: functions of c'' that do not
  change under R(theta), such as the plane norms |c''_p| and the relative phases
  between planes (the Hermitian products z_p conj(z_q) of the planes as complex
  numbers), up to the gain. These are non-linear (quadratic before the warp), the
  same functions for every class, so they are learnt from the training classes and
  hold on classes never seen: the inductive step metric learning is for. An MLP
  with one hidden ReLU layer can represent them approximately (a norm is a sum of
  ReLUs of projections around the circle).
- One shared angle, not one per plane: with an angle per plane only the dc / 2 plane
  norms would survive, and most of the class information would be destroyed by
  construction; with one angle, the invariants keep dc - 1 of the dc dimensions of
  content (dc - 2 once the gain is removed too).
- It is not solved by construction: classes overlap in content (within 0.5 against
  unit-variance means in 8 dimensions, as in `nuisance`), so even the ideal metric,
  the content c in canonical pose and unit gain (`return_content=True`, never used
  in training), stays below MAP@R = 1, and a pose-invariant metric can do no better
  than the ideal (it sees c only up to its pose and gain).
- A classical non-linear method could also find the invariants (e.g. LDA on the
  degree-2 monomials of x: the invariants are quadratic before the warp);
  benchmarks/dataset_gaps.py measures that too and says what it reaches, so the
  benchmark does not claim that only a neural network can learn this metric, only
  that no linear one can.
- Many classes (120: 60 train, 24 validation, 36 test with the single split), D =
  16 features: one run of the default MLP takes about a second on one thread.

The data depend only on the pose_* keys and `data_seed` (same seed, same bytes).

Designs tried and what they measured (test MAP@R; `python -m benchmarks.dataset_gaps
--dataset pose`, fold 0 = the single split, data_seed 0):
- Design 1 (the default above, unchanged since it was committed): raw 0.026, an
  untrained MLP 0.019; LDA 0.021, NCA 0.067, PCA whitening 0.023 (dimension chosen
  on validation); LDA on degree-2 monomials 0.165; the content in canonical pose
  (the brief's ideal) 0.585, and the best a pose-invariant metric can do with the
  content known, min over theta |c_i - R(theta) c_j|, 0.289 (0.279 modulo the
  gain too): the pose itself destroys information, so the reachable ceiling is
  ~0.29, not 0.585. Trained (seed 0, P x K = 16 x 8, 20 epochs): batch_all 0.158
  at lr 1e-3, 0.177 at 3e-3; ntxent 0.179, semi_hard_tf 0.192 at 3e-3; 60 epochs
  0.183-0.188 (no better); two hidden layers 0.150 (worse).
  Over 3 rotated class folds x 3 seeds (`--folds 3 --workers 2`, 20 epochs, P x K
  16 x 8; the folds' means): raw 0.030, untrained 0.022, LDA 0.026, NCA 0.077, PCA
  whitening 0.026, poly2 LDA 0.208; ideal 0.624, modulo pose 0.355, modulo pose
  and gain 0.344. Trained: semi_hard_tf 0.196 / 0.226 (lr 1e-3 / 3e-3), ntxent
  0.190 / 0.223, batch_all 0.188 / 0.215, batch_hard_soft 0.039 / 0.046 (it
  collapses). The best on validation (semi_hard_tf, lr 3e-3) - NCA (the best
  linear method on validation): +0.149 [+0.132, +0.166], paired over the 9 (fold,
  seed) units; - poly2 LDA: +0.018 [+0.011, +0.025]. The issue's bar against the
  classical (linear) baselines is met; a classical *non-linear* method (LDA on
  quadratic features) comes within 0.02 of the best loss, because the invariants
  are quadratic before the warp.
- Cost per run (one thread, process CPU time on the loaded 2-core machine, a warm
  process; semi_hard_tf, lr 3e-3, P x K 16 x 8): 20 epochs (360 steps) 3.6 s
  (test 0.192 at seed 0, fold 0), the same recipe on `nuisance` 3.5 s: the data
  cost nothing, the step does (~9 ms); 10 epochs (180 steps) 1.9 s (test 0.166);
  P x K 8 x 8 for 10 epochs (370 steps) 3.4 s (0.171). The first run of a process
  adds ~5 s of imports. Width 256: 0.185 (batch_all 3e-3, 20 epochs, against 0.177).
- Not tried (no time), the next design if a quadratic method must be left behind
  too: plane p turned by (p + 1) theta (an image's circular harmonic m turns by
  m theta), so the relative phases are cubic and higher (the bispectrum), beyond
  degree-2 features.

Why the result is fair (README-ready): on `pose` the nuisance is not a block of
coordinates beside the class but a per-sample rotation and gain of the class's
content, as pose and lighting are for images. Averaged over poses every class has
the same mean, so no linear map (raw features, PCA whitening, LDA, NCA, all fitted
on the training classes with their dimension chosen on validation) separates the
classes: they stay at test MAP@R 0.03-0.08. A metric that transfers must be
invariant to the pose, a non-linear function of the features that is the same for
every class and can be learnt from the training classes: the best trained loss
reaches 0.226, +0.149 over the best linear baseline. Nothing is solved by
construction: classes overlap in content, the hidden content in canonical pose
reaches 0.624 and the best any pose-invariant metric can do, computed with the
content known, 0.355, so every method leaves a gap. It is a synthetic task whose
invariants are quadratic before a mild warp: LDA on quadratic features reaches
0.208, within 0.02 of the best loss; the benchmark shows that a non-linear metric
is needed, not that a neural network is the only way to learn one.
"""

from __future__ import annotations

import numpy as np

from ablations.keys import DATA_SEED, NON_NEGATIVE, POSITIVE, TWO_POINTS, Key, even

# The config keys the dataset reads (its entry in ablations.data.DATASET_SPECS).
POSE_KEYS = (
    Key("pose_classes", 120, "number of classes", POSITIVE),
    Key("pose_points_per_class", 40, "points drawn per class", POSITIVE + (TWO_POINTS,)),
    Key("pose_content_dim", 8, "dimensions of the content (even: dc / 2 rotation planes)",
        POSITIVE + (even("the pose rotates planes of two coordinates"),)),
    Key("pose_dim", 8, "dimensions of the additive nuisance shared by every class", NON_NEGATIVE),
    Key("pose_scale", 1.0, "std of the additive nuisance (class means have std 1)", NON_NEGATIVE),
    Key("pose_within", 0.5, "within-class std of the content", NON_NEGATIVE),
    Key("pose_gain", 0.2, 'std of the log of the per-sample gain ("lighting")', NON_NEGATIVE),
    Key("pose_warp", 0.5, "strength of the non-linear mixing (0 = a rotation)", NON_NEGATIVE),
    DATA_SEED,
)


def pose_xy_of(config, *, return_content: bool = False):
    """RunConfig (its pose_* keys and data_seed) -> make_pose_xy(...) for that run."""
    return make_pose_xy(
        classes=config.pose_classes, points_per_class=config.pose_points_per_class,
        content_dim=config.pose_content_dim, nuisance_dim=config.pose_dim,
        scale=config.pose_scale, within=config.pose_within, gain=config.pose_gain,
        warp=config.pose_warp, seed=config.data_seed, return_content=return_content)


def make_pose_xy(*, classes: int, points_per_class: int, content_dim: int, nuisance_dim: int,
                 scale: float, within: float, gain: float, warp: float, seed: int,
                 return_content: bool = False):
    """-> X (classes * points_per_class, content_dim + nuisance_dim) float32, y (N,) int64.

    With return_content=True also the content c in canonical pose and unit gain
    (N, content_dim): the ideal metric's features (an upper bound, never used in training).
    ValueError when content_dim is odd (the pose turns planes of two coordinates).
    """
    if content_dim < 2 or content_dim % 2:
        raise ValueError(f"pose_content_dim must be even and >= 2 (the pose rotates planes of "
                         f"two coordinates), got {content_dim!r}")
    rng = np.random.default_rng([seed, 11])
    dim = content_dim + nuisance_dim
    means = rng.normal(0.0, 1.0, size=(classes, content_dim))
    y = np.repeat(np.arange(classes, dtype=np.int64), points_per_class)
    N = len(y)
    content = means[y] + rng.normal(0.0, within, size=(N, content_dim))   # (N, dc)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=N)                          # (N,)
    gains = np.exp(gain * rng.normal(size=N))                              # (N,)
    a, b = content[:, 0::2], content[:, 1::2]                              # (N, dc/2) each
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    posed = np.empty_like(content)
    posed[:, 0::2] = cos * a - sin * b
    posed[:, 1::2] = sin * a + cos * b
    posed *= gains[:, None]
    nuisance = rng.normal(0.0, scale, size=(N, nuisance_dim))
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))                        # (D, D) rotation
    r = rng.normal(size=(dim, dim))                                         # (D, D) warp mixing
    x = np.concatenate([posed, nuisance], axis=1) @ q.T                     # (N, D)
    x = x + warp * np.tanh(x @ r.T / np.sqrt(dim))
    x = x.astype(np.float32)
    if return_content:
        return x, y, content.astype(np.float32)
    return x, y
