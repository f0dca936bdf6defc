import math

import pytest

from edgebench.measure.stats import (
    ci95_half_width,
    mean,
    median_ci95,
    percentile,
    stdev,
    t_critical_95,
)


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # sorted: 1 2 3 4
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 90) == pytest.approx(3.7)  # rank 2.7 -> 3 + 0.7
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_mean_stdev_and_ci_by_hand() -> None:
    values = [10.0, 12.0, 14.0]
    assert mean(values) == 12.0
    assert stdev(values) == 2.0  # sqrt((4 + 0 + 4) / 2)
    assert ci95_half_width(values) == pytest.approx(4.303 * 2.0 / math.sqrt(3))
    assert stdev([5.0]) == 0.0 and ci95_half_width([5.0]) == 0.0


def test_t_critical_values() -> None:
    assert t_critical_95(1) == 12.706
    assert t_critical_95(30) == 2.042
    assert t_critical_95(500) == 1.96
    with pytest.raises(ValueError):
        t_critical_95(0)


def test_median_ci95_takes_order_statistics_by_the_binomial_by_hand() -> None:
    # n = 7: P(B <= 0) = 1/128 <= 2.5% < P(B <= 1) = 8/128, so k = 1: [min, max].
    assert median_ci95([7.0, 1.0, 6.0, 2.0, 5.0, 3.0, 4.0]) == (1.0, 7.0)
    # n = 15: P(B <= 3) = 576/32768 = 1.8% <= 2.5% < P(B <= 4) = 1941/32768, so k = 4.
    assert median_ci95([float(v) for v in range(15, 0, -1)]) == (4.0, 12.0)
    # n = 6: 1/64 = 1.6% in each tail with [min, max].
    assert median_ci95([3.0, 1.0, 2.0, 6.0, 5.0, 4.0]) == (1.0, 6.0)
    with pytest.raises(ValueError, match="six values"):
        median_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
