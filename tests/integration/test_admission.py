"""Admission and the operator's states through the CLI against real processes: a
coordinator that requires approval, a real agent, its job waiting until approved, then
drained and resumed; each state shown by `devices list`, `devices show` and `jobs show`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgebench import __version__
from edgebench.protocol import too_old
from tests.conftest import (
    Coordinator,
    cli_env,
    enroll_agent,
    start_agent,
    start_coordinator,
    stop,
    wait_until,
)

pytestmark = pytest.mark.slow
SMALL = ("-p", "8", "-n", "4", "-r", "1")


def test_a_device_takes_work_once_approved_and_none_while_drained(
    tmp_path: Path, tiny_model: Path
) -> None:
    coord = start_coordinator(tmp_path / "coordinator", "--require-approval")
    home = tmp_path / "pi"
    enroll_agent(coord, home, "new-pi")
    agent = start_agent(home)
    try:
        wait_until(lambda: coord.api("/api/v1/devices/new-pi")["liveness"] != "offline",
                   what="the agent online")  # fmt: skip
        listed = coord.cli("devices", "list")
        assert listed.returncode == 0 and "pending" in listed.stdout
        queued = coord.cli("jobs", "submit", "--model", str(tiny_model), *SMALL)
        assert queued.returncode == 0, queued.stderr
        job_id = queued.stdout.strip()

        def says(text: str, job: str) -> bool:
            return text in coord.cli("jobs", "show", job).stdout

        wait_until(lambda: says("new-pi is pending (devices approve)", job_id), what="why")
        shown = coord.cli("devices", "show", "new-pi")
        assert "admission pending" in shown.stdout and "devices approve new-pi" in shown.stdout
        approved = coord.cli("devices", "approve", "new-pi")
        assert approved.returncode == 0 and "new-pi approved" in approved.stderr
        watched = coord.cli("jobs", "watch", job_id, "--timeout", "120")
        assert watched.returncode == 0, watched.stderr

        drained = coord.cli("devices", "drain", "new-pi", "--reason", "fan swap")
        assert drained.returncode == 0 and "new-pi drained" in drained.stderr
        said = coord.cli("devices", "show", "new-pi").stdout
        assert "drained" in said and "by admin from 127.0.0.1" in said and "fan swap" in said
        held = coord.cli("jobs", "submit", "--model", str(tiny_model), *SMALL)
        assert held.returncode == 0, held.stderr
        wait_until(lambda: says("new-pi is drained", held.stdout.strip()), what="why drained")
        page = coord.api("/api/v1/devices/new-pi")
        assert (page["status"], page["operator_state"]) == ("drained", "drained")
        resumed = coord.cli("devices", "resume", "new-pi")
        assert resumed.returncode == 0, resumed.stderr
        done = coord.cli("jobs", "watch", held.stdout.strip(), "--timeout", "120")
        assert done.returncode == 0, done.stderr
        kept_out = coord.cli("devices", "maintenance", "new-pi", "--reason", "reflash")
        assert kept_out.returncode == 0 and "new-pi in maintenance" in kept_out.stderr
        assert "maintenance" in coord.cli("devices", "list").stdout
        refused = coord.cli("devices", "reject", "new-pi")
        assert refused.returncode == 0 and "new-pi rejected" in refused.stderr
        assert "rejected" in coord.cli("devices", "list").stdout
        again = coord.cli("devices", "approve", "new-pi")
        assert again.returncode == 1 and "new-pi was rejected" in again.stderr
        audit = coord.cli("coordinator", "audit")
        assert "/devices/new-pi/drain" in audit.stdout and "/devices/new-pi/approve" in audit.stdout
    finally:
        stop(agent)
        stop(coord.process)


def test_an_agent_older_than_the_protocol_is_refused_with_the_version_to_install(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    home = tmp_path / "old"
    enroll_agent(coordinator, home, "old-pi")
    pretend = (
        "import sys; import edgebench.agent.hardware as h; h.__version__ = '0.0.9'; "
        "from edgebench.cli.main import main; sys.argv[0] = 'edgebench'; main()"
    )
    old = subprocess.run([sys.executable, "-c", pretend, "agent", "run"], env=cli_env(home),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert old.returncode == 1, old.stderr
    assert "this agent runs edgebench 0.0.9" in old.stderr
    assert f"install edgebench {__version__} on the agent" in old.stderr
    assert [d["status"] for d in coordinator.api("/api/v1/devices")] == ["offline"]


def test_versions_compare_by_their_numbers() -> None:
    assert too_old("0.0.9") and too_old("garbage") and too_old("0.0.1", "0.1")
    assert not too_old("0.1.0") and not too_old("0.10.0") and not too_old("1.0")
    assert not too_old("")  # not reported: not judged
