"""Admission and the operator's states through the CLI against real processes: a
coordinator that requires approval, a real agent, its job waiting until approved, then
drained and resumed; each state shown by `devices list`, `devices show` and `jobs show`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import enroll_agent, start_agent, start_coordinator, stop, wait_until

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
        audit = coord.cli("coordinator", "audit")
        assert "/devices/new-pi/drain" in audit.stdout and "/devices/new-pi/approve" in audit.stdout
    finally:
        stop(agent)
        stop(coord.process)
