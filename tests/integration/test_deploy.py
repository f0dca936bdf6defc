"""deploy/: the unit files people copy pass `systemd-analyze verify` (with ExecStart
pointed at this test venv), and the coordinator command line compose.yaml runs, parsed
from it, starts against a real PostgreSQL with the environment its env file names (on
loopback: the host it binds is the only change)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ADMIN_TOKEN, cli_env, stop

pytestmark = pytest.mark.slow
DEPLOY = Path(__file__).parents[2] / "deploy"


@pytest.mark.parametrize("unit", ["edgebench-agent.service", "edgebench-coordinator.service"])
def test_the_unit_files_verify(unit: str, tmp_path: Path) -> None:
    text = (DEPLOY / unit).read_text()
    assert "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text
    here = re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable}", text, flags=re.M)
    here = re.sub(r"^(User|Group)=.*$", r"\1=root", here, flags=re.M)  # users that exist here
    (tmp_path / unit).write_text(here)
    verified = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    complaints = [line for line in verified.stderr.splitlines() if unit in line]
    assert verified.returncode == 0 and not complaints, verified.stderr


def test_the_compose_coordinator_runs_against_postgresql(postgres_url: str, tmp_path: Path) -> None:
    compose: Any = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert services["coordinator"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["coordinator"]
    assert services["coordinator"]["env_file"] == "coordinator.env"
    example = (DEPLOY / "coordinator.env.example").read_text()
    assert "EDGEBENCH_TOKEN=" in example and "EDGEBENCH_DB=postgresql+psycopg://" in example
    command = [str(part) for part in services["coordinator"]["command"]]
    command[command.index("--host") + 1] = "127.0.0.1"  # tests stay on loopback
    for flag in ("--grpc-port", "--http-port"):
        command[command.index(flag) + 1] = "0"
    process = subprocess.Popen(
        [sys.executable, "-m", "edgebench", *command],
        env=cli_env(tmp_path, EDGEBENCH_TOKEN=ADMIN_TOKEN, EDGEBENCH_DB=postgres_url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith("READY"), process.stderr.read() if process.stderr else ""
    finally:
        stop(process)
    assert not (tmp_path / "data" / "coordinator.db").exists()  # the store was PostgreSQL
