"""Descriptive statistics used for every reported figure (pure Python, no numpy)."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Two-sided 95% Student t critical values by degrees of freedom (1..30); 1.96 beyond.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def stdev(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0 for a single value."""
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def t_critical_95(dof: int) -> float:
    if dof < 1:
        raise ValueError("a confidence interval needs at least two values")
    return _T95[dof - 1] if dof <= len(_T95) else 1.96


def ci95_half_width(values: Sequence[float]) -> float:
    """Half width of the 95% confidence interval of the mean; 0 for a single value."""
    if len(values) < 2:
        return 0.0
    return t_critical_95(len(values) - 1) * stdev(values) / math.sqrt(len(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks
    (the same definition as numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def relative_ci95(values: Sequence[float]) -> float:
    """ci95 half width as a fraction of the mean (inf with fewer than two values)."""
    if len(values) < 2 or mean(values) == 0:
        return math.inf
    return ci95_half_width(values) / abs(mean(values))


def median_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Distribution-free confidence interval (at least 95%) of the median: the order
    statistics x(k) and x(n+1-k) with the largest k for which P(Binomial(n, 1/2) < k)
    is at most 2.5%. Needs six values; with fewer, even [min, max] covers less than 95%."""
    n = len(values)
    if n < 6:
        raise ValueError("a 95% interval of the median needs at least six values")
    below, k = 0, 0
    while True:
        below += math.comb(n, k)
        if below / 2**n > 0.025:
            break
        k += 1
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k]
