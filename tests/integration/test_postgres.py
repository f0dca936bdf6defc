"""Two coordinator processes on one PostgreSQL database serve agents at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import enroll_agent, start_agent, start_coordinator, stop, wait_until

pytestmark = pytest.mark.slow


def test_two_coordinators_on_one_database_never_dispatch_twice(
    postgres_url: str, tmp_path: Path, tiny_model: Path
) -> None:
    coordinators, agents = [], []
    try:
        for name in ("east", "west"):
            home = tmp_path / f"coordinator-{name}"
            home.mkdir()
            shared = ("--artifact-dir", str(tmp_path / "shared-artifacts"))
            coord = start_coordinator(home, "--db", postgres_url, "--reap-seconds", "1", *shared)
            coordinators.append(coord)
            agent_home = tmp_path / f"agent-{name}"
            agent_home.mkdir()
            enroll_agent(coord, agent_home, f"box-{name}")  # each agent dials its own
            agents.append(start_agent(agent_home))
        east, west = coordinators
        wait_until(lambda: sum(d["online"] for d in west.api("/api/v1/devices")) == 2,
                   what="both agents online, seen from either coordinator")  # fmt: skip
        # one job of 8 runs (about a second each), queued through one coordinator, taken
        # by the agents of both
        done = east.cli("jobs", "submit", "--model", str(tiny_model), "-p", "8,16,24,32",
                        "-n", "400,500", "-r", "2", "--warmup", "0", "--threads", "1")  # fmt: skip
        assert done.returncode == 0, done.stderr

        def all_done() -> bool:
            return all(j["state"] in ("succeeded", "failed") for j in west.api("/api/v1/jobs"))

        wait_until(all_done, timeout=120, what="every job to finish")
        jobs = west.api("/api/v1/jobs")
        runs = [run for job in jobs for run in job["runs"]]
        assert len(jobs) == 1
        assert [run["state"] for run in runs] == ["succeeded"] * 8, [r["error"] for r in runs]
        assert all(run["attempts"] == 1 for run in runs)
        results = east.api("/api/v1/results")
        assert len(results) == 8 and len({r["run_id"] for r in results}) == 8
        assert {r["device_name"] for r in results} == {"box-east", "box-west"}
    finally:
        for process in agents:
            stop(process)
        for coord in coordinators:
            stop(coord.process)
