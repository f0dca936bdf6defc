"""Which queued run an idle device gets: the fair-share ranking, as pure functions over
plain data (no database: tests/unit/test_fairshare.py calls them with lists).

Within the runs a device may take: the highest priority first; within one priority, the
submitter with the fewest runs in flight (grants made in this round count), so that one
huge matrix does not starve everyone else; then the oldest run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Queued:
    """A queued run as a claim sees it (columns only: ORM rows cost most of a claim)."""

    priority: int
    run_id: str
    created_at: datetime
    device_name: str | None  # pinned to this device (an --every copy, or one named device)
    selector_json: str  # "{}" = any device
    backend: str
    failed_on_device_id: str | None = None  # a device it failed on: not that one again


Pools = dict[str, list[Queued]]  # submitter -> their queued runs, best first


def ranked(
    pools: Pools, in_flight: dict[str, int], fits: Callable[[Queued], bool]
) -> list[tuple[str, Queued]]:
    """Per submitter, the first pooled run that `fits` the device; best first."""
    firsts: list[tuple[int, int, datetime, str, Queued]] = []
    for submitter, pool in pools.items():
        row = next((r for r in pool if fits(r)), None)
        if row is not None:
            firsts.append((-row.priority, in_flight.get(submitter, 0), row.created_at,
                           submitter, row))  # fmt: skip
    firsts.sort(key=lambda entry: entry[:3])
    return [(entry[3], entry[4]) for entry in firsts]


def take(pools: Pools, in_flight: dict[str, int], fits: Callable[[Queued], bool]) -> Queued | None:
    """The best run for a device, taken out of its pool and counted in flight (so the
    next device in the same round sees the share move)."""
    best = next(iter(ranked(pools, in_flight, fits)), None)
    if best is None:
        return None
    submitter, row = best
    pools[submitter].remove(row)
    in_flight[submitter] = in_flight.get(submitter, 0) + 1
    return row
