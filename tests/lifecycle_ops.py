"""The run lifecycle, one call at a time, for tests: each opens a write transaction
(`Store.writing()`, as the writer threads do for a batch) and runs the function that
production runs (edgebench/coordinator/lifecycle.py) inside it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import col, select

from edgebench.coordinator import lifecycle
from edgebench.coordinator.lifecycle import Claim, ClaimRequest, LeaseTouch, ResultIn
from edgebench.coordinator.store import Store, device_seen
from edgebench.coordinator.tables import Agent, Device, Result
from edgebench.device import HardwareInfo


def claim_runs(
    store: Store, requests: list[ClaimRequest], lease_seconds: int
) -> list[Claim | None]:
    with store.writing() as s:
        return lifecycle.claim_runs(s, requests, lease_seconds, store.retry_base_seconds)


def claim_run(
    store: Store, *, agent: Agent, device: Device, lease_seconds: int, request_id: str | None = None
) -> Claim | None:
    return claim_runs(store, [ClaimRequest(agent, device, request_id)], lease_seconds)[0]


def answer_work_request(store: Store, agent_id: str, request_id: str) -> tuple[Claim | None, int]:
    with store.writing() as s:
        answers, released = lifecycle.answer_requests(
            s, [(agent_id, request_id)], store.retry_base_seconds
        )
        return lifecycle.claims_of(s, answers)[0], released


def release_leases(store: Store, agent_id: str) -> int:
    with store.writing() as s:
        return lifecycle.release_leases(s, [agent_id], store.retry_base_seconds)


def extend_lease(
    store: Store, *, agent_id: str, run_id: str, epoch: int, lease_seconds: int,
    phase: str | None = None, rep: int | None = None,
) -> bool:  # fmt: skip
    touch = LeaseTouch(agent_id, run_id, epoch, phase, rep)
    with store.writing() as s:
        return lifecycle.touch_leases(s, [touch], lease_seconds)[0]


def store_result(
    store: Store, *, agent_id: str, result_id: str, run_id: str, epoch: int,
    values: dict[str, Any], timings: bytes,
) -> None:  # fmt: skip
    item = ResultIn(agent_id, result_id, run_id, epoch, values, timings)
    with store.writing() as s:
        (refused,) = lifecycle.store_results(s, [item])
    if refused is not None:
        raise refused


def fail_run(
    store: Store, *, agent_id: str, run_id: str, epoch: int, error: str, kind: str = "device"
) -> bool:
    with store.writing() as s:
        return lifecycle.fail_run(s, agent_id=agent_id, run_id=run_id, epoch=epoch, error=error,
                                  kind=kind)  # fmt: skip


def reap_expired(store: Store) -> int:
    with store.writing() as s:
        return lifecycle.reap_expired(s, store.retry_base_seconds)


def agent_seen(store: Store, agent: Agent, hardware: HardwareInfo | None = None) -> Device:
    with store.writing() as s:
        return device_seen(s, agent, hardware)


def heard_from(store: Store, seen: dict[str, tuple[str, datetime]]) -> None:
    with store.writing() as s:
        lifecycle.heard_from(s, seen)


def count(store: Store, table: Any) -> int:
    from sqlmodel import func, select

    with store.session() as s:
        return int(s.exec(select(func.count()).select_from(table)).one())


def results_of(store: Store, job_id: str) -> list[Any]:
    """The stored result rows of one job (the tables as they are, for invariants)."""
    with store.session() as s:
        return list(s.exec(select(Result).where(col(Result.job_id) == job_id)))
