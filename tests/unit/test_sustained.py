import pytest

from edgebench.measure.stats import relative_ci95
from edgebench.measure.sustained import stability, window_throughputs

S = 1_000_000_000


def test_windows_count_tokens_by_their_time() -> None:
    # 2 tokens in [0,1 s), 4 in [1,2 s), 1 in [2,3 s); the last one at 3.5 s is in a
    # partial window and dropped.
    stamps = [int(t * S) for t in (0.1, 0.9, 1.0, 1.2, 1.5, 1.99, 2.5, 3.5)]
    assert window_throughputs(stamps, 0, S) == [2.0, 4.0, 1.0]
    assert window_throughputs([int(0.5 * S)], 0, S) == []
    assert stability([2.0, 4.0, 1.0]) == 0.25
    with pytest.raises(ValueError):
        window_throughputs(stamps, 0, 0)
    with pytest.raises(ValueError):
        stability([])


def test_relative_ci() -> None:
    assert relative_ci95([100.0]) == float("inf")
    assert relative_ci95([100.0, 100.0, 100.0]) == 0.0
    assert relative_ci95([98.0, 100.0, 102.0]) == pytest.approx(4.303 * 2 / 3**0.5 / 100)
