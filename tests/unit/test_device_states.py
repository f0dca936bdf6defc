"""The device state model (coordinator/tables.py DEVICE_STATES) on a real SQLite file and
a real PostgreSQL server: admission, the operator's states, and what each means for
claims, leases and credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebench.coordinator.jobspec import new_job, plan_runs
from edgebench.coordinator.lifecycle import Claim
from edgebench.coordinator.store import MAX_ATTEMPTS, Store, StoreError
from edgebench.coordinator.tables import Agent, Device, Run, RunState
from edgebench.dashboard import queries
from edgebench.device import HardwareInfo
from tests import lifecycle_ops as ops
from tests.conftest import job_spec

SHA = "d" * 64


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    return Store(url, retry_base_seconds=0.0, fleet_read_seconds=0.0)


def _agent(store: Store, name: str, *, approval: bool = False) -> tuple[Agent, Device]:
    hardware = HardwareInfo.from_flat({"cpu_model": "test", "engines": {"llama_cpp": "0.3.36"}})
    enrollment = store.enroll(token=store.create_enrollment_token(), name=name,
                              hardware=hardware, tags={}, require_approval=approval)  # fmt: skip
    agent = store.authenticate_agent(enrollment.agent_id, enrollment.secret)
    assert agent is not None
    return agent, store.get_device(name)


def _job(store: Store) -> None:
    store.add_artifact(sha256=SHA, filename="m.gguf", size_bytes=10, fmt="gguf")
    spec = job_spec(models=[SHA], n_prompt=[8], n_gen=[3], reps=1)
    store.create_job(new_job(spec), plan_runs(spec, {SHA: "gguf"}), spec.selector)


def _claim(store: Store, agent: Agent, name: str) -> Claim | None:
    device = store.get_device(name)  # as a session would see it after the change
    return ops.claim_run(store, agent=agent, device=device, lease_seconds=60)


def _status(store: Store, name: str) -> str:
    return queries.device_public(store.get_device(name)).status


def test_a_pending_device_waits_for_approval_and_a_rejected_one_is_cut_off(
    store: Store,
) -> None:
    (waiting, _) = _agent(store, "new", approval=True)
    (refused, _) = _agent(store, "bad", approval=True)
    _job(store)
    assert _status(store, "new") == "pending" and _claim(store, waiting, "new") is None
    assert "new is pending (devices approve)" in (
        store.waiting(store.jobs_with_runs()[0][0].id) or ""
    )
    store.approve_device("new")
    assert _claim(store, waiting, "new") is not None
    rejected = store.reject_device("bad")
    assert rejected.admission == "rejected" and _status(store, "bad") == "rejected"
    assert store.authenticate_agent(refused.id, "whatever") is None
    with pytest.raises(StoreError, match="bad was rejected"):
        store.approve_device("bad")
    _agent(store, "later")  # without --require-approval: approved at once
    assert store.get_device("later").admission == "approved"


def test_a_drained_device_finishes_its_run_and_takes_no_more(store: Store) -> None:
    agent, _ = _agent(store, "pi")
    _job(store)
    _job(store)
    held = _claim(store, agent, "pi")
    assert held is not None
    drained = store.set_operator_state("pi", "drained", "by admin: new fan")
    assert drained.operator_state == "drained" and _status(store, "pi") == "drained"
    assert ops.extend_lease(store, agent_id=agent.id, run_id=held.run.id,
                            epoch=held.run.lease_epoch, lease_seconds=60)  # fmt: skip
    assert _claim(store, agent, "pi") is None
    store.resume_device("pi")
    assert store.get_device("pi").operator_note == "" and _claim(store, agent, "pi") is not None


def test_maintenance_hands_the_run_back_now(store: Store) -> None:
    agent, _ = _agent(store, "pi")
    other, _ = _agent(store, "spare")
    _job(store)
    held = _claim(store, agent, "pi")
    assert held is not None
    store.set_operator_state("pi", "maintenance", "by admin: reflashing")
    public = queries.device_public(store.get_device("pi"))
    assert (public.status, public.operator_state) == ("maintenance", "maintenance")
    assert public.operator_note == "by admin: reflashing"
    (run,) = store.runs_of(held.run.job_id)
    assert run.state == RunState.QUEUED  # its lease ended with the state change
    assert _claim(store, agent, "pi") is None
    again = _claim(store, other, "spare")
    assert again is not None and again.run.id == held.run.id
    with pytest.raises(StoreError, match="not one of: active, drained, maintenance"):
        store.set_operator_state("pi", "asleep", "")


def test_the_public_states_keep_each_axis_apart(store: Store) -> None:
    _agent(store, "pi", approval=True)
    store.set_operator_state("pi", "drained", "by admin")
    public = queries.device_public(store.get_device("pi"))
    assert public.status == "pending"  # the weightiest first
    assert (public.admission, public.operator_state, public.automatic, public.liveness) == (
        "pending",
        "drained",
        [],
        "offline",
    )


def test_jobs_retry_queues_failed_and_dead_runs_again(store: Store) -> None:
    agent, _ = _agent(store, "pi")
    _job(store)
    held = _claim(store, agent, "pi")
    assert held is not None
    assert ops.fail_run(store, agent_id=agent.id, run_id=held.run.id,
                        epoch=held.run.lease_epoch, error="out of memory")  # fmt: skip
    (failed,) = store.runs_of(held.run.job_id)
    assert failed.state == RunState.FAILED  # no other device: final
    assert store.retry_job(held.run.job_id[:8]) == (held.run.job_id, 1)
    (again,) = store.runs_of(held.run.job_id)
    assert (again.state, again.attempts, again.error) == (RunState.QUEUED, 0, "")
    assert store.retry_job(held.run.job_id, held.run.id) == (held.run.job_id, 0)
    assert _claim(store, agent, "pi") is not None


def test_a_failure_on_the_last_attempt_is_final_even_with_another_device(store: Store) -> None:
    """Found by the lease property test: a run whose leases had expired twice and then
    failed was retried elsewhere on a fourth attempt."""
    agent, _ = _agent(store, "pi")
    _agent(store, "spare")
    _job(store)
    held = _claim(store, agent, "pi")
    assert held is not None
    with store.writing() as s:
        run = s.get(Run, held.run.id)
        assert run is not None
        run.attempts = MAX_ATTEMPTS
        s.add(run)
    assert ops.fail_run(store, agent_id=agent.id, run_id=held.run.id,
                        epoch=held.run.lease_epoch, error="crashed")  # fmt: skip
    (final,) = store.runs_of(held.run.job_id)
    assert final.state == RunState.FAILED and final.error == "crashed"
