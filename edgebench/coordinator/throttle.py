"""Failed authentication, slowed per address: after FAILURES_PER_MINUTE failures from one
address within a minute, its next attempts are refused without being checked until the
oldest failure is a minute old (gRPC: RESOURCE_EXHAUSTED; HTTP: 429), with the seconds to
wait. Guessing a token or an agent's secret then costs a minute per 20 guesses, while a
person who mistyped waits a moment at worst. Kept in memory, per process (each HTTP
worker keeps its own)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

FAILURES_PER_MINUTE = 20
WINDOW_SECONDS = 60.0
MAX_ADDRESSES = 10_000  # the addresses remembered; the stalest are forgotten first


class FailureBudget:
    def __init__(
        self,
        per_window: int = FAILURES_PER_MINUTE,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_window = per_window
        self.window_seconds = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def wait_seconds(self, address: str) -> int:
        """0 when this address may try now; else how long it must wait."""
        failures = self._recent(address)
        if len(failures) < self.per_window:
            return 0
        return max(1, math.ceil(failures[0] + self.window_seconds - self._clock()))

    def failed(self, address: str) -> None:
        self._recent(address).append(self._clock())
        if len(self._failures) > MAX_ADDRESSES:
            stalest = min(self._failures, key=lambda a: self._failures[a][-1])
            del self._failures[stalest]

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.setdefault(address, deque())
        horizon = self._clock() - self.window_seconds
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures


def peer_address(peer: str) -> str:
    """gRPC's peer ("ipv4:10.0.0.5:51234", "ipv6:[::1]:51234") without its port."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1 : rest.find("]")]
    return rest.rpartition(":")[0] or peer
