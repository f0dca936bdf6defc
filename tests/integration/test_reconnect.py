"""The agent keeps working across a coordinator restart: it reconnects with backoff."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import enroll_agent, run_cli, start_agent, start_coordinator, stop, wait_until

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_agent_reconnects_after_coordinator_restart(tmp_path: Path, tiny_model: Path) -> None:
    ports = ("--grpc-port", str(_free_port()), "--http-port", str(_free_port()))
    coord_home, agent_home = tmp_path / "coordinator", tmp_path / "agent"
    coord_home.mkdir()
    agent_home.mkdir()
    coord = start_coordinator(coord_home, *ports)
    enroll_agent(coord, agent_home, "phoenix")
    agent = start_agent(agent_home)
    try:
        online = lambda: any(d["online"] for d in coord.api("/api/v1/devices"))  # noqa: E731
        wait_until(online, what="the agent to connect")
        stop(coord.process)
        log = agent_home / "agent.log"
        wait_until(lambda: "not reachable" in log.read_text(), what="the agent to notice")
        assert agent.poll() is None  # still running, retrying with backoff

        coord = start_coordinator(coord_home, *ports)
        done = coord.cli(
            "jobs",
            "submit",
            "--model",
            str(tiny_model),
            "-p",
            "8",
            "-n",
            "4",
            "-r",
            "1",
            "--wait",
            "--timeout",
            "120",
        )
        assert done.returncode == 0, done.stderr + log.read_text()
        assert "phoenix" in done.stdout
    finally:
        stop(agent)
        stop(coord.process)


def test_unreachable_coordinator_at_enrollment(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "agent", "enroll", "--coordinator", f"127.0.0.1:{_free_port()}", "--token", "t"
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: coordinator not reachable at 127.0.0.1:")
