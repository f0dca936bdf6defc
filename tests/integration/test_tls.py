"""TLS on a real coordinator, agent and CLI: what a wiretap on the path sees, which servers
an agent trusts with nothing but its token, and plaintext only where it was asked for."""

from __future__ import annotations

import json
import ssl
import subprocess
from pathlib import Path

from cryptography import x509

from tests.conftest import (
    ADMIN_TOKEN,
    Coordinator,
    run_cli,
    start_agent,
    start_coordinator,
    stop,
    wait_until,
)
from tests.tcpproxy import TcpProxy


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def _token(coord: Coordinator) -> str:
    made = coord.cli("coordinator", "token", "create")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def _enroll(home: Path, address: str, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    home.mkdir(exist_ok=True)
    return run_cli(home, "agent", "enroll", "--coordinator", address, "--token", token, *extra)


def test_a_wiretap_sees_no_token_and_no_secret(coordinator: Coordinator, tmp_path: Path) -> None:
    token = _token(coordinator)
    secret, _, fingerprint = token.rpartition(".")
    assert fingerprint == coordinator.fingerprint
    proxy = TcpProxy(coordinator.grpc)
    agent_home = tmp_path / "agent"
    try:
        enrolled = _enroll(agent_home, proxy.address, token, "--name", "tapped")
        assert enrolled.returncode == 0, enrolled.stderr
        assert "(TLS, CA pinned)" in enrolled.stderr
        credential = json.loads((agent_home / "config" / "agent.json").read_text())
        assert credential["authority_pem"] == coordinator.authority_pem.decode()
        agent = start_agent(agent_home)
        try:
            wait_until(lambda: any(d["online"] for d in coordinator.api("/api/v1/devices")),
                       what="the agent online through the tap")  # fmt: skip
        finally:
            stop(agent)
    finally:
        proxy.close()
    tapped = bytes(proxy.recorded)
    assert len(tapped) > 1000  # the handshake, the enrollment and a session went through
    for readable in (secret, credential["secret"], credential["agent_id"], "tapped"):
        assert readable.encode() not in tapped, f"{readable!r} crossed the wire readable"


def test_the_admin_token_crosses_https_encrypted(tmp_path: Path) -> None:
    coord = start_coordinator(tmp_path, "--https")
    proxy = TcpProxy(coord.http.removeprefix("https://"))
    try:
        assert coord.http.startswith("https://")
        listed = coord.cli("jobs", "list", "--url", f"https://{proxy.address}")
        assert listed.returncode == 0, listed.stderr
        assert "Jobs" in listed.stdout  # the table's title: the API answered
    finally:
        proxy.close()
        stop(coord.process)
    assert len(proxy.recorded) > 500
    assert ADMIN_TOKEN.encode() not in bytes(proxy.recorded)


def test_the_cli_refuses_an_https_coordinator_it_cannot_verify(tmp_path: Path) -> None:
    coord = start_coordinator(tmp_path / "coordinator", "--https")
    stranger = tmp_path / "elsewhere"  # another host: no local coordinator's CA
    stranger.mkdir()
    try:
        line = _one_line_error(run_cli(stranger, "jobs", "list", "--url", coord.http))
        assert "coordinator ca" in line and "--ca" in line
        ca = coord.cli("coordinator", "ca")
        assert ca.returncode == 0, ca.stderr
        assert ca.stdout.startswith("-----BEGIN CERTIFICATE-----")
        assert f"sha256 fingerprint: {coord.fingerprint}" in ca.stderr
        only = coord.cli("coordinator", "ca", "--fingerprint")
        assert only.stdout.strip() == coord.fingerprint
        (stranger / "ca.pem").write_text(ca.stdout)
        listed = run_cli(stranger, "jobs", "list", "--url", coord.http, "--ca",
                         str(stranger / "ca.pem"), EDGEBENCH_TOKEN=ADMIN_TOKEN)  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        by_env = run_cli(stranger, "devices", "list", "--url", coord.http,
                         EDGEBENCH_CA=str(stranger / "ca.pem"))  # fmt: skip
        assert by_env.returncode == 0, by_env.stderr
    finally:
        stop(coord.process)


def test_a_token_of_another_coordinator_is_refused_and_nothing_saved(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    other = start_coordinator(tmp_path / "other")
    try:
        foreign = _token(other)
    finally:
        stop(other.process)
    home = tmp_path / "agent"
    line = _one_line_error(_enroll(home, coordinator.grpc, foreign))
    assert "is not the coordinator the token was made by" in line
    assert not (home / "config" / "agent.json").exists()
    damaged = _token(coordinator)[:-3]
    assert "64 hex digits" in _one_line_error(_enroll(home, coordinator.grpc, damaged))


def test_plaintext_only_when_asked_for_and_only_on_loopback_by_default(tmp_path: Path) -> None:
    coord = start_coordinator(tmp_path / "coordinator", "--insecure")
    try:
        assert coord.fingerprint is None
        assert "plaintext" in (coord.home / "coordinator.log").read_text()
        token = _token(coord)
        assert "." not in token
        home = tmp_path / "agent"
        refused = _one_line_error(_enroll(home, "10.255.0.1:50051", token))
        assert "refusing plaintext to 10.255.0.1" in refused and "--insecure" in refused
        enrolled = _enroll(home, coord.grpc, token, "--name", "plain")
        assert enrolled.returncode == 0, enrolled.stderr
        assert "(plaintext)" in enrolled.stderr
        run = run_cli(home, "agent", "run", "--coordinator", "10.255.0.1:50051", timeout=30)
        assert "refusing plaintext to 10.255.0.1" in _one_line_error(run)
    finally:
        stop(coord.process)


def test_the_tls_agent_refuses_a_coordinator_that_speaks_plaintext(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    plain = start_coordinator(tmp_path / "plain", "--insecure")
    try:
        token = f"{_token(plain)}.{coordinator.fingerprint}"
        line = _one_line_error(_enroll(tmp_path / "agent", plain.grpc, token))
        assert "does not speak TLS" in line
    finally:
        stop(plain.process)


def test_extra_names_are_in_the_server_certificate(tmp_path: Path) -> None:
    coord = start_coordinator(tmp_path, "--tls-name", "bench.example", "--tls-name", "10.9.8.7")
    try:
        host, port = coord.grpc.rsplit(":", 1)
        leaf = x509.load_pem_x509_certificate(
            ssl.get_server_certificate((host, int(port))).encode()
        )
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "bench.example" in names.get_values_for_type(x509.DNSName)
        assert "10.9.8.7" in {str(a) for a in names.get_values_for_type(x509.IPAddress)}
    finally:
        stop(coord.process)


def test_a_revoked_device_is_cut_off_within_a_heartbeat_and_stays_refused(
    coordinator: Coordinator, tmp_path: Path, tiny_model: Path
) -> None:
    home = tmp_path / "board"
    enrolled = _enroll(home, coordinator.grpc, _token(coordinator), "--name", "lost-board")
    assert enrolled.returncode == 0, enrolled.stderr
    old_credential = (home / "config" / "agent.json").read_text()
    agent = start_agent(home)
    try:
        wait_until(lambda: any(d["online"] for d in coordinator.api("/api/v1/devices")),
                   what="the agent online")  # fmt: skip
        submitted = coordinator.cli("jobs", "submit", "--model", str(tiny_model), "-p", "8",
                                    "-n", "512", "-r", "20", "--device", "lost-board")  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        wait_until(lambda: coordinator.api(f"/api/v1/jobs/{job_id}")["runs"][0]["state"]
                   == "leased", what="the run leased")  # fmt: skip
        revoked = coordinator.cli("devices", "revoke", "lost-board")
        assert revoked.returncode == 0 and "lost-board revoked" in revoked.stderr
        agent.wait(timeout=15)  # a heartbeat is 5 s here
    finally:
        stop(agent)
    said = (home / "agent.log").read_text()
    assert "device lost-board was revoked" in said
    (device,) = coordinator.api("/api/v1/devices")
    assert device["status"] == "revoked" and device["revoked_at"]
    run = coordinator.api(f"/api/v1/jobs/{job_id}")["runs"][0]
    assert run["state"] == "queued"  # its lease ended with the revocation
    again = _enroll(tmp_path / "thief", coordinator.grpc, _token(coordinator), "--name",
                    "lost-board")  # fmt: skip
    assert again.returncode == 1 and "already enrolled" in again.stderr
    made = coordinator.cli("coordinator", "token", "create", "--device", "lost-board")
    back = _enroll(tmp_path / "reinstalled", coordinator.grpc, made.stdout.strip(), "--name",
                   "lost-board")  # fmt: skip
    assert back.returncode == 0, back.stderr
    (device,) = coordinator.api("/api/v1/devices")
    assert device["status"] != "revoked"
    (home / "config" / "agent.json").write_text(old_credential)  # the old board returns
    refused = run_cli(home, "agent", "run", timeout=30)
    assert refused.returncode == 1 and "refused this agent's credential" in refused.stderr


def test_rotating_the_secret_retires_the_old_one(coordinator: Coordinator, tmp_path: Path) -> None:
    home = tmp_path / "board"
    assert _enroll(home, coordinator.grpc, _token(coordinator), "--name", "rotated").returncode == 0
    path = home / "config" / "agent.json"
    before = path.read_text()
    rotated = run_cli(home, "agent", "rotate")
    assert rotated.returncode == 0 and "rotated has a new secret" in rotated.stderr
    assert json.loads(path.read_text())["secret"] != json.loads(before)["secret"]
    agent = start_agent(home)
    try:
        wait_until(lambda: any(d["online"] for d in coordinator.api("/api/v1/devices")),
                   what="the agent online with its new secret")  # fmt: skip
    finally:
        stop(agent)
    path.write_text(before)  # a copy of the old credential, elsewhere
    refused = run_cli(home, "agent", "run", timeout=30)
    assert refused.returncode == 1 and "refused this agent's credential" in refused.stderr
    again = run_cli(home, "agent", "rotate")
    assert again.returncode == 1 and "rotation refused" in again.stderr
