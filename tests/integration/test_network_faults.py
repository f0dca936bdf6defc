"""Fault test 4: the connection between agents and the coordinator is reset, stalled and
dropped through a TCP proxy the test controls. Agents buffer, reconnect with backoff, and
every run's result arrives exactly once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from edgebench.agent.outbox import Outbox
from edgebench.proto.v1 import agent_pb2 as pb
from tests.conftest import (
    Coordinator,
    enroll_agent,
    start_agent,
    start_coordinator,
    stop,
    wait_until,
)
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.slow

RUNS = 12


def _stored(coord: Coordinator, job_id: str) -> int:
    return len(coord.api("/api/v1/results", job=job_id))


def _after_more_results(coord: Coordinator, job_id: str, fault: Callable[[], None]) -> None:
    before = _stored(coord, job_id)
    wait_until(lambda: _stored(coord, job_id) > before, timeout=90,
               what=f"a result after {before}")  # fmt: skip
    fault()


def test_agents_ride_out_resets_stalls_and_drops(
    coordinator: Coordinator, tmp_path: Path, tiny_model: Path
) -> None:
    proxy = TcpProxy(coordinator.grpc)
    agents = []
    try:
        for name in ("left", "right"):
            home = tmp_path / name
            home.mkdir()
            enroll_agent(coordinator, home, name)
            agents.append(start_agent(home, "--coordinator", proxy.address))
        wait_until(lambda: sum(d["online"] for d in coordinator.api("/api/v1/devices")) == 2,
                   what="both agents online through the proxy")  # fmt: skip
        submitted = coordinator.cli(
            "jobs", "submit", "--model", str(tiny_model), "-p", "8,16,32", "-n", "16,32",
            "-d", "0,8", "-r", "3", "--threads", "1",
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()

        _after_more_results(coordinator, job_id, proxy.reset)
        _after_more_results(coordinator, job_id, proxy.stall)
        time.sleep(3)  # bytes wait in the proxy; heartbeats and results are held up
        proxy.resume()
        _after_more_results(coordinator, job_id, proxy.drop)
        time.sleep(3)  # connections refused: the agents retry with backoff
        proxy.resume()

        wait_until(lambda: coordinator.api(f"/api/v1/jobs/{job_id}")["state"] == "succeeded",
                   timeout=180, what="every run to succeed")  # fmt: skip
        results = coordinator.api("/api/v1/results", job=job_id)
        assert len(results) == RUNS and len({r["run_id"] for r in results}) == RUNS
        runs = coordinator.api(f"/api/v1/jobs/{job_id}")["runs"]
        assert all(run["attempts"] == 1 for run in runs)  # no lease lapsed: no run redone
        assert proxy.connections > 2  # the agents reconnected
        for name in ("left", "right"):
            log = (tmp_path / name / "agent.log").read_text()
            assert log.count("not reachable") >= 2, log  # saw the reset and the drop
            outbox = Outbox(tmp_path / name / "data" / "outbox.sqlite")
            wait_until(lambda: len(outbox) == 0, what=f"{name}'s outbox to drain")  # noqa: B023
    finally:
        for process in agents:
            stop(process)
        proxy.close()


def test_a_stalled_link_makes_the_agent_abandon_its_run(tmp_path: Path, tiny_model: Path) -> None:
    """No byte gets through for longer than the lease: the coordinator requeues the run and
    the agent, hearing no heartbeat acknowledged, stops it itself instead of finishing work
    that can no longer count. After the stall the run is done once, on attempt 2."""
    home = tmp_path / "coordinator"
    home.mkdir()
    coord = start_coordinator(home, "--lease-seconds", "5", "--reap-seconds", "1")
    proxy = TcpProxy(coord.grpc)
    agent_home = tmp_path / "agent"
    agent_home.mkdir()
    enroll_agent(coord, agent_home, "lonely")
    agent = start_agent(agent_home, "--coordinator", proxy.address)
    try:
        wait_until(lambda: any(d["online"] for d in coord.api("/api/v1/devices")),
                   what="the agent online")  # fmt: skip
        submitted = coord.cli("jobs", "submit", "--model", str(tiny_model), "-p", "16",
                              "-n", "500", "-r", "60", "--warmup", "0")  # fmt: skip
        job_id = submitted.stdout.strip()
        wait_until(lambda: coord.api(f"/api/v1/jobs/{job_id}")["runs"][0]["phase"]
                   == "measuring", timeout=60, what="the run to be measuring")  # fmt: skip
        proxy.stall()
        log = agent_home / "agent.log"
        wait_until(lambda: "abandoned" in log.read_text(), timeout=20,
                   what="the agent to abandon its run")  # fmt: skip
        proxy.resume()
        wait_until(lambda: coord.api(f"/api/v1/jobs/{job_id}")["state"] == "succeeded",
                   timeout=120, what="the run to succeed on its next lease")  # fmt: skip
        (run,) = coord.api(f"/api/v1/jobs/{job_id}")["runs"]
        assert run["attempts"] == 2 and run["lease_epoch"] == 2
        assert len(coord.api("/api/v1/results", job=job_id)) == 1
    finally:
        stop(agent)
        stop(coord.process)
        proxy.close()


def test_a_result_that_lands_while_the_session_opens_goes_out_in_it(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    """A run that ends while the agent's session is being set up (here the welcome is
    held up by a stalled link) leaves its result in the outbox after the hello was sent:
    the session that comes up sends it, ahead of the agent's work request, instead of
    leaving it for a later reconnect (the coordinator would meanwhile take the run back
    as one the agent lost: seen in test_agents_ride_out_resets_stalls_and_drops)."""
    proxy = TcpProxy(coordinator.grpc)
    home = tmp_path / "agent"
    home.mkdir()
    enroll_agent(coordinator, home, "late")
    proxy.stall()
    agent = start_agent(home, "--coordinator", proxy.address)
    try:
        wait_until(lambda: proxy.connections >= 1, what="the agent to dial the stalled link")
        time.sleep(1)  # its hello is written; the welcome cannot come back
        outbox = Outbox(home / "data" / "outbox.sqlite")
        # A result with no figures: whatever the coordinator answers (it refuses this
        # one), an answer removes it from the outbox, and only a sent result is answered.
        late = pb.RunResult(result_id=str(uuid.uuid4()), run_id=str(uuid.uuid4()))
        outbox.add(late.result_id, late.run_id, late.SerializeToString())
        proxy.resume()
        wait_until(lambda: len(outbox) == 0, timeout=20, what="the late result to be answered")
        log = (home / "agent.log").read_text()
        assert log.count("connected to") == 1, log  # in the first session, no reconnect
    finally:
        stop(agent)
        proxy.close()
