"""The coordinator serves the wheel of its own edgebench at /agent/, and
deploy/install-agent.sh installs an agent from it in a fresh HOME, enrolls it and (no
systemd manager runs here) reports the service install as skipped; the agent it
installed then connects. No network: the venv sees this venv's packages through a .pth
file and pip runs with PIP_NO_INDEX, so only the served wheel is installed."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import Coordinator, stop, wait_until

pytestmark = pytest.mark.slow
INSTALLER = Path(__file__).parents[2] / "deploy" / "install-agent.sh"
SERVER_ONLY = ("fastapi", "starlette", "sqlmodel", "sqlalchemy", "uvicorn", "alembic")


def test_the_served_wheel_is_this_edgebench_and_its_agent_extra_has_no_server(
    coordinator: Coordinator,
) -> None:
    listed = httpx.get(coordinator.http + "/agent/", timeout=120).json()
    wheel = httpx.get(coordinator.http + f"/agent/{listed['wheel']}", timeout=60)
    assert wheel.status_code == 200
    assert hashlib.sha256(wheel.content).hexdigest() == listed["sha256"]
    assert listed["wheel"] == f"edgebench-{listed['version']}-py3-none-any.whl"
    names = zipfile.ZipFile(io.BytesIO(wheel.content)).namelist()
    assert "edgebench/agent/session.py" in names
    assert any(n.endswith("migrations/versions/0019_device_states.py") for n in names)
    metadata = (
        zipfile.ZipFile(io.BytesIO(wheel.content))
        .read(f"edgebench-{listed['version']}.dist-info/METADATA")
        .decode()
    )
    agent_needs = [line for line in metadata.splitlines() if 'extra == "agent"' in line]
    assert agent_needs and not any(name in line.lower() for line in agent_needs
                                   for name in SERVER_ONLY)  # fmt: skip
    other = httpx.get(coordinator.http + "/agent/evil.whl", timeout=10)
    assert other.status_code == 404


def _dependencies_without_edgebench(tmp_path: Path) -> Path:
    """This venv's packages but not edgebench itself (links), so that pip finds every
    dependency installed and still installs the served wheel."""
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("edgebench", "__editable__")):
            (deps / entry.name).symlink_to(entry)
    return deps


def test_install_agent_sh_installs_enrolls_and_skips_the_unit_without_systemd(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    home, venv = tmp_path / "home", tmp_path / "venv"
    home.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    fresh_site = next(venv.glob("lib/python*/site-packages"))
    (fresh_site / "deps.pth").write_text(f"{_dependencies_without_edgebench(tmp_path)}\n")
    token = coordinator.cli("coordinator", "token", "create").stdout.strip()
    # nothing of this checkout may leak in (a PYTHONPATH would shadow the installed wheel)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EDGEBENCH_") and k != "PYTHONPATH"}  # fmt: skip
    env.update(HOME=str(home), EDGEBENCH_HOME=str(home / "edgebench"), PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")  # fmt: skip
    args = ["sh", str(INSTALLER), "--coordinator", coordinator.grpc, "--token", token,
            "--url", coordinator.http, "--venv", str(venv), "--name", "scripted-pi"]  # fmt: skip
    first = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert first.returncode == 0, first.stderr + first.stdout
    assert "service install skipped: no systemd manager runs here" in first.stdout
    where = "import edgebench; print(edgebench.__file__)"
    installed = subprocess.run([str(venv / "bin/python"), "-c", where], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)  # fmt: skip
    assert installed.stdout.startswith(str(fresh_site)), installed.stdout
    again = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0 and "enrolled already" in again.stdout, again.stderr
    helped = subprocess.run(["sh", str(INSTALLER), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--coordinator HOST:PORT" in helped.stdout
    agent = subprocess.Popen([str(venv / "bin/python"), "-m", "edgebench", "agent", "run"],
                             env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, text=True,
                             start_new_session=True)  # fmt: skip
    try:
        wait_until(lambda: any(d["online"] for d in coordinator.api("/api/v1/devices")),
                   what="the scripted agent online")  # fmt: skip
    finally:
        stop(agent)
    assert [d["name"] for d in coordinator.api("/api/v1/devices")] == ["scripted-pi"]
