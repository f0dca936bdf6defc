"""The store on a real SQLite file and a real PostgreSQL server: same semantics, same tests."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, select, text
from sqlmodel import col

from edgebench.coordinator import lifecycle
from edgebench.coordinator.jobspec import PlannedRun, new_job, plan_runs
from edgebench.coordinator.lifecycle import Claim, LeaseTouch, ResultIn
from edgebench.coordinator.store import (
    MAX_ATTEMPTS,
    Ambiguous,
    ClaimRequest,
    NotFound,
    Store,
    StoreError,
)
from edgebench.coordinator.tables import Agent, Device, Job, Result, Run, RunState, utcnow
from edgebench.dashboard import listing
from edgebench.dashboard.models import ResultQuery
from edgebench.device import HardwareInfo
from edgebench.measure.packing import pack_reps
from edgebench.measure.record import RepTiming, summarize
from tests import lifecycle_ops as ops
from tests.conftest import job_spec

SHA = "b" * 64
ENGINES = {"llama_cpp": "0.3.36"}  # a device that can run the runs these tests queue


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(db_url: str) -> Store:
    return Store(db_url, retry_base_seconds=0.0, fleet_read_seconds=0.0)


def _agent(
    store: Store, name: str, tags: dict[str, str] | None = None, **hardware: object
) -> tuple[Agent, Device]:
    enrollment = store.enroll(
        token=store.create_enrollment_token(),
        name=name,
        hardware=HardwareInfo.from_flat({"cpu_model": "test", "engines": ENGINES, **hardware}),
        tags=tags or {},
    )
    agent = store.authenticate_agent(enrollment.agent_id, enrollment.secret)
    assert agent is not None
    return agent, store.get_device(name)


def _job(store: Store, device: str | None = None, n_gen: int = 3, **options: Any) -> Job:
    store.add_artifact(sha256=SHA, filename="m.gguf", size_bytes=10, fmt="gguf")
    options.setdefault("n_prompt", [8])
    spec = job_spec(models=[SHA], n_gen=[n_gen], reps=1, device=device, **options)
    job, _, _ = store.create_job(new_job(spec), plan_runs(spec, {SHA: "gguf"}), spec.selector)
    return job


def _two_leases(store: Store) -> tuple[tuple[Agent, Claim], tuple[Agent, Claim]]:
    """Two jobs, and a run of each leased by an agent of its own."""
    _job(store, n_gen=3)
    _job(store, n_gen=4)
    (a, a_device), (b, b_device) = _agent(store, "dev0"), _agent(store, "dev1")
    first = ops.claim_run(store, agent=a, device=a_device, lease_seconds=60)
    second = ops.claim_run(store, agent=b, device=b_device, lease_seconds=60)
    assert first is not None and second is not None
    return (a, first), (b, second)


def _values() -> tuple[dict[str, object], bytes]:
    reps = [RepTiming(prefill_ns=1000, token_ns=(2000, 3000, 4500))]
    result = summarize(
        reps,
        backend="llama_cpp",
        variant="F32",
        model_sha256=SHA,
        threads=1,
        n_prompt=8,
        load_ms=1.0,
        peak_rss_mb=50.0,
    )
    return result.fields(), pack_reps(reps)


def test_enrollment_token_is_single_use_and_expires(store: Store) -> None:
    token = store.create_enrollment_token()
    store.enroll(token=token, name="a", hardware=HardwareInfo(), tags={})
    with pytest.raises(StoreError, match="used up or revoked"):
        store.enroll(token=token, name="b", hardware=HardwareInfo(), tags={})
    expired = store.create_enrollment_token(expires_at=utcnow() - timedelta(seconds=1))
    with pytest.raises(StoreError, match="expired"):
        store.enroll(token=expired, name="c", hardware=HardwareInfo(), tags={})
    assert [d.name for d in store.list_devices()] == ["a"]
    assert store.authenticate_agent(store.list_devices()[0].id, "wrong") is None


def test_admin_token_is_created_once_and_checked(store: Store) -> None:
    created = store.ensure_admin_token(None)
    assert created and store.is_admin(created) and not store.is_admin("nope")
    assert store.ensure_admin_token(None) is None  # not shown a second time
    store.ensure_admin_token("given")
    assert store.is_admin("given") and not store.is_admin(created)


def test_concurrent_claims_lease_a_run_once(store: Store) -> None:
    _job(store)
    agents = [_agent(store, f"dev{i}") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        claims = list(
            pool.map(
                lambda ad: ops.claim_run(store, agent=ad[0], device=ad[1], lease_seconds=60), agents
            )
        )
    assert sum(c is not None for c in claims) == 1


def test_a_run_locked_by_another_coordinator_is_passed_over(postgres_url: str) -> None:
    """PostgreSQL: the run a round planned is locked by another coordinator's claim (FOR
    UPDATE SKIP LOCKED), so the round grants the next best one instead, in the same call."""
    store = Store(postgres_url)
    runs = [*store.runs_of(_job(store, n_gen=3).id), *store.runs_of(_job(store, n_gen=4).id)]
    asker = _agent(store, "dev0")
    other = store.engine.connect()
    try:
        with other.begin():
            locked = other.execute(
                select(col(Run.id)).where(col(Run.id) == runs[0].id).with_for_update()
            ).scalar_one()
            claim = ops.claim_run(store, agent=asker[0], device=asker[1], lease_seconds=60)
            assert claim is not None and claim.run.id == runs[1].id != locked
    finally:
        other.close()
    assert [run.state for run in store.runs_of(runs[0].job_id)] == [RunState.QUEUED]
    store.close()


def test_named_device_only(store: Store) -> None:
    other, other_device = _agent(store, "dev0")
    named, named_device = _agent(store, "dev1")
    _job(store, device="dev1")
    assert ops.claim_run(store, agent=other, device=other_device, lease_seconds=60) is None
    assert ops.claim_run(store, agent=named, device=named_device, lease_seconds=60) is not None


def _claims(store: Store, agent: tuple[Agent, Device], request_id: str | None = None) -> Run | None:
    claim = ops.claim_run(
        store, agent=agent[0], device=agent[1], lease_seconds=60, request_id=request_id
    )
    return None if claim is None else claim.run


GIB = 1024**3


@pytest.fixture
def fleet(store: Store) -> dict[str, tuple[Agent, Device]]:
    return {
        "pi": _agent(store, "pi", {"room": "lab"}, arch="aarch64", ram_bytes=8 * GIB),
        "gpu": _agent(store, "gpu", {}, arch="x86_64", accelerator="cuda", ram_bytes=64 * GIB),
        "laptop": _agent(store, "laptop", {"room": "home"}, arch="x86_64", ram_bytes=16 * GIB),
    }


@pytest.mark.parametrize(
    ("selector", "takers"),
    [
        ({"tags": {"room": "lab"}}, {"pi"}),
        ({"tags": {"room": "lab", "shelf": "2"}}, set()),
        ({"arch": "x86_64"}, {"gpu", "laptop"}),
        ({"accelerator": "cuda"}, {"gpu"}),
        ({"min_memory_gb": 12}, {"gpu", "laptop"}),
        ({"devices": ["pi", "laptop"]}, {"pi", "laptop"}),
        ({"devices": ["laptop", "gpu"], "min_memory_gb": 32}, {"gpu"}),
        ({}, {"pi", "gpu", "laptop"}),
    ],
)
def test_any_one_matching_device_takes_the_run(
    store: Store,
    fleet: dict[str, tuple[Agent, Device]],
    selector: dict[str, Any],
    takers: set[str],
) -> None:
    _job(store, selector=selector)
    for name, agent in fleet.items():
        claimed = _claims(store, agent)
        assert (claimed is not None) == (name in takers), name
        if claimed is not None:  # give it back (no backoff here) for the next device to try
            ops.release_leases(store, agent[0].id)


def test_every_matching_device_gets_its_own_copy(
    store: Store, fleet: dict[str, tuple[Agent, Device]]
) -> None:
    job = _job(store, selector={"arch": "x86_64", "every": True})
    assert sorted(r.device_name or "" for r in store.runs_of(job.id)) == ["gpu", "laptop"]
    assert _claims(store, fleet["pi"]) is None
    for name in ("gpu", "laptop"):
        run = _claims(store, fleet[name])
        assert run is not None and run.device_name == name
        assert _claims(store, fleet[name]) is None  # the other copy is not its to take
    with pytest.raises(StoreError, match="no enrolled device matches: arch riscv64"):
        _job(store, selector={"arch": "riscv64", "every": True})
    assert len(store.jobs_with_runs()[0]) == 1


def test_higher_priority_goes_first(store: Store) -> None:
    agent = _agent(store, "dev0")
    _job(store, n_gen=3)
    urgent = _job(store, n_gen=4, priority=5)
    first = _claims(store, agent)
    assert first is not None and first.job_id == urgent.id


def test_fair_share_between_submitters(store: Store) -> None:
    """Alice's big matrix was queued first; Bob's one run still goes out second."""
    store.add_artifact(sha256=SHA, filename="m.gguf", size_bytes=10, fmt="gguf")
    big = job_spec(models=[SHA], n_prompt=list(range(1, 11)), submitter="alice")
    store.create_job(new_job(big), plan_runs(big, {SHA: "gguf"}), big.selector)
    _job(store, submitter="bob")
    agents = [_agent(store, f"dev{i}") for i in range(3)]
    order = [_claims(store, agent) for agent in agents]
    assert [run.submitter if run else None for run in order] == ["alice", "bob", "alice"]


def test_one_dispatch_round_shares_fairly_and_honours_selectors(store: Store) -> None:
    store.add_artifact(sha256=SHA, filename="m.gguf", size_bytes=10, fmt="gguf")
    big = job_spec(models=[SHA], n_prompt=list(range(1, 11)), submitter="alice")
    store.create_job(new_job(big), plan_runs(big, {SHA: "gguf"}), big.selector)
    _job(store, submitter="bob")
    _job(store, submitter="cy", selector={"tags": {"room": "lab"}})
    agents = [_agent(store, f"dev{i}") for i in range(3)] + [_agent(store, "pi", {"room": "lab"})]
    requests = [ClaimRequest(agent, device, f"req-{i}") for i, (agent, device) in enumerate(agents)]
    claims = ops.claim_runs(store, requests, lease_seconds=60)
    assert [c.run.submitter if c else None for c in claims] == ["alice", "bob", "alice", "cy"]
    assert [c.run.lease_request_id if c else None for c in claims] == [
        r.request_id for r in requests
    ]
    assert len({c.run.id for c in claims if c}) == 4


def test_a_round_takes_priority_then_fair_share_then_age_across_levels(store: Store) -> None:
    """Two submitters with runs at two priority levels each, one round of five requests:
    both levels of every submitter come from the pool in index order (priority
    descending, oldest first), and each pick weighs priority, then runs in flight."""
    alice_low = _job(store, submitter="alice", n_prompt=[1, 2])
    bob_high = _job(store, submitter="bob", priority=5)
    alice_high = _job(store, submitter="alice", priority=5, n_prompt=[1, 2])
    bob_low = _job(store, submitter="bob")
    agents = [_agent(store, f"dev{i}") for i in range(5)]
    requests = [ClaimRequest(agent, device, f"req-{i}") for i, (agent, device) in enumerate(agents)]
    claims = ops.claim_runs(store, requests, lease_seconds=60)
    jobs = [c.job.id if c else None for c in claims]
    assert jobs == [bob_high.id, alice_high.id, alice_high.id, bob_low.id, alice_low.id]


def test_a_retried_work_request_gets_the_same_lease(store: Store) -> None:
    _job(store)
    _job(store)
    agent = _agent(store, "dev0")
    first = _claims(store, agent, request_id="req-1")
    assert first is not None
    again, released = ops.answer_work_request(store, agent[0].id, "req-1")
    assert again is not None and released == 0
    assert (again.run.id, again.run.lease_epoch) == (first.id, first.lease_epoch)
    assert ops.answer_work_request(store, _agent(store, "dev1")[0].id, "req-1") == (None, 0)


def test_new_work_request_releases_a_lease_the_agent_forgot(store: Store) -> None:
    _job(store)
    agent = _agent(store, "dev0")
    held = _claims(store, agent, request_id="before-restart")
    assert held is not None
    assert ops.answer_work_request(store, agent[0].id, "after-restart") == (None, 1)
    (run,) = store.runs_of(held.job_id)
    assert run.state == RunState.QUEUED and run.attempts == 1 and run.agent_id is None
    assert ops.answer_work_request(store, agent[0].id, "after-restart") == (None, 0)


def test_a_round_leaves_alone_a_run_whose_result_is_being_written(store: Store) -> None:
    """The agent sent its result, then asked for more work: the round that answers runs
    while the result is still being written, and must not take that run back."""
    _job(store, n_prompt=[1, 2])
    agent, device = _agent(store, "dev0")
    (first,) = ops.claim_runs(store, [ClaimRequest(agent, device, "req-1")], lease_seconds=60)
    assert first is not None
    finishing = frozenset({first.run.id})
    (second,) = ops.claim_runs(
        store, [ClaimRequest(agent, device, "req-2", finishing=finishing)], lease_seconds=60
    )
    assert second is not None and second.run.id != first.run.id
    values, blob = _values()
    values = {**values, "n_prompt": first.run.n_prompt}  # the run's own test
    ops.store_result(store, agent_id=agent.id, result_id="r1", run_id=first.run.id,
                       epoch=first.run.lease_epoch, values=values, timings=blob)  # fmt: skip
    states = {run.id: run.state for run in store.runs_of(first.job.id)}
    assert states == {first.run.id: RunState.SUCCEEDED, second.run.id: RunState.LEASED}


def test_create_job_refuses_unknown_model_or_device_and_stores_nothing(store: Store) -> None:
    unknown = PlannedRun("c" * 64, "llama_cpp", "", 0, 1, 2)
    with pytest.raises(StoreError, match="never uploaded"):
        store.create_job(Job(spec_json="{}"), [unknown])
    with pytest.raises(StoreError, match="no device"):
        _job(store, device="ghost")
    assert ops.count(store, Job) == 0 and ops.count(store, Run) == 0


def test_result_is_idempotent_and_fenced(store: Store) -> None:
    _job(store)
    agent, device = _agent(store, "dev0")
    claim = ops.claim_run(store, agent=agent, device=device, lease_seconds=60)
    assert claim is not None
    values, blob = _values()
    run_id, epoch = claim.run.id, claim.run.lease_epoch
    with pytest.raises(StoreError, match="no longer current"):
        ops.store_result(
            store,
            agent_id=agent.id,
            result_id="r1",
            run_id=run_id,
            epoch=epoch + 1,
            values=values,
            timings=blob,
        )
    ops.store_result(
        store,
        agent_id=agent.id,
        result_id="r1",
        run_id=run_id,
        epoch=epoch,
        values=values,
        timings=blob,
    )
    ops.store_result(
        store,
        agent_id=agent.id,
        result_id="r1",
        run_id=run_id,
        epoch=epoch,
        values=values,
        timings=blob,
    )  # a replay: accepted, still one row
    assert ops.count(store, Result) == 1
    changed = {**values, "decode_tps": 1.0}
    with pytest.raises(StoreError, match="other content"):
        ops.store_result(
            store,
            agent_id=agent.id,
            result_id="r1",
            run_id=run_id,
            epoch=epoch,
            values=changed,
            timings=blob,
        )
    assert store.runs_of(claim.job.id)[0].state == RunState.SUCCEEDED


def test_implausible_result_is_refused_and_run_stays_open(store: Store) -> None:
    _job(store)
    agent, device = _agent(store, "dev0")
    claim = ops.claim_run(store, agent=agent, device=device, lease_seconds=60)
    assert claim is not None
    values, blob = _values()
    with pytest.raises(StoreError, match="implausible"):
        ops.store_result(
            store,
            agent_id=agent.id,
            result_id="r2",
            run_id=claim.run.id,
            epoch=claim.run.lease_epoch,
            values={**values, "ttft_ms": -3.0},
            timings=blob,
        )
    assert ops.count(store, Result) == 0
    assert store.runs_of(claim.job.id)[0].state == RunState.LEASED


def test_expired_leases_are_requeued_then_failed(store: Store) -> None:
    job = _job(store)
    agent, device = _agent(store, "dev0")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claim = ops.claim_run(
            store, agent=agent, device=device, lease_seconds=-1
        )  # already expired
        assert claim is not None and claim.run.attempts == attempt
        assert (
            ops.extend_lease(
                store,
                agent_id=agent.id,
                run_id=claim.run.id,
                epoch=claim.run.lease_epoch - 1,
                lease_seconds=-1,
            )
            is False
        )
        assert ops.reap_expired(store) == 1
    run = store.runs_of(job.id)[0]
    assert (
        run.state == RunState.DEAD and run.error == f"lease expired on attempt 3 of {MAX_ATTEMPTS}"
    )
    assert ops.claim_run(store, agent=agent, device=device, lease_seconds=60) is None


def test_cancel_reports_held_runs(store: Store) -> None:
    job = _job(store)
    agent, device = _agent(store, "dev0")
    claim = ops.claim_run(store, agent=agent, device=device, lease_seconds=60)
    assert claim is not None
    assert store.cancel_job(job.id).held == [(claim.run.id, agent.id)]
    assert store.runs_of(job.id)[0].state == RunState.CANCELLED
    assert not ops.extend_lease(
        store, agent_id=agent.id, run_id=claim.run.id, epoch=claim.run.lease_epoch, lease_seconds=60
    )


def test_cancel_leaves_finished_runs_and_their_results_alone(store: Store) -> None:
    job = _job(store, n_prompt=[8, 16])  # two runs
    agent, device = _agent(store, "dev0")
    claim = ops.claim_run(store, agent=agent, device=device, lease_seconds=60)
    assert claim is not None
    values, blob = _values()
    ops.store_result(store, agent_id=agent.id, result_id="r1", run_id=claim.run.id,
                       epoch=claim.run.lease_epoch, values=values, timings=blob)  # fmt: skip
    assert store.cancel_job(job.id[:8]).runs == 1  # by a prefix, as the CLI prints it
    states = {run.id: run.state for run in store.runs_of(job.id)}
    assert states[claim.run.id] == RunState.SUCCEEDED and ops.count(store, Result) == 1
    assert sorted(states.values()) == [RunState.CANCELLED, RunState.SUCCEEDED]
    again = store.cancel_job(job.id)
    assert again.runs == 0 and again.held == []


def test_ids_are_taken_by_a_unique_prefix_and_names_work_where_ids_do(store: Store) -> None:
    store.add_artifact(sha256=SHA, filename="m.gguf", size_bytes=10, fmt="gguf")
    spec = job_spec(models=[SHA], n_prompt=[8], n_gen=[3], reps=1)
    for job_id in ("abcd1000-0000-4000-8000-000000000000", "abcd2000-0000-4000-8000-000000000000"):
        job = new_job(spec)
        job.id = job_id  # two jobs whose ids share a prefix
        store.create_job(job, plan_runs(spec, {SHA: "gguf"}), spec.selector)
    assert store.get_job("abcd1").id == "abcd1000-0000-4000-8000-000000000000"
    with pytest.raises(Ambiguous, match=r"'abcd' is ambiguous: it starts abcd1.*, abcd2"):
        store.get_job("abcd")
    for unknown in ("abc", "zzzz", "e7c4283a", "'; DROP TABLE job; --", "%", "a_cd"):
        with pytest.raises(NotFound):
            store.get_job(unknown)
    _, device = _agent(store, "dev0")
    assert store.get_device("dev0").id == device.id == store.get_device(device.id[:6]).id
    assert listing.results_page(store, ResultQuery(device="dev0")).total == 0
    with pytest.raises(NotFound, match="no device 'ghost'"):
        listing.results_page(store, ResultQuery(device="ghost"))
    with pytest.raises(NotFound, match="no job 'nope'"):
        listing.results_page(store, ResultQuery(job="nope"))


def test_requeued_runs_wait_out_their_backoff(db_url: str) -> None:
    store = Store(db_url, retry_base_seconds=30.0)
    _job(store)
    agent, device = _agent(store, "dev0")
    assert ops.claim_run(store, agent=agent, device=device, lease_seconds=-1) is not None
    before_reap = utcnow()
    assert ops.reap_expired(store) == 1
    run = store.jobs_with_runs()[0][0]
    queued = store.runs_of(run.id)[0]
    assert queued.state == RunState.QUEUED and queued.not_before is not None
    waited = (queued.not_before - before_reap).total_seconds()
    assert 15 <= waited <= 46  # 30 s x [0.5, 1.5), from the moment of the reap
    assert ops.claim_run(store, agent=agent, device=device, lease_seconds=60) is None


def test_fifty_concurrent_claimers_never_lease_a_run_twice(db_url: str) -> None:
    url = db_url
    setup = Store(url)
    setup.add_artifact(sha256=SHA, filename="m.gguf", size_bytes=10, fmt="gguf")
    spec = job_spec(models=[SHA], n_prompt=list(range(1, 11)), n_gen=[2, 3], reps=1)
    setup.create_job(Job(spec_json=spec.model_dump_json()), plan_runs(spec, {SHA: "gguf"}))
    claimers = [_agent(setup, f"dev{i}") for i in range(50)]

    def claim_all(agent_device: tuple[Agent, Device]) -> list[str]:
        store = Store(url)  # its own engine and connections, like another process
        won = []
        while (claim := ops.claim_run(store, agent=agent_device[0], device=agent_device[1],
                                        lease_seconds=60)) is not None:  # fmt: skip
            won.append(claim.run.id)
        return won

    with ThreadPoolExecutor(50) as pool:
        leased = [run for won in pool.map(claim_all, claimers) for run in won]
    assert len(leased) == len(set(leased)) == 20


def test_migrations_build_exactly_the_tables_the_code_uses(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    from edgebench.coordinator import schema

    store = Store(db_url)  # upgrades an empty database to the newest revision
    assert schema.current_revision(store.engine) == schema.head_revision()
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []
    Store(db_url)  # a second start finds it current and changes nothing


def test_a_database_from_a_newer_edgebench_is_refused(db_url: str) -> None:
    from sqlalchemy import text

    from edgebench.coordinator.schema import SchemaError

    store = Store(db_url)
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    with pytest.raises(SchemaError, match="revision f00d, which this edgebench does not know"):
        Store(db_url)


def test_coordinators_starting_together_on_an_empty_database_all_come_up(db_url: str) -> None:
    """Separate processes (alembic's in-process lock cannot help there) migrate at once."""
    import subprocess
    import sys

    starters = [
        subprocess.Popen(
            [sys.executable, "-c", "import sys; from edgebench.coordinator.store import Store; "
             "Store(sys.argv[1])", db_url],
            stderr=subprocess.PIPE, text=True,
        )
        for _ in range(4)
    ]  # fmt: skip
    failures = [p.stderr.read() for p in starters if p.wait(timeout=120) != 0]  # type: ignore[union-attr]
    assert failures == []
    from edgebench.coordinator import schema

    assert schema.current_revision(Store(db_url).engine) == schema.head_revision()


def test_an_older_schema_is_upgraded_keeping_its_rows(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import create_engine, text

    from edgebench.coordinator import schema

    engine = create_engine(db_url)
    config = schema._config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(text("INSERT INTO setting (key, value) VALUES ('kept', 'yes')"))
    store = Store(db_url)
    assert schema.current_revision(store.engine) == schema.head_revision()
    with store.engine.connect() as connection:
        kept = connection.execute(text("SELECT value FROM setting WHERE key = 'kept'"))
        assert kept.scalar() == "yes"


def test_one_call_touches_many_leases_and_tells_the_stale_ones(store: Store) -> None:
    """The writer thread sends every heartbeat and progress of a batch in one call."""
    (a, first), (b, second) = _two_leases(store)
    run, epoch = first.run.id, first.run.lease_epoch
    touches = [
        LeaseTouch(a.id, run, epoch),  # heartbeat
        LeaseTouch(a.id, run, epoch, "measuring", 2),  # progress of the same run
        LeaseTouch(a.id, run, epoch + 1),  # an epoch that was never granted
        LeaseTouch(b.id, run, epoch),  # another agent naming a run it does not hold
        LeaseTouch(b.id, second.run.id, second.run.lease_epoch, "loading"),
    ]
    with store.writing() as s:
        assert lifecycle.touch_leases(s, [], 60) == []
        assert lifecycle.touch_leases(s, touches, 60) == [True, True, False, False, True]
    runs = {r.id: r for job in store.jobs_with_runs()[0] for r in store.runs_of(job.id)}
    assert (runs[run].state, runs[run].phase, runs[run].rep) == (RunState.RUNNING, "measuring", 2)
    assert (runs[second.run.id].phase, runs[second.run.id].rep) == ("loading", 0)
    assert runs[run].started_at is not None


def test_one_call_stores_many_results_each_judged_alone(store: Store) -> None:
    (a, first), (b, second) = _two_leases(store)
    values, blob = _values()

    def result(result_id: str, claim: Claim, agent: Agent, **changed: object) -> ResultIn:
        run = claim.run
        return ResultIn(agent.id, result_id, run.id, run.lease_epoch, {**values, **changed}, blob)

    items = [
        result("r1", first, a),
        result("r1", first, a),  # the same result twice in one batch: one row
        result("r2", first, a),  # another result for a run just finished: stale
        result("r1", first, a, decode_tps=1.0),  # the same id, other content
        result("r3", second, b, ttft_ms=-1.0),  # implausible
        result("r4", second, a),  # not this agent's lease
    ]
    with store.writing() as s:
        outcomes = lifecycle.store_results(s, items)
    assert [type(o).__name__ for o in outcomes] == [
        "NoneType", "NoneType", "StaleLease", "Conflict", "StoreError", "StaleLease",
    ]  # fmt: skip
    assert [r.id for r in listing.results_page(store, ResultQuery()).items] == ["r1"]
    states = {r.id: r.state for job in store.jobs_with_runs()[0] for r in store.runs_of(job.id)}
    assert states[first.run.id] == RunState.SUCCEEDED and states[second.run.id] == RunState.LEASED


def test_a_run_deep_in_the_queue_still_reaches_the_one_device_it_fits(store: Store) -> None:
    """A round looks at a few queued runs first; a device that none of them fits gets a
    second, deeper look."""
    store.add_artifact(sha256=SHA, filename="m.gguf", size_bytes=10, fmt="gguf")
    x86_only = job_spec(
        models=[SHA], n_prompt=[1, 2, 3, 4], n_gen=[2, 3, 4], selector={"arch": "x86_64"}
    )
    store.create_job(new_job(x86_only), plan_runs(x86_only, {SHA: "gguf"}), x86_only.selector)
    anywhere = _job(store)
    pi = _agent(store, "pi", arch="aarch64")
    claimed = _claims(store, pi)
    assert claimed is not None and claimed.job_id == anywhere.id


def test_in_flight_counts_are_counted_again_after_their_refresh(store: Store) -> None:
    """A dispatcher counts runs in flight once a second and adds its own grants between."""
    store.add_artifact(sha256=SHA, filename="m.gguf", size_bytes=10, fmt="gguf")
    for submitter in ("alice", "bob"):
        spec = job_spec(models=[SHA], n_prompt=[1, 2, 3], submitter=submitter)
        store.create_job(new_job(spec), plan_runs(spec, {SHA: "gguf"}), spec.selector)
    counts = lifecycle.InFlightCounts(refresh_seconds=3600)

    def claim(name: str) -> str:
        agent, device = _agent(store, name)
        with store.writing() as s:
            (got,) = lifecycle.claim_runs(s, [ClaimRequest(agent, device, name)], 60, 1.0,
                                          in_flight=counts)  # fmt: skip
        assert got is not None
        return got.run.submitter

    assert [claim("dev0"), claim("dev1"), claim("dev2")] == ["alice", "bob", "alice"]
    assert counts.counts == {"alice": 2, "bob": 1}
    # a lease granted elsewhere (bob's: fewer in flight) is seen only when the counts are
    # taken again: until then bob still looks one behind (counted afresh: a tie, alice's
    # older run would go)
    agent, device = _agent(store, "elsewhere")
    (other,) = ops.claim_runs(store, [ClaimRequest(agent, device, "other")], lease_seconds=60)
    assert other is not None and other.run.submitter == "bob"
    assert claim("dev3") == "bob" and counts.counts == {"alice": 2, "bob": 2}
    counts.counted_at -= 3600
    assert claim("dev4") == "alice" and counts.counts == {"alice": 3, "bob": 3}


def test_a_touch_waits_for_its_runs_in_id_order_as_results_do(postgres_url: str) -> None:
    """PostgreSQL: a flush of a heartbeat for one run and progress for another is two
    statements. Were each to lock as it updates, the touch could hold the higher run while
    waiting on the lower, which a results batch (locking in id order) holds while it waits
    on the higher: a deadlock, one transaction aborted. The touch takes its runs in id
    order first, so it waits holding nothing."""
    store = Store(postgres_url)
    (_, first), (_, second) = _two_leases(store)
    low, high = sorted((first.run, second.run), key=lambda run: run.id)
    touches = [
        LeaseTouch(high.agent_id or "", high.id, high.lease_epoch),  # heartbeat: statement 1
        LeaseTouch(low.agent_id or "", low.id, low.lease_epoch, "measuring", 1),  # statement 2
    ]
    results_batch = store.engine.connect()
    watcher = store.engine.connect()
    lock = select(col(Run.id)).where(col(Run.id) == bindparam("run")).with_for_update()
    pool = ThreadPoolExecutor(1)
    try:
        with results_batch.begin():
            results_batch.execute(lock, {"run": low.id})
            touched = pool.submit(_touch, store, touches)
            _wait_for_a_lock_wait(watcher)
            results_batch.execute(lock, {"run": high.id})  # deadlocks unless the touch waits
        assert touched.result(timeout=10) == [True, True]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        results_batch.close()
        watcher.close()
        store.close()


def _touch(store: Store, touches: list[LeaseTouch]) -> list[bool]:
    with store.writing() as s:
        return lifecycle.touch_leases(s, touches, 60)


def _wait_for_a_lock_wait(connection: Any) -> None:
    query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    deadline = time.monotonic() + 10
    while connection.execute(query).scalar() == 0:
        connection.rollback()  # pg_stat_activity is read once per transaction
        assert time.monotonic() < deadline, "the touch never waited for the locked run"
        time.sleep(0.01)
    connection.rollback()


def test_runs_go_only_to_devices_that_have_their_engine(store: Store) -> None:
    """An agent installed without an engine reports none: it gets no run of that engine,
    however idle, while a device that has it takes them all."""
    job = _job(store, n_prompt=[1, 2])
    bare = _agent(store, "bare", engines={})
    assert _claims(store, bare) is None
    assert store.waiting(job.id) == "no device matching any device has llama_cpp installed"
    able = _agent(store, "able")
    assert store.waiting(job.id) == (
        "every device matching any device that can run llama_cpp is offline"
    )
    ops.agent_seen(store, able[0])
    assert store.waiting(job.id) == "waiting for one of 1 matching device(s) to be idle"
    taken = _claims(store, able)
    assert taken is not None and taken.device_id == able[1].id
    assert _claims(store, bare) is None


def test_submit_refuses_a_selector_of_incapable_devices_and_warns_of_none(store: Store) -> None:
    store.add_artifact(sha256=SHA, filename="m.gguf", size_bytes=10, fmt="gguf")
    _agent(store, "bare", engines={"onnx": "1.20"})
    pinned = job_spec(models=[SHA], n_prompt=[8], device="bare")
    with pytest.raises(StoreError, match=r"device in bare can run llama_cpp: bare reported no"):
        store.create_job(new_job(pinned), plan_runs(pinned, {SHA: "gguf"}), pinned.selector)
    nowhere = job_spec(models=[SHA], n_prompt=[8], selector={"arch": "aarch64"})
    job, runs, warnings = store.create_job(
        new_job(nowhere), plan_runs(nowhere, {SHA: "gguf"}), nowhere.selector
    )
    assert len(runs) == 1 and warnings == [
        "no enrolled device matches arch aarch64 now: its runs wait for one"
    ]
    assert store.waiting(job.id) == "no enrolled device matches arch aarch64"
    anyone = job_spec(models=[SHA], n_prompt=[8])
    _, runs, warnings = store.create_job(
        new_job(anyone), plan_runs(anyone, {SHA: "gguf"}), anyone.selector
    )
    assert len(runs) == 1 and warnings[0].startswith("no enrolled device has llama_cpp installed")
    every = job_spec(models=[SHA], n_prompt=[8], selector={"every": True})
    with pytest.raises(StoreError, match="no device that matches any device can run llama_cpp"):
        store.create_job(new_job(every), plan_runs(every, {SHA: "gguf"}), every.selector)
    _agent(store, "able")
    job, runs, _ = store.create_job(new_job(every), plan_runs(every, {SHA: "gguf"}), every.selector)
    assert [run.device_name for run in store.runs_of(job.id)] == ["able"]  # not "bare"


def _leaderboard_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Result rows of four groups, with ties in speed and time and noisy ones among them."""
    import random
    from datetime import datetime, timezone

    from edgebench.coordinator.tables import SUMMARY_COLUMNS

    rng = random.Random(seed)
    rows = []
    for index in range(count):
        row: dict[str, Any] = {name: 0.0 for name in SUMMARY_COLUMNS}
        row.update(
            id=f"r{index:04d}", run_id=f"run{index}", job_id="j", source_sha256="",
            engine_version="1", definitions_version="1", backend="llama_cpp",
            variant=rng.choice(["F16", "Q8_0"]), model_sha256=SHA, threads=4, n_depth=0,
            n_prompt=8, n_gen=rng.choice([4, 8]), reps=1, device_id="d",
            created_at=datetime(2026, 1, 1, rng.randrange(3), tzinfo=timezone.utc),
            decode_tps=float(rng.choice([10, 20, 30])), noisy=rng.random() < 0.4,
            throttled=None, gpu_mem_mb=None, environment_json="{}",
        )  # fmt: skip
        rows.append(row)
    return rows


def _expected_shown(rows: list[dict[str, Any]], view: str) -> dict[tuple[Any, ...], str]:
    """Brute force: per group, the highest rank; of equal ranks, the last stored."""
    shown: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        group = (row["variant"], row["n_gen"])
        clean = not row["noisy"]
        rank = (clean, row["decode_tps"] if clean and view == "best" else 0, row["created_at"])
        held = shown.get(group)
        if held is None or rank >= held["rank"]:
            shown[group] = {"rank": rank, "id": row["id"]}
    return {group: held["id"] for group, held in shown.items()}


@pytest.mark.parametrize("batch", [1, 7, 200])
def test_the_leaderboard_shows_the_same_result_however_results_are_batched(
    store: Store, batch: int
) -> None:
    """The rank that picks a group's shown result is said in Python (within a batch) and
    in SQL (against the stored row): both agree with a brute force, on both databases."""
    from edgebench.coordinator import leaderboard
    from edgebench.coordinator.tables import LEADERBOARD

    rows = _leaderboard_rows(200, seed=batch)
    for start in range(0, len(rows), batch):
        with store.writing() as s:
            leaderboard.record(s.connection(), rows[start : start + batch])
    with store.engine.connect() as connection:
        stored = connection.execute(LEADERBOARD.select()).mappings().all()
    for view in ("newest", "best"):
        of_view = [row for row in stored if row["view"] == view]
        got = {(row["variant"], row["n_gen"]): row["result_id"] for row in of_view}
        assert got == _expected_shown(rows, view), view
        assert sum(row["results"] for row in of_view) == len(rows)
        by_id = {row["id"]: row for row in rows}
        for row in of_view:  # the copy is the shown result's
            assert row["decode_tps"] == by_id[row["result_id"]]["decode_tps"]
            assert row["noisy"] == by_id[row["result_id"]]["noisy"]


@pytest.mark.parametrize(
    ("changed", "why"),
    [
        ({"model_sha256": "e" * 64}, "model eeeeeeeeeeee is not the run's"),
        ({"source_sha256": "e" * 64}, "model eeeeeeeeeeee is not the run's"),
        ({"backend": "onnx"}, "backend 'onnx' is not the run's 'llama_cpp'"),
        ({"n_prompt": 4096}, "n_prompt 4096 is not the run's 8"),
        ({"n_depth": 512}, "n_depth 512 is not the run's 0"),
    ],
)
def test_a_result_that_names_other_than_its_run_is_refused(
    store: Store, changed: dict[str, Any], why: str
) -> None:
    _job(store)
    agent, device = _agent(store, "dev0")
    claim = ops.claim_run(store, agent=agent, device=device, lease_seconds=60)
    assert claim is not None
    values, blob = _values()
    with pytest.raises(StoreError, match=f"does not answer its run: {why}"):
        ops.store_result(store, agent_id=agent.id, result_id="r1", run_id=claim.run.id,
                         epoch=claim.run.lease_epoch, values={**values, **changed},
                         timings=blob)  # fmt: skip
    assert ops.count(store, Result) == 0
    assert store.runs_of(claim.job.id)[0].state == RunState.LEASED


def test_a_run_with_a_variant_takes_only_that_variant(store: Store) -> None:
    _job(store, variants=["Q8_0"])
    agent, device = _agent(store, "dev0")
    claim = ops.claim_run(store, agent=agent, device=device, lease_seconds=60)
    assert claim is not None
    values, blob = _values()
    stored = dict(store=store, agent_id=agent.id, run_id=claim.run.id,
                  epoch=claim.run.lease_epoch, timings=blob)  # fmt: skip
    with pytest.raises(StoreError, match="variant 'F32' is not the run's 'Q8_0'"):
        ops.store_result(**stored, result_id="r1", values=values)  # type: ignore[arg-type]
    quantized = {**values, "variant": "q8_0", "model_sha256": "f" * 64, "source_sha256": SHA}
    ops.store_result(**stored, result_id="r2", values=quantized)  # type: ignore[arg-type]
    assert ops.count(store, Result) == 1


def test_an_enrolled_name_is_taken_only_by_a_token_made_for_it(store: Store) -> None:
    hardware = HardwareInfo.from_flat({"cpu_model": "real", "engines": ENGINES})
    store.enroll(token=store.create_enrollment_token(), name="pi", hardware=hardware, tags={})
    intruder = HardwareInfo.from_flat({"cpu_model": "fake", "engines": ENGINES})
    for token in (store.create_enrollment_token(), store.create_enrollment_token(contributor=True)):
        with pytest.raises(StoreError, match="a device named 'pi' is already enrolled"):
            store.enroll(token=token, name="pi", hardware=intruder, tags={})
    with pytest.raises(StoreError, match="a contributor token cannot re-enroll it"):
        store.create_enrollment_token(contributor=True, device_name="pi")
    with pytest.raises(StoreError, match="no device named 'ghost'"):
        store.create_enrollment_token(device_name="ghost")
    for_pi = store.create_enrollment_token(device_name="pi")
    with pytest.raises(StoreError, match="re-enrolls device 'pi' only"):
        store.enroll(token=for_pi, name="other", hardware=intruder, tags={})
    assert store.get_device("pi").identity_json.count("real") == 1  # nothing overwritten
    again = store.enroll(token=for_pi, name="pi", hardware=hardware, tags={})
    assert again.device_name == "pi" and len(store.fleet()) == 1


def test_the_leaderboard_keeps_room_for_updates_in_place_on_postgresql(postgres_url: str) -> None:
    store = Store(postgres_url)  # SQLite has no such storage option
    with store.engine.connect() as connection:
        options = connection.exec_driver_sql(
            "SELECT reloptions FROM pg_class WHERE relname = 'leaderboard'"
        ).scalar_one()
    assert options == ["fillfactor=70"]


def test_a_token_enrolls_as_many_agents_as_its_uses_until_revoked(store: Store) -> None:
    hardware = HardwareInfo.from_flat({"cpu_model": "t", "engines": ENGINES})
    twice = store.create_enrollment_token(uses=2)
    for name in ("a", "b"):
        store.enroll(token=twice, name=name, hardware=hardware, tags={})
    with pytest.raises(StoreError, match="used up or revoked"):
        store.enroll(token=twice, name="c", hardware=hardware, tags={})
    spare = store.create_enrollment_token(uses=5)
    newest = store.enrollment_tokens()[0]
    assert newest.uses_left == 5 and newest.revoked_at is None
    revoked = store.revoke_enrollment_token(newest.id[:8])
    assert revoked.id == newest.id and revoked.revoked_at is not None
    with pytest.raises(StoreError, match="used up or revoked"):
        store.enroll(token=spare, name="d", hardware=hardware, tags={})
    assert sorted(d.name for d in store.list_devices()) == ["a", "b"]
    assert [t.uses_left for t in store.enrollment_tokens()] == [5, 0]


def _finish(store: Store, agent: Agent, claim: Claim, result_id: str) -> None:
    values, blob = _values()
    values = {**values, "n_prompt": claim.run.n_prompt}
    ops.store_result(store, agent_id=agent.id, result_id=result_id, run_id=claim.run.id,
                     epoch=claim.run.lease_epoch, values=values, timings=blob)  # fmt: skip


def _fail(store: Store, agent: Agent, claim: Claim) -> None:
    assert ops.fail_run(store, agent_id=agent.id, run_id=claim.run.id,
                        epoch=claim.run.lease_epoch, error="engine crashed")  # fmt: skip


def test_one_failing_device_cannot_fail_the_queue(store: Store) -> None:
    """Each run it fails is retried on another device; once three of its last runs
    failed there and succeeded elsewhere it takes no work until resumed."""
    broken, broken_device = _agent(store, "broken")
    good, good_device = _agent(store, "good")
    jobs = []
    for n_prompt in (1, 2, 3):
        jobs.append(_job(store, n_prompt=[n_prompt]))
        taken = ops.claim_run(store, agent=broken, device=broken_device, lease_seconds=60)
        assert taken is not None
        _fail(store, broken, taken)
        (retried,) = store.runs_of(jobs[-1].id)
        assert retried.state == RunState.QUEUED and "failed on broken" in retried.error
        assert ops.claim_run(store, agent=broken, device=broken_device, lease_seconds=60) is None
        again = ops.claim_run(store, agent=good, device=good_device, lease_seconds=60)
        assert again is not None and again.run.id == taken.run.id
        _finish(store, good, again, f"r{n_prompt}")
    assert "3 of its last 3 runs failed here" in store.get_device("broken").unhealthy
    waiting = _job(store, n_prompt=[4])
    assert ops.claim_run(store, agent=broken, device=broken_device, lease_seconds=60) is None
    assert store.get_device("good").outcomes == "SSS"
    store.resume_device("broken")
    resumed = ops.claim_run(store, agent=broken, device=broken_device, lease_seconds=60)
    assert resumed is not None and resumed.run.job_id == waiting.id
    assert [store.runs_of(j.id)[0].state for j in jobs] == [RunState.SUCCEEDED] * 3


def test_a_run_that_fails_on_two_devices_or_has_no_other_is_final(store: Store) -> None:
    job = _job(store)
    first, first_device = _agent(store, "first")
    second, second_device = _agent(store, "second")
    taken = ops.claim_run(store, agent=first, device=first_device, lease_seconds=60)
    assert taken is not None
    _fail(store, first, taken)
    again = ops.claim_run(store, agent=second, device=second_device, lease_seconds=60)
    assert again is not None and again.run.id == taken.run.id
    _fail(store, second, again)
    (run,) = store.runs_of(job.id)
    assert run.state == RunState.FAILED  # the run's own fault: no device is blamed
    assert store.get_device("first").outcomes == store.get_device("second").outcomes == ""
    alone = _job(store, device="first")  # pinned: no other device may take it
    pinned = ops.claim_run(store, agent=first, device=first_device, lease_seconds=60)
    assert pinned is not None and pinned.run.job_id == alone.id
    _fail(store, first, pinned)
    assert store.runs_of(alone.id)[0].state == RunState.FAILED


def test_deleting_results_leaves_the_leaderboard_as_a_rebuild_would(store: Store) -> None:
    from edgebench.coordinator import leaderboard
    from edgebench.coordinator.tables import LEADERBOARD
    from tests.storefill import fill

    fill(store, devices=2, results=48, samples=2)

    def groups() -> list[dict[str, Any]]:
        with store.engine.connect() as connection:
            rows = connection.execute(LEADERBOARD.select()).mappings().all()
        return sorted((dict(row) for row in rows), key=lambda r: (r["key"], r["view"]))

    shown = {row["result_id"] for row in groups()}
    with store.engine.connect() as connection:
        every = [r.id for r in connection.execute(select(col(Result.id)).order_by(Result.id))]
    doomed = list(dict.fromkeys(sorted(shown)[:6] + every[:4]))
    for key in doomed:
        assert store.delete_result(key).id == key
    kept = groups()
    with store.writing() as s:
        leaderboard.rebuild(s.connection())
    assert kept == groups()
    assert sum(row["results"] for row in kept if row["view"] == "newest") == 48 - len(doomed)
    assert ops.count(store, Result) == 48 - len(doomed)
    with pytest.raises(NotFound):
        store.delete_result(doomed[0])
    with pytest.raises(NotFound):
        store.get_result(doomed[0])


def test_other_hardware_puts_a_device_in_review_until_accepted(store: Store) -> None:
    from edgebench.coordinator.store import device_seen

    _job(store)
    agent, _ = _agent(store, "pi", cpu_model="Cortex-A76", cpu_cores_physical=4)

    def hello(**hardware: object) -> Device:
        flat = {"cpu_model": "Cortex-A76", "cpu_cores_physical": 4, "engines": ENGINES}
        with store.writing() as s:
            return device_seen(s, agent, HardwareInfo.from_flat({**flat, **hardware}))

    upgraded = hello(engines={"llama_cpp": "0.3.99"}, kernel="6.12")  # software may change
    assert upgraded.review == ""
    swapped = hello(cpu_model="Xeon Platinum", cpu_cores_physical=64)
    assert "hardware changed from" in swapped.review and "Xeon Platinum" in swapped.review
    assert "devices accept pi" in swapped.review
    held = store.get_device("pi")
    assert ops.claim_run(store, agent=agent, device=held, lease_seconds=60) is None
    assert "Xeon" in held.identity_json  # recorded, though not accepted
    accepted = store.accept_hardware("pi")
    assert accepted.review == "" and "Xeon Platinum" in accepted.accepted_hardware
    assert ops.claim_run(store, agent=agent, device=accepted, lease_seconds=60) is not None
