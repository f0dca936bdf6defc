"""Sustained-mode maths: throughput per time window and the stability ratio."""

from __future__ import annotations

from collections.abc import Sequence

# 3DMark's stress-test rule: a device whose slowest window is below 97% of its fastest
# is throttling.
STABLE_AT = 0.97


def window_throughputs(stamps_ns: Sequence[int], start_ns: int, window_ns: int) -> list[float]:
    """Tokens per second in each whole window of `window_ns` from `start_ns`; a token
    belongs to the window its timestamp falls in, and a trailing partial window is dropped."""
    if window_ns <= 0:
        raise ValueError("window must be positive")
    if not stamps_ns:
        return []
    n_windows = (max(stamps_ns) - start_ns) // window_ns
    counts = [0] * n_windows
    for stamp in stamps_ns:
        index = (stamp - start_ns) // window_ns
        if 0 <= index < n_windows:
            counts[index] += 1
    return [count / (window_ns / 1e9) for count in counts]


def stability(throughputs: Sequence[float]) -> float:
    """Slowest window / fastest window (1.0 = perfectly steady)."""
    if not throughputs or max(throughputs) <= 0:
        raise ValueError("stability needs at least one window with tokens")
    return min(throughputs) / max(throughputs)
