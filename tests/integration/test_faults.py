"""Faults with real processes: an agent killed or frozen mid-run. Whatever happens, a run
is finished once and stored once."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import (
    Coordinator,
    enroll_agent,
    start_agent,
    start_coordinator,
    stop,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def fast_leases(tmp_path: Path) -> Iterator[Coordinator]:
    home = tmp_path / "coordinator"
    home.mkdir()
    coord = start_coordinator(home, "--lease-seconds", "5", "--reap-seconds", "1")
    yield coord
    stop(coord.process)


def two_agents(coord: Coordinator, tmp_path: Path) -> dict[str, subprocess.Popen[str]]:
    agents = {}
    for name in ("alpha", "beta"):
        home = tmp_path / name
        home.mkdir()
        enroll_agent(coord, home, name)
        agents[name] = start_agent(home)
    wait_until(lambda: sum(d["online"] for d in coord.api("/api/v1/devices")) == 2,
               what="both agents online")  # fmt: skip
    return agents


def long_job(coord: Coordinator, model: Path) -> str:
    # about 10 s of measuring on the tiny model: time enough to interfere mid-run
    done = coord.cli("jobs", "submit", "--model", str(model), "-p", "16", "-n", "500",
                     "-r", "40", "--warmup", "0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def holder_when_measuring(coord: Coordinator, job_id: str) -> dict[str, Any]:
    def measuring() -> bool:
        run = coord.api(f"/api/v1/jobs/{job_id}")["runs"][0]
        return bool(run["phase"] == "measuring" and run["rep"] >= 1)

    wait_until(measuring, timeout=60, what="the run to be measuring")
    run: dict[str, Any] = coord.api(f"/api/v1/jobs/{job_id}")["runs"][0]
    return run


def finished(coord: Coordinator, job_id: str) -> dict[str, Any]:
    wait_until(lambda: coord.api(f"/api/v1/jobs/{job_id}")["state"] != "running"
               and coord.api(f"/api/v1/jobs/{job_id}")["runs"][0]["state"] == "succeeded",
               timeout=120, what="the run to succeed")  # fmt: skip
    job: dict[str, Any] = coord.api(f"/api/v1/jobs/{job_id}")
    return job


def test_killed_agent_run_is_requeued_and_finished_once(
    fast_leases: Coordinator, tmp_path: Path, tiny_model: Path
) -> None:
    agents = two_agents(fast_leases, tmp_path)
    try:
        job_id = long_job(fast_leases, tiny_model)
        holder = holder_when_measuring(fast_leases, job_id)["device_name"]
        children = psutil.Process(agents[holder].pid).children()
        assert any("spawn_main" in " ".join(c.cmdline()) for c in children)  # the run's own
        agents[holder].send_signal(signal.SIGKILL)
        wait_until(lambda: not any(c.is_running() and c.status() != "zombie" for c in children),
                   timeout=10, what="the killed agent's run process to end too")  # fmt: skip
        run = finished(fast_leases, job_id)["runs"][0]
        assert run["attempts"] == 2 and run["device_name"] != holder
        results = fast_leases.api("/api/v1/results", job=job_id)
        assert len(results) == 1 and results[0]["device_name"] != holder
    finally:
        for process in agents.values():
            stop(process)


def test_frozen_agent_late_writes_are_refused(
    fast_leases: Coordinator, tmp_path: Path, tiny_model: Path
) -> None:
    agents = two_agents(fast_leases, tmp_path)
    try:
        job_id = long_job(fast_leases, tiny_model)
        holder = holder_when_measuring(fast_leases, job_id)["device_name"]
        os.killpg(agents[holder].pid, signal.SIGSTOP)  # the whole agent, past its lease: 5 s
        run = finished(fast_leases, job_id)["runs"][0]
        assert run["device_name"] != holder and run["lease_epoch"] == 2
        os.killpg(agents[holder].pid, signal.SIGCONT)
        log = tmp_path / holder / "agent.log"
        # Resumed, it either stops by itself (no heartbeat acknowledged for a whole lease)
        # or its first late write is refused, whichever comes first; never a second result.
        told = ("FAILED_PRECONDITION", "abandoned: no heartbeat acknowledged")
        wait_until(lambda: any(word in log.read_text() for word in told), timeout=60,
                   what="the resumed agent to stop its stale run")  # fmt: skip
        results = fast_leases.api("/api/v1/results", job=job_id)
        assert len(results) == 1 and results[0]["device_name"] != holder
    finally:
        for process in agents.values():
            os.killpg(process.pid, signal.SIGCONT) if process.poll() is None else None
            stop(process)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_results_wait_in_the_outbox_while_the_coordinator_is_down(
    tmp_path: Path, tiny_model: Path
) -> None:
    ports = ("--grpc-port", str(_free_port()), "--http-port", str(_free_port()))
    home = tmp_path / "coordinator"
    home.mkdir()
    coord = start_coordinator(home, *ports, "--lease-seconds", "60")
    agent_home = tmp_path / "agent"
    agent_home.mkdir()
    enroll_agent(coord, agent_home, "steady")
    agent = start_agent(agent_home)
    try:
        wait_until(lambda: any(d["online"] for d in coord.api("/api/v1/devices")),
                   what="the agent online")  # fmt: skip
        job_id = long_job(coord, tiny_model)
        holder_when_measuring(coord, job_id)
        coord.process.send_signal(signal.SIGKILL)  # no goodbye, mid-run
        coord.process.wait()
        log = agent_home / "agent.log"
        wait_until(lambda: "done: decode" in log.read_text(), timeout=120,
                   what="the run to finish with the coordinator down")  # fmt: skip
        from edgebench.agent.outbox import Outbox

        assert len(Outbox(agent_home / "data" / "outbox.sqlite")) == 1  # kept, not lost
        coord = start_coordinator(home, *ports, "--lease-seconds", "60")
        run = finished(coord, job_id)["runs"][0]
        assert run["attempts"] == 1
        results = coord.api("/api/v1/results", job=job_id)
        assert len(results) == 1
        wait_until(lambda: len(Outbox(agent_home / "data" / "outbox.sqlite")) == 0,
                   what="the outbox to drain")  # fmt: skip
    finally:
        stop(agent)
        stop(coord.process)


def test_a_full_disk_benches_the_device_and_its_run_goes_elsewhere(
    coordinator: Coordinator, tmp_path: Path, tiny_model: Path
) -> None:
    """The kernel's own ENOSPC (/dev/full under the download's partial file): the agent
    deletes the partial file, fails the run as its device's fault, reports the device
    unhealthy and asks for no work; another device finishes the run."""
    sha = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    full, spare = tmp_path / "full", tmp_path / "spare"
    enroll_agent(coordinator, full, "full-disk")
    enroll_agent(coordinator, spare, "spare")
    models = full / "cache" / "models"
    models.mkdir(parents=True)
    (models / f"{sha}.gguf.part").symlink_to("/dev/full")
    agent = start_agent(full)
    try:
        wait_until(lambda: any(d["online"] for d in coordinator.api("/api/v1/devices")),
                   what="the agent online")  # fmt: skip
        queued = coordinator.cli("jobs", "submit", "--model", str(tiny_model), "-p", "8",
                                 "-n", "4", "-r", "1", "--device", "full-disk",
                                 "--device", "spare")  # fmt: skip
        assert queued.returncode == 0, queued.stderr

        def device() -> Any:
            return coordinator.api("/api/v1/devices/full-disk")

        wait_until(lambda: device()["status"] == "unhealthy", what="the device benched")
        assert "its agent reported: the disk under" in device()["unhealthy"]
        assert not (models / f"{sha}.gguf.part").exists()
        wait_until(lambda: "taking no work: the disk is full" in (full / "agent.log").read_text(),
                   what="the agent to hold back")  # fmt: skip
        job = coordinator.api(f"/api/v1/jobs/{queued.stdout.strip()}")
        assert (
            job["runs"][0]["state"] == "queued"
            and "retried on another device" in (job["runs"][0]["error"])
        )
        helper = start_agent(spare)
        try:
            watched = coordinator.cli("jobs", "watch", queued.stdout.strip(), "--timeout", "120")
            assert watched.returncode == 0, watched.stderr
        finally:
            stop(helper)
    finally:
        stop(agent)
    shown = coordinator.cli("devices", "show", "full-disk")
    assert "unhealthy" in shown.stdout and "devices resume full-disk" in shown.stdout
