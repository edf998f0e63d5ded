"""Classical linear metrics as baselines: LDA, NCA and PCA whitening (scikit-learn).

Each is fitted on the training classes of the run's split only (`Split.x_train`,
`Split.y_train`; validation and test rows are never passed to `fit`), for every
candidate number of components; the candidate with the highest validation MAP@R
(`score`, computed on `Split.x_val` alone) is kept (ties: the smaller dimension),
and its transform embeds the validation and test points like `raw` embeds them
(ablations/baselines.py evaluates them with the run's metric).

Methods (every hyper-parameter is fixed here except the number of components):
- "lda": `LinearDiscriminantAnalysis(solver="svd")`, its `transform` (the
  discriminant coordinates); at most n_train_classes - 1 and D components.
- "nca": `NeighborhoodComponentsAnalysis(init="pca", max_iter=NCA_MAX_ITER,
  random_state=NCA_RANDOM_STATE)`; at most D components. `init="pca"` because it is
  defined for every number of components (scikit-learn's "lda" init is not above
  n_classes - 1) and is deterministic; NCA_MAX_ITER is scikit-learn's default (a fit
  that stops there is kept: the fixed budget of this baseline; `n_iter` is recorded).
- "pca_whiten": `PCA(whiten=True, svd_solver="full")`; at most min(n_train, D) components.

Candidate numbers of components: DIMENSIONS capped by the method's maximum (every
candidate above the cap becomes the cap, so the full allowed dimension is always tried).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits


METHODS = ("lda", "nca", "pca_whiten")
DIMENSIONS = (2, 4, 8, 16, 32, 64, 128, 256)  # candidate numbers of components, before the cap
NCA_MAX_ITER = 50        # scikit-learn's default L-BFGS budget
NCA_RANDOM_STATE = 0     # fixes NCA's PCA initialisation (randomised SVD on large inputs)
# BLAS threads while fitting and transforming: one, so the bytes do not depend on the machine's
# core count or the executor (a local and a Dask run store the same numbers)
BLAS_THREADS = 1


@dataclass(frozen=True)
class Fitted:
    """The selected fit: its transform, chosen hyper-parameters and every candidate's score."""

    transform: Callable[[np.ndarray], np.ndarray]   # x (N, D) -> (N, n_components) float32
    params: dict                                    # e.g. {"n_components": 8}
    scores: dict                                    # n_components -> validation score


def max_components(method: str, x_train: np.ndarray, y_train: np.ndarray) -> int:
    """The largest number of components `method` allows on this training set."""
    n, d = x_train.shape
    if method == "lda":
        return max(1, min(len(np.unique(y_train)) - 1, d))
    if method == "nca":
        return d
    if method == "pca_whiten":
        return min(n, d)
    raise ValueError(f"method: unknown {method!r}; valid: {', '.join(METHODS)}")


def candidate_dimensions(method: str, x_train: np.ndarray, y_train: np.ndarray) -> list[int]:
    """DIMENSIONS capped by `max_components`, each once, ascending."""
    cap = max_components(method, x_train, y_train)
    return sorted({min(k, cap) for k in DIMENSIONS})


def fit(method: str, n_components: int, x_train: np.ndarray, y_train: np.ndarray):
    """-> the scikit-learn estimator of `method` with `n_components`, fitted on (x_train, y_train)."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neighbors import NeighborhoodComponentsAnalysis

    if method == "lda":
        model = LinearDiscriminantAnalysis(solver="svd", n_components=n_components)
    elif method == "nca":
        model = NeighborhoodComponentsAnalysis(n_components=n_components, init="pca",
                                               max_iter=NCA_MAX_ITER,
                                               random_state=NCA_RANDOM_STATE)
    elif method == "pca_whiten":
        model = PCA(n_components=n_components, whiten=True, svd_solver="full")
    else:
        raise ValueError(f"method: unknown {method!r}; valid: {', '.join(METHODS)}")
    with warnings.catch_warnings(), threadpool_limits(limits=BLAS_THREADS):
        warnings.simplefilter("ignore", ConvergenceWarning)  # NCA's fixed budget (n_iter recorded)
        return model.fit(x_train, y_train)


def _transform(model) -> Callable[[np.ndarray], np.ndarray]:
    def transform(x: np.ndarray) -> np.ndarray:
        with threadpool_limits(limits=BLAS_THREADS):
            return np.ascontiguousarray(model.transform(x), dtype=np.float32)
    return transform


def fit_selected(method: str, split, score: Callable[[np.ndarray], float]) -> Fitted:
    """Fit `method` on split's training rows for every candidate dimension; keep the one whose
    validation embeddings score highest (`score(method's x_val embeddings (N, k)) -> float`,
    the validation MAP@R); ties go to the smaller dimension."""
    x_train, y_train = split.x_train, split.y_train
    best, scores = None, {}
    for k in candidate_dimensions(method, x_train, y_train):
        model = fit(method, k, x_train, y_train)
        scores[k] = float(score(_transform(model)(split.x_val)))
        if best is None or scores[k] > scores[best[0]]:
            best = (k, model)
    k, model = best
    params = {"n_components": k}
    if method == "nca":
        params["n_iter"] = int(model.n_iter_)
    return Fitted(transform=_transform(model), params=params, scores=scores)
