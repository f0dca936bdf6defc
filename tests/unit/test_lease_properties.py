"""A property-based state machine over the store's lease protocol (fault test 6): random
interleavings of claims, heartbeats, expiries, reaps, results (fresh, replayed, stale,
conflicting), failures and cancels, on a real SQLite file. After every step: at most one
live lease per run, a succeeded run has exactly one result, attempts never exceed the
maximum, epochs never go back, and every write from a superseded lease was refused."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edgebench.coordinator.jobspec import plan_runs
from edgebench.coordinator.store import MAX_ATTEMPTS, Store, StoreError
from edgebench.coordinator.tables import Agent, Device, Job, Result, Run, RunState
from edgebench.device import HardwareInfo
from edgebench.measure.packing import pack_reps
from edgebench.measure.record import RepTiming, summarize
from tests import lifecycle_ops as ops
from tests.conftest import job_spec

CAPABLE = HardwareInfo.from_flat({"engines": {"llama_cpp": "0.3.36"}})

SHA = "c" * 64
AGENTS = 2  # few agents: the same agent often holds a run again under a new epoch
LIVE = (RunState.LEASED, RunState.RUNNING)


def _result(decode_ms: int, n_prompt: int) -> tuple[dict[str, object], bytes]:
    reps = [RepTiming(prefill_ns=1000, token_ns=(2000, 3000, 3000 + decode_ms * 1000))]
    result = summarize(reps, backend="llama_cpp", variant="F32", model_sha256=SHA, threads=1,
                       n_prompt=n_prompt, load_ms=1.0, peak_rss_mb=50.0)  # fmt: skip
    return result.fields(), pack_reps(reps)


class LeaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.store = Store(f"sqlite:///{Path(self.folder.name) / 'store.db'}",
                           retry_base_seconds=0.0)  # fmt: skip
        self.store.add_artifact(sha256=SHA, filename="m.gguf", size_bytes=10, fmt="gguf")
        spec = job_spec(models=[SHA], n_prompt=[8, 16], n_gen=[3], reps=1)
        self.job, self.run_ids, _ = self.store.create_job(
            Job(spec_json=spec.model_dump_json()), plan_runs(spec, {SHA: "gguf"})
        )
        self.agents: list[tuple[Agent, Device]] = []
        for i in range(AGENTS):
            enrollment = self.store.enroll(token=self.store.create_enrollment_token(),
                                           name=f"a{i}", hardware=CAPABLE, tags={})  # fmt: skip
            agent = self.store.authenticate_agent(enrollment.agent_id, enrollment.secret)
            assert agent is not None
            self.agents.append((agent, self.store.get_device(f"a{i}")))
        self.grants: list[tuple[str, str, int]] = []  # (run, agent id, epoch) ever granted
        self.sent: dict[str, tuple[str, dict[str, object], bytes]] = {}  # result id -> payload
        self.epochs: dict[str, int] = dict.fromkeys(self.run_ids, 0)

    def teardown(self) -> None:
        self.store.close()
        self.folder.cleanup()

    def _run(self, run_id: str) -> Run:
        return next(r for r in self.store.runs_of(self.job.id) if r.id == run_id)

    def _n_prompt(self, run_id: str) -> int:
        return self._run(run_id).n_prompt  # a result answers its own run's test

    def _is_current(self, run_id: str, agent_id: str, epoch: int) -> bool:
        run = self._run(run_id)
        return run.state in LIVE and run.agent_id == agent_id and run.lease_epoch == epoch

    @rule(agent=st.integers(0, AGENTS - 1), expired=st.booleans())
    def claim(self, agent: int, expired: bool) -> None:
        holder, device = self.agents[agent]
        claim = ops.claim_run(self.store, agent=holder, device=device,
                                     lease_seconds=-1 if expired else 60)  # fmt: skip
        if claim is not None:
            assert claim.run.attempts <= MAX_ATTEMPTS
            self.grants.append((claim.run.id, holder.id, claim.run.lease_epoch))

    @precondition(lambda self: self.grants)
    @rule(data=st.data(), lapse=st.booleans())
    def heartbeat(self, data: st.DataObject, lapse: bool) -> None:
        run_id, agent_id, epoch = data.draw(st.sampled_from(self.grants))
        current = self._is_current(run_id, agent_id, epoch)
        accepted = ops.extend_lease(self.store, agent_id=agent_id, run_id=run_id, epoch=epoch,
                                           lease_seconds=-1 if lapse else 60)  # fmt: skip
        assert accepted == current  # a superseded lease's heartbeat is always refused

    @rule()
    def reap(self) -> None:
        ops.reap_expired(self.store)

    @precondition(lambda self: self.grants)
    @rule(data=st.data(), conflicting=st.booleans())
    def submit(self, data: st.DataObject, conflicting: bool) -> None:
        run_id, agent_id, epoch = data.draw(st.sampled_from(self.grants))
        result_id = f"{run_id}-{agent_id}-{epoch}"
        known = self.sent.get(result_id)
        values, blob = _result(7 if conflicting else 5, self._n_prompt(run_id))
        current = self._is_current(run_id, agent_id, epoch)
        try:
            ops.store_result(self.store, agent_id=agent_id, result_id=result_id, run_id=run_id,
                                    epoch=epoch, values=values, timings=blob)  # fmt: skip
        except StoreError:
            assert not current or known is not None
            return
        # Accepted: a fresh result on the live lease, or a replay of the very same payload.
        assert current or (known is not None and known[1:] == (values, blob))
        self.sent.setdefault(result_id, (run_id, values, blob))

    @precondition(lambda self: self.grants)
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        run_id, agent_id, epoch = data.draw(st.sampled_from(self.grants))
        current = self._is_current(run_id, agent_id, epoch)
        failed = ops.fail_run(self.store, agent_id=agent_id, run_id=run_id, epoch=epoch, error="x")
        assert failed == current

    @rule()
    def cancel(self) -> None:
        self.store.cancel_job(self.job.id)

    @invariant()
    def one_outcome_per_run(self) -> None:
        results = ops.results_of(self.store, self.job.id)
        for run in self.store.runs_of(self.job.id):
            stored = [r for r in results if r.run_id == run.id]
            assert len(stored) == (1 if run.state == RunState.SUCCEEDED else 0)
            assert run.attempts <= MAX_ATTEMPTS
            assert run.lease_epoch >= self.epochs[run.id]
            self.epochs[run.id] = run.lease_epoch
            live = [g for g in self.grants if g[0] == run.id and self._is_current(*g)]
            assert len(live) <= 1
        assert ops.count(self.store, Result) == len({r.id for r in results})


LeaseMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
test_lease_protocol = LeaseMachine.TestCase
