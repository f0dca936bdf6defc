"""The agent as a systemd service: the unit `agent install --dry-run` prints passes
`systemd-analyze verify`; install and uninstall drive a recording `systemctl` first on
PATH (no systemd manager runs here); without a manager it says so; the agent sends READY
and WATCHDOG to NOTIFY_SOCKET, and stops when its loop hangs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Coordinator, enroll_agent, run_cli, start_agent, stop, wait_until

pytestmark = pytest.mark.slow


def _bin() -> Path:
    """The test venv's bin (the CLI under test runs from it)."""
    return Path(sys.executable).parent


def test_the_dry_run_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    printed = run_cli(tmp_path / "home", "agent", "install", "--dry-run",
                      PATH=f"{_bin()}:{os.environ['PATH']}")  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    agent_unit, _, sensors_unit = printed.stdout.partition("# edgebench-sensors.service\n")
    start = f"ExecStart={sys.executable} -m edgebench agent run"
    for needed in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ProtectSystem=strict",
                   "ProtectHome=read-only", "NoNewPrivileges=yes", start):  # fmt: skip
        assert needed in agent_unit, needed
    assert "ReadWritePaths=" in agent_unit and str(tmp_path / "home") in agent_unit
    units = tmp_path / "units"
    units.mkdir()
    (units / "edgebench-agent.service").write_text(agent_unit)
    (units / "edgebench-sensors.service").write_text(sensors_unit)
    verified = subprocess.run(
        ["systemd-analyze", "verify", *(str(p) for p in sorted(units.iterdir()))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    complaints = [line for line in verified.stderr.splitlines()
                  if "edgebench" in line and "Failed to" not in line]  # fmt: skip
    assert verified.returncode == 0 and not complaints, verified.stderr


def _recording_systemctl(where: Path, log: Path, state: str = "running") -> str:
    where.mkdir()
    script = where / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n'
                      f'[ "$2" = is-system-running ] && echo {state}\nexit 0\n')  # fmt: skip
    script.chmod(0o755)
    return f"{where}:{_bin()}:{os.environ['PATH']}"


def test_install_and_uninstall_drive_systemctl_and_refuse_without_a_manager(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    home, fake_home = tmp_path / "pi", tmp_path / "user"
    fake_home.mkdir()
    log = tmp_path / "systemctl.log"
    path = _recording_systemctl(tmp_path / "bin", log)
    token = coordinator.cli("coordinator", "token", "create").stdout.strip()
    installed = run_cli(home, "agent", "install", "--user", "--coordinator", coordinator.grpc,
                        "--token", token, "--name", "service-pi", PATH=path,
                        HOME=str(fake_home))  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    unit = fake_home / ".config/systemd/user/edgebench-agent.service"
    assert unit.is_file() and "WantedBy=default.target" in unit.read_text()
    assert "User=" not in unit.read_text()  # a user unit runs as its user
    calls = log.read_text().splitlines()
    assert calls[-2:] == ["--user daemon-reload", "--user enable --now edgebench-agent.service"]
    assert [d["name"] for d in coordinator.api("/api/v1/devices")] == ["service-pi"]
    assert "edgebench-agent.service enabled and started" in installed.stderr
    removed = run_cli(home, "agent", "uninstall", "--user", PATH=path, HOME=str(fake_home))
    assert removed.returncode == 0 and not unit.exists(), removed.stderr
    assert "--user disable --now edgebench-agent.service" in log.read_text()
    again = run_cli(home, "agent", "uninstall", "--user", PATH=path, HOME=str(fake_home))
    assert again.returncode == 1 and "nothing to uninstall" in again.stderr
    offline = _recording_systemctl(tmp_path / "bin-offline", tmp_path / "o.log", "offline")
    refused = run_cli(home, "agent", "install", "--user", PATH=offline, HOME=str(fake_home))
    assert refused.returncode == 1 and "no systemd manager here" in refused.stderr
    assert "agent run" in refused.stderr


def test_the_agent_tells_systemd_it_is_ready_and_alive_until_it_hangs(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    home = tmp_path / "pi"
    enroll_agent(coordinator, home, "notifying-pi")
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.2)
    said: list[str] = []

    def read() -> list[str]:
        try:
            while True:
                said.append(listener.recv(4096).decode())
        except TimeoutError:
            return said

    os.environ["NOTIFY_SOCKET"] = address
    try:
        agent = start_agent(home)
    finally:
        del os.environ["NOTIFY_SOCKET"]
    try:
        wait_until(lambda: any(s.startswith("READY=1") for s in read()), what="READY=1")
        wait_until(lambda: "WATCHDOG=1" in read(), timeout=30, what="a watchdog ping")
        os.kill(agent.pid, signal.SIGSTOP)  # the loop hangs
        read()
        said.clear()
        wait_until(lambda: not read() and True, timeout=5)
        listener.settimeout(12)  # two heartbeats (5 s) and more: nothing comes
        with pytest.raises(TimeoutError):
            listener.recv(4096)
        os.kill(agent.pid, signal.SIGCONT)
    finally:
        stop(agent)
        listener.close()


def test_agent_status_says_what_the_agent_on_this_device_is_doing(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    home = tmp_path / "pi"
    never = run_cli(home, "agent", "status")
    assert never.returncode == 0 and "running: False" in never.stdout
    assert "enrolled: False" in never.stdout and "not running" in never.stdout
    enroll_agent(coordinator, home, "status-pi")
    agent = start_agent(home)
    try:

        def connected() -> bool:
            said = run_cli(home, "agent", "status", "--json")
            return '"state": "connected"' in said.stdout

        wait_until(connected, what="the agent connected")
        shown = run_cli(home, "agent", "status")
        assert shown.returncode == 0, shown.stderr
        for line in ("running: True", "state: connected", "device: status-pi",
                     f"coordinator: {coordinator.grpc}", "outbox results: 0",
                     "log: the terminal that runs"):  # fmt: skip
            assert line in shown.stdout, line
    finally:
        stop(agent)
    after = run_cli(home, "agent", "status")
    assert "running: False" in after.stdout and "state: not running" in after.stdout
