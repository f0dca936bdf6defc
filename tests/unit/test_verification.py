"""Contributor results verified by replication, on a real SQLite file and a real
PostgreSQL server (coordinator/verification.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from edgebench.coordinator.jobspec import new_job, plan_runs
from edgebench.coordinator.lifecycle import Claim
from edgebench.coordinator.selectors import matches
from edgebench.coordinator.store import NotFound, Store, StoreError
from edgebench.coordinator.tables import LEADERBOARD, Agent, Device, Result, Run, RunState
from edgebench.coordinator.verification import Round, VerifyPolicy, verify
from edgebench.dashboard.models import DeviceSelector
from edgebench.device import HardwareInfo
from edgebench.measure.packing import pack_reps
from edgebench.measure.record import RepTiming, summarize
from tests import lifecycle_ops as ops
from tests.conftest import job_spec

SHA = "c" * 64
ENGINES = {"llama_cpp": "0.3.36"}
PI = {"cpu_model": "Cortex-A76", "cpu_cores_physical": 4, "ram_bytes": 8 * 1024**3,
      "cache_bytes": 2 * 1024**2}  # fmt: skip
LAPTOP = {"cpu_model": "Core i7", "cpu_cores_physical": 8, "ram_bytes": 16 * 1024**3}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    return Store(url, retry_base_seconds=0.0, fleet_read_seconds=0.0)


def _agent(
    store: Store,
    name: str,
    *,
    contributor: bool = False,
    owner: str = "",
    hardware: dict[str, Any] | None = None,
    engines: dict[str, str] | None = None,
) -> tuple[Agent, Device]:
    token = store.create_enrollment_token(contributor=contributor, owner=owner)
    flat = {**(hardware or PI), "engines": engines or ENGINES}
    enrollment = store.enroll(
        token=token, name=name, hardware=HardwareInfo.from_flat(flat), tags={}
    )
    agent = store.authenticate_agent(enrollment.agent_id, enrollment.secret)
    assert agent is not None
    return agent, store.get_device(name)


def _job(store: Store, device: str | None, *, size_bytes: int = 10) -> None:
    store.add_artifact(sha256=SHA, filename="m.gguf", size_bytes=size_bytes, fmt="gguf")
    spec = job_spec(models=[SHA], n_prompt=[8], n_gen=[3], reps=1, device=device)
    store.create_job(new_job(spec), plan_runs(spec, {SHA: "gguf"}), spec.selector)


def _claim(store: Store, agent: tuple[Agent, Device]) -> Claim | None:
    return ops.claim_run(store, agent=agent[0], device=agent[1], lease_seconds=60)


def _finish(
    store: Store,
    agent: tuple[Agent, Device],
    claim: Claim,
    result_id: str,
    *,
    step_ns: int = 1_000_000,
    model_size_mb: float = 1.0,
    energy: dict[str, Any] | None = None,
) -> None:
    """Stores a result whose decode takes `step_ns` per token (its figures are the ones
    its timestamps give, as the wire checks demand)."""
    tokens = (2_000_000, 2_000_000 + step_ns, 2_000_000 + 2 * step_ns)
    reps = [RepTiming(prefill_ns=1_000_000, token_ns=tokens)]
    values = summarize(reps, backend="llama_cpp", variant="", model_sha256=SHA, threads=1,
                       n_prompt=8, load_ms=1.0, peak_rss_mb=50.0).fields()  # fmt: skip
    values["model_size_mb"] = model_size_mb
    values["variant"] = claim.run.variant
    if energy:
        values["avg_power_w"] = energy["avg_power_w"]
        values["sensors_json"] = json.dumps(energy["sensors"])
    ops.store_result(store, agent_id=agent[0].id, result_id=result_id, run_id=claim.run.id,
                     epoch=claim.run.lease_epoch, values=values,
                     timings=pack_reps(energy["reps"] if energy else reps))  # fmt: skip


def _run(store: Store, run_id: str) -> Run:
    with store.session() as s:
        run = s.get(Run, run_id)
    assert run is not None
    return run


def _verify(store: Store, policy: VerifyPolicy | None = None) -> Round:
    with store.writing() as s:
        return verify(s, policy or VerifyPolicy())


def _result(store: Store, result_id: str) -> Result:
    result, _ = store.get_result(result_id)
    return result


def _contributed(
    store: Store, contributor: tuple[Agent, Device], result_id: str, **kw: Any
) -> None:
    _job(store, contributor[1].name)
    claim = _claim(store, contributor)
    assert claim is not None
    _finish(store, contributor, claim, result_id, **kw)


def test_an_agreeing_replica_on_an_operator_device_verifies_a_contributor_result(
    store: Store,
) -> None:
    operator = _agent(store, "pi-op")
    contributor = _agent(store, "pi-donated", contributor=True, owner="alice")
    _contributed(store, contributor, "donated")
    assert _result(store, "donated").verification == "unverified"
    done = _verify(store)
    assert done.replicated == ["donated"]
    queued = _result(store, "donated")
    replica_run = _run(store, queued.replica_run_id or "")
    selector = DeviceSelector.model_validate_json(replica_run.selector_json)
    assert selector.tiers == ["operator"] and selector.engines == ENGINES
    assert selector.hardware_class == operator[1].hardware_class
    assert replica_run.priority == -100 and replica_run.checks_result_id == "donated"
    assert _claim(store, contributor) is None  # never on the device it checks
    claim = _claim(store, operator)
    assert claim is not None and claim.run.id == replica_run.id
    _finish(store, operator, claim, "check", step_ns=1_020_000)  # 2% slower: agrees
    assert _result(store, "check").verification == "trusted"
    assert _verify(store).judged == {"donated": "verified"}
    verified = _result(store, "donated")
    assert verified.verification == "verified"
    assert "agrees with result check" in verified.verification_note
    assert "pi-op (operator)" in verified.verification_note
    with store.session() as s:
        shown = s.execute(select(LEADERBOARD.c.verification).where(
            LEADERBOARD.c.result_id == "donated")).scalars().all()  # fmt: skip
    assert shown and set(shown) == {"verified"}
    assert store.get_device("pi-donated").checks == "A"
    assert _verify(store).judged == {}  # judged once


def test_disputes_are_recorded_and_three_suspend_the_contributor(store: Store) -> None:
    operator = _agent(store, "pi-op")
    contributor = _agent(store, "pi-donated", contributor=True)
    for n in range(3):
        _contributed(store, contributor, f"forged{n}", step_ns=100_000)  # 10x the truth
        assert _verify(store).replicated == [f"forged{n}"]
        claim = _claim(store, operator)
        assert claim is not None
        _finish(store, operator, claim, f"check{n}")
        done = _verify(store)
        assert done.judged == {f"forged{n}": "disputed"}
    note = _result(store, "forged0").verification_note
    assert "disagrees with result check0" in note and "decode_tps" in note
    device = store.get_device("pi-donated")
    assert device.checks == "DDD"
    assert "3 of its last 3 checked results were disputed" in device.suspended
    assert done.suspended == ["pi-donated"]
    _job(store, "pi-donated")
    assert _claim(store, contributor) is None  # suspended: no work
    store.resume_device("pi-donated")
    assert _claim(store, contributor) is not None
    assert store.get_device("pi-donated").checks == ""


def test_without_an_operator_device_two_owners_verify_by_quorum(store: Store) -> None:
    _agent(store, "laptop-op", hardware=LAPTOP)  # an operator device of another class
    alice = _agent(store, "pi-alice", contributor=True, owner="alice")
    _agent(store, "pi-alice-2", contributor=True, owner="alice")  # same owner: no quorum
    _contributed(store, alice, "first")
    _verify(store)
    assert "waiting for a device to replicate it on" in _result(store, "first").verification_note
    assert _result(store, "first").replica_run_id is None  # looked at again later
    bob = _agent(store, "pi-bob", contributor=True, owner="bob")
    assert _verify(store).replicated == ["first"]
    run = _run(store, _result(store, "first").replica_run_id or "")
    selector = DeviceSelector.model_validate_json(run.selector_json)
    assert selector.tiers == ["contributor"] and selector.not_owners == ["alice"]
    claim = _claim(store, bob)
    assert claim is not None and claim.run.id == run.id
    _finish(store, bob, claim, "second")
    assert _verify(store).judged == {"first": "verified-by-quorum", "second": "verified-by-quorum"}
    assert "checked result first" in _result(store, "second").verification_note
    assert store.get_device("pi-bob").checks == store.get_device("pi-alice").checks == "A"


def test_replication_takes_a_bounded_share_and_samples_proven_contributors(store: Store) -> None:
    operator = _agent(store, "pi-op")
    contributor = _agent(store, "pi-donated", contributor=True)
    _contributed(store, contributor, "a")
    _contributed(store, contributor, "b")
    assert _verify(store).replicated == ["a"]  # 10% of one trusted device: one at a time
    assert _result(store, "b").replica_run_id is None
    claim = _claim(store, operator)
    assert claim is not None
    _finish(store, operator, claim, "check-a")
    assert _verify(store).replicated == ["b"]  # the slot is free again
    policy = VerifyPolicy(enough_verified=1, sample_every=1_000_000)
    for n in range(4):
        _contributed(store, contributor, f"later{n}")
    _verify(store, policy)
    notes = [_result(store, f"later{n}").verification_note for n in range(4)]
    assert sum("not replicated: pi-donated has 1 verified results" in n for n in notes) >= 3


def _energy(avg_power_w: float, joules: float) -> dict[str, Any]:
    """Sensors of a run whose measured phases last 1.5 s in all."""
    reps = [RepTiming(prefill_ns=500_000_000, token_ns=(600_000_000, 1_100_000_000,
                                                      1_600_000_000))]  # fmt: skip
    sensors = {"prefill_j_gross": joules / 4, "decode_j_gross": joules * 3 / 4}
    return {"avg_power_w": avg_power_w, "sensors": sensors, "reps": reps}


def test_energy_that_is_not_power_times_duration_is_quarantined(store: Store) -> None:
    _agent(store, "pi-op")
    contributor = _agent(store, "pi-donated", contributor=True)
    _contributed(store, contributor, "honest", energy=_energy(5.0, 7.9))  # 7.5 J within 10%
    _contributed(store, contributor, "forged", energy=_energy(5.0, 2.0))
    done = _verify(store)
    assert done.quarantined == ["forged"]
    forged = _result(store, "forged")
    assert forged.verification == "quarantined" and forged.replica_run_id == ""
    assert "is not average power x duration (5 W x 1.5 s = 7.5 J)" in forged.verification_note
    assert _result(store, "honest").verification == "unverified"


def test_decode_far_beyond_the_class_best_is_quarantined_for_big_models(store: Store) -> None:
    operator = _agent(store, "pi-op")
    contributor = _agent(store, "pi-donated", contributor=True)
    _job(store, "pi-op")
    claim = _claim(store, operator)
    assert claim is not None
    _finish(store, operator, claim, "trusted", model_size_mb=100.0)  # 50x the 2 MiB cache
    _contributed(store, contributor, "fits", model_size_mb=1.0, step_ns=100_000)  # in cache
    _contributed(store, contributor, "absurd", model_size_mb=100.0, step_ns=100_000)
    _contributed(store, contributor, "fast", model_size_mb=100.0, step_ns=400_000)  # 2.5x
    done = _verify(store, VerifyPolicy(share=10.0))
    assert done.quarantined == ["absurd"]
    assert "over 3x the best trusted result of its hardware class" in (
        _result(store, "absurd").verification_note
    )
    assert {"fits", "fast"} <= set(done.replicated)


def test_a_failed_replication_leaves_the_result_unverified_with_the_reason(store: Store) -> None:
    operator = _agent(store, "pi-op")
    contributor = _agent(store, "pi-donated", contributor=True)
    _contributed(store, contributor, "donated")
    _verify(store)
    claim = _claim(store, operator)
    assert claim is not None
    assert ops.fail_run(store, agent_id=operator[0].id, run_id=claim.run.id,
                        epoch=claim.run.lease_epoch, error="out of memory")  # fmt: skip
    _verify(store)
    result = _result(store, "donated")
    assert result.verification == "unverified" and result.replica_run_id == ""
    assert "ended failed: out of memory; not replicated again" in result.verification_note
    assert _verify(store).replicated == []


def test_selectors_match_tiers_classes_owners_and_engine_builds(store: Store) -> None:
    _agent(store, "op")
    _agent(store, "donated", contributor=True, owner="alice", engines={"llama_cpp": "0.3.1"})
    op, donated = store.get_device("op"), store.get_device("donated")
    cases = [
        (DeviceSelector(tiers=["operator"]), {"op"}),
        (DeviceSelector(tiers=["contributor"]), {"donated"}),
        (DeviceSelector(hardware_class=op.hardware_class), {"op", "donated"}),
        (DeviceSelector(hardware_class="other"), set()),
        (DeviceSelector(not_owners=["bob"]), {"donated"}),  # an owner is needed
        (DeviceSelector(not_owners=["alice"]), set()),
        (DeviceSelector(engines={"llama_cpp": "0.3.1"}), {"donated"}),
    ]
    for selector, expected in cases:
        assert {d.name for d in (op, donated) if matches(selector, d)} == expected, selector
    with pytest.raises(ValueError, match="not an owner name"):
        DeviceSelector(not_owners=["bad owner!"])
    with pytest.raises(ValueError):
        DeviceSelector.model_validate({"tiers": ["root"]})


def test_stored_results_start_where_their_device_stands(store: Store) -> None:
    operator = _agent(store, "pi-op")
    _job(store, "pi-op")
    claim = _claim(store, operator)
    assert claim is not None
    _finish(store, operator, claim, "mine")
    result = _result(store, "mine")
    assert (result.verification, result.replica_run_id) == ("trusted", "")
    with store.session() as s:
        runs = s.execute(select(col(Run.id)).where(col(Run.checks_result_id).is_not(None))).all()
    assert runs == [] and _verify(store).replicated == []
    assert _run(store, claim.run.id).state == RunState.SUCCEEDED


def test_removing_a_revoked_device_takes_its_results_and_cancels_its_queued_runs(
    store: Store,
) -> None:
    operator = _agent(store, "pi-op")
    contributor = _agent(store, "pi-donated", contributor=True)
    _contributed(store, contributor, "donated")
    _verify(store)  # a replication of it is queued
    _job(store, "pi-donated")  # and a run pinned to it
    with pytest.raises(StoreError, match="revoke pi-donated first"):
        store.remove_device("pi-donated")
    store.revoke_device("pi-donated")
    with pytest.raises(StoreError, match="its sessions may still be ending"):
        store.remove_device("pi-donated")
    store.remove_settle_seconds = 0.0
    removed = store.remove_device("pi-donated")
    assert (removed.name, removed.results, removed.cancelled) == ("pi-donated", 1, 2)
    assert [d.name for d in store.list_devices()] == ["pi-op"]
    with pytest.raises(NotFound):
        store.get_result("donated")
    with store.session() as s:
        assert s.execute(select(LEADERBOARD.c.key)).all() == []
        states = s.execute(select(col(Run.state), col(Run.error))).all()
    assert {state for state, _ in states} == {RunState.CANCELLED, RunState.SUCCEEDED}
    assert _claim(store, operator) is None  # the replication went with it
    assert store.authenticate_agent(contributor[0].id, "anything") is None


def test_a_workload_failure_is_final_at_once_on_an_operators_word_only(store: Store) -> None:
    operator = _agent(store, "pi-op")
    other = _agent(store, "pi-op-2")
    contributor = _agent(store, "pi-donated", contributor=True)
    for device, agent in (("pi-op", operator), ("pi-donated", contributor)):
        _job(store, None)  # any device
        claim = _claim(store, agent)
        assert claim is not None
        assert ops.fail_run(store, agent_id=agent[0].id, run_id=claim.run.id,
                            epoch=claim.run.lease_epoch, error="exceeds the context",
                            kind="workload")  # fmt: skip
        run = _run(store, claim.run.id)
        if device == "pi-op":
            assert run.state == RunState.FAILED
            assert run.error.startswith("workload failure (no device could run it as asked)")
        else:  # a contributor could say so of every run: confirmed elsewhere first
            assert run.state == RunState.QUEUED and "retried on another device" in run.error
            again = _claim(store, other)
            assert again is not None and again.run.id == run.id
    assert store.get_device("pi-op").outcomes == ""  # nobody was charged
