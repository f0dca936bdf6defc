import math

import pytest

from edgebench.measure.stats import ci95_half_width, mean, percentile, stdev, t_critical_95


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
