"""Statistics over units: Student-t confidence intervals, the paired test, Holm's correction.

A unit is an independent repetition of a configuration (reports/leaderboard.py): with
two or more class folds a fold (the mean over its seeds, n = the number of folds),
on a single class split a seed. The interval and the tests work on the runs that
finished: a failed or diverged run has no metric and is left out (the count `n`
says how many units remained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

UNITS = ("units: folds (each the mean over its seeds; seeds share a fold's classes, so they "
         "are not independent), n = number of folds; on a single class split, seeds")
CI_METHOD = ("95% Student-t interval over units (mean +/- t(0.975, n-1) * sd / sqrt(n)); "
             + UNITS)
PAIRED_TEST = ("paired t-test over matched units (two-sided, scipy.stats.ttest_rel), "
               "with the 95% t-interval of the mean difference")
HOLM = ("Holm's step-down correction over the comparisons against the best variant "
        "(family-wise error 5%; the unadjusted p beside it)")
LOW_POWER_N = 5   # below this many matched units a paired test has little power


@dataclass(frozen=True)
class MeanCI:
    """Mean of n values and its t-interval (NaN bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of two variants over their matched units."""

    n: int                 # matched units used
    mean_diff: float       # mean of (a - b) over the matched units
    p_value: float         # NaN when the test is not applicable
    note: str              # "" or why the test is n/a
    low: float = math.nan  # t-interval of mean_diff (NaN below 2 units; the value itself
    high: float = math.nan  # when the difference is the same on every unit)


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


def paired_test(a: dict, b: dict, *, confidence: float) -> PairedResult:
    """a, b: unit -> metric (NaN = missing) -> paired t-test and the `confidence` t-interval of
    the mean difference a - b over the units both have."""
    units = sorted((u for u in set(a) & set(b) if np.isfinite(a[u]) and np.isfinite(b[u])),
                   key=repr)
    if len(units) < 2:
        diff = float(a[units[0]] - b[units[0]]) if units else math.nan
        return PairedResult(len(units), diff, math.nan,
                            f"n/a ({len(units)} matched unit(s), need 2)")
    xa = np.array([a[u] for u in units], dtype=float)
    xb = np.array([b[u] for u in units], dtype=float)
    diff = xa - xb
    if np.allclose(diff, diff[0]):
        note = ("n/a (identical results)" if diff[0] == 0
                else "n/a (constant difference over units)")
        d = float(diff.mean())
        return PairedResult(len(units), d, math.nan, note, d, d)
    ci = mean_ci(diff, confidence=confidence)
    p = float(st.ttest_rel(xa, xb).pvalue)
    return PairedResult(len(units), float(diff.mean()), p, "", ci.low, ci.high)


def holm(p_values) -> np.ndarray:
    """p (m,) float, NaN = not tested -> (m,) Holm-adjusted p (NaN kept; the family is the
    finite values): sorted ascending, p_(i) * (m - i + 1), running maximum, capped at 1."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    order = tested[np.argsort(p[tested], kind="stable")]
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        out[index] = running
    return out
