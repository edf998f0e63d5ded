"""Statistics over seeds: Student-t confidence intervals and the paired test.

Both work on the seeds that finished: a failed or diverged seed has no metric
and is left out (the count `n` says how many remained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

CI_METHOD = "95% Student-t interval over seeds (mean +/- t(0.975, n-1) * sd / sqrt(n))"
PAIRED_TEST = "paired t-test over common seeds (two-sided, scipy.stats.ttest_rel)"


@dataclass(frozen=True)
class MeanCI:
    """Mean of n values and its t-interval (NaN bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of two variants over their common seeds."""

    n: int                 # common seeds used
    mean_diff: float       # mean of (a - b) over the common seeds
    p_value: float         # NaN when the test is not applicable
    note: str              # "" or why the test is n/a


def mean_ci(values, *, confidence: float) -> MeanCI:
    """values (n,) float (NaN dropped) -> MeanCI with a Student-t `confidence` interval."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return MeanCI(mean, math.nan, math.nan, 1)
    half = float(st.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return MeanCI(mean, mean - half, mean + half, n)


def t_half_width(std, count, *, confidence: float):
    """std (k,) float, count (k,) int -> (k,) half-widths of t-intervals (NaN where count < 2)."""
    std = np.asarray(std, dtype=float)
    count = np.asarray(count, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.where(count >= 2, count - 1, np.nan)
        return st.t.ppf(0.5 + confidence / 2, dof) * std / np.sqrt(count)


def paired_test(a: dict, b: dict) -> PairedResult:
    """a, b: seed -> metric (NaN = missing) -> paired t-test over the seeds both have."""
    seeds = sorted(s for s in set(a) & set(b)
                   if np.isfinite(a[s]) and np.isfinite(b[s]))
    if len(seeds) < 2:
        diff = float(a[seeds[0]] - b[seeds[0]]) if seeds else math.nan
        return PairedResult(len(seeds), diff, math.nan, f"n/a ({len(seeds)} common seed(s), need 2)")
    xa = np.array([a[s] for s in seeds], dtype=float)
    xb = np.array([b[s] for s in seeds], dtype=float)
    diff = xa - xb
    if np.allclose(diff, diff[0]):
        note = "n/a (identical results)" if diff[0] == 0 else "n/a (constant difference over seeds)"
        return PairedResult(len(seeds), float(diff.mean()), math.nan, note)
    p = float(st.ttest_rel(xa, xb).pvalue)
    return PairedResult(len(seeds), float(diff.mean()), p, "")
