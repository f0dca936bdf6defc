"""Bad input from the CLI, HTTP and gRPC: one clear error, nothing stored, still serving."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import (
    ADMIN_TOKEN,
    Coordinator,
    enroll_agent,
    run_cli,
    start_coordinator,
    stop,
)

pytestmark = pytest.mark.slow


def _count(coord: Coordinator, table: str) -> int:
    with sqlite3.connect(coord.db_path) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _one_clear_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return str(lines[0])


def test_wrong_admin_token_is_refused(coordinator: Coordinator, tiny_model: Path) -> None:
    line = _one_clear_line(coordinator.cli("coordinator", "token", "create", token="wrong"))
    assert line == "error: admin token missing or wrong: set EDGEBENCH_TOKEN or pass --token"
    submitted = coordinator.cli("jobs", "submit", "--model", str(tiny_model), token="wrong")
    assert submitted.returncode == 1 and submitted.stdout == ""
    assert _count(coordinator, "enrollmenttoken") == 0
    assert _count(coordinator, "artifact") == 0 and _count(coordinator, "job") == 0


def test_wrong_enrollment_token_is_refused(coordinator: Coordinator, tmp_path: Path) -> None:
    made_up = f"ebe_made_up.{coordinator.fingerprint}"
    result = run_cli(
        tmp_path, "agent", "enroll", "--coordinator", coordinator.grpc, "--token", made_up
    )
    assert "enrollment refused: enrollment token is unknown, used up or revoked" in _one_clear_line(
        result
    )
    assert not (tmp_path / "config" / "agent.json").exists()
    assert _count(coordinator, "device") == 0 and _count(coordinator, "agent") == 0
    not_enrolled = run_cli(tmp_path, "agent", "run")
    assert "not enrolled" in _one_clear_line(not_enrolled)
    # a token cut at its fingerprint would try plaintext: the error says what is missing
    cut = run_cli(tmp_path, "agent", "enroll", "--coordinator", coordinator.grpc, "--token",
                  "ebe_made_up")  # fmt: skip
    assert "speaks TLS: enroll with the whole token" in _one_clear_line(cut)


def test_missing_or_non_gguf_model_is_refused(coordinator: Coordinator, tmp_path: Path) -> None:
    missing = coordinator.cli("jobs", "submit", "--model", str(tmp_path / "nope.gguf"))
    assert "model file not found" in _one_clear_line(missing)
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    assert "not a GGUF model file" in _one_clear_line(
        coordinator.cli("jobs", "submit", "--model", str(text))
    )
    assert _count(coordinator, "artifact") == 0 and _count(coordinator, "job") == 0


def test_malformed_http_requests_store_nothing(coordinator: Coordinator) -> None:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    api = httpx.Client(base_url=coordinator.http, headers=auth, timeout=10)
    bad_bodies = [
        ({"models": ["not-a-sha"]}, "is not a sha256"),
        ({"models": ["a" * 64]}, "was never uploaded"),
        ({"model_sha256": "a" * 64}, "models"),  # the field is `models`
    ]
    for body, reason in bad_bodies:
        response = api.post("/api/v1/jobs", json=body)
        assert response.status_code == 422, body
        assert reason in json.dumps(response.json()["detail"]), response.json()
    assert (
        api.post(
            "/api/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    data = b"GGUF" + b"\x00" * 100
    wrong_sha = hashlib.sha256(b"other").hexdigest()
    upload = api.put(f"/api/v1/artifacts/{wrong_sha}", params={"filename": "m.gguf"}, content=data)
    assert upload.status_code == 422 and "does not match" in upload.json()["detail"]
    not_gguf = b"PK" * 50
    upload = api.put(
        f"/api/v1/artifacts/{hashlib.sha256(not_gguf).hexdigest()}",
        params={"filename": "m.gguf"},
        content=not_gguf,
    )
    assert upload.status_code == 422 and "not a GGUF" in upload.json()["detail"]
    assert httpx.get(f"{coordinator.http}/api/v1/jobs/{uuid.uuid4()}").status_code == 404
    assert httpx.get(f"{coordinator.http}/devices/<script>").status_code == 404
    assert "<script>" not in httpx.get(f"{coordinator.http}/devices/<script>").text
    assert _count(coordinator, "job") == 0 and _count(coordinator, "artifact") == 0
    assert not list((coordinator.home / "data" / "artifacts").glob("*"))
    assert httpx.get(f"{coordinator.http}/api/v1/devices").status_code == 200  # still serving


def test_job_requests_that_cannot_run_store_no_job(coordinator: Coordinator) -> None:
    """Each body fails for its own reason, against a model that was uploaded."""
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    api = httpx.Client(base_url=coordinator.http, headers=auth, timeout=10)
    data = b"GGUF" + b"\x00" * 100
    sha = hashlib.sha256(data).hexdigest()
    upload = api.put(f"/api/v1/artifacts/{sha}", params={"filename": "m.gguf"}, content=data)
    assert upload.status_code == 201, upload.text
    bad_bodies = [
        ({"models": [sha], "n_gen": [0]}, "between 2 and 131072"),
        ({"models": [sha], "device": "../etc"}, "device"),
        ({"models": [sha], "backends": ["tensorflow"]}, "unknown backend 'tensorflow'"),
        ({"models": [sha], "variants": ["int8"]}, "variant 'int8' cannot be made"),
        ({"models": [sha], "n_ctx": 100, "n_prompt": [64]}, "context size 100 cannot hold"),
        ({"models": [sha], "n_ctx": -1}, "n_ctx"),
        ({"models": [sha], "workload": {"engine": {"flash_attn": "sometimes"}}}, "flash_attn"),
        ({"models": [sha], "workload": {"tests": {"n_gen": [1]}}}, "decode speed needs two"),
        ({"models": [sha], "workload": {"bogus": {}}}, "bogus"),
        ({"models": [sha], "workload": {"engine": {"provider": "x; rm"}}}, "provider"),
        ({"models": [sha], "reps": 2, "workload": {}}, "not both"),
    ]
    for body, reason in bad_bodies:
        response = api.post("/api/v1/jobs", json=body)
        assert response.status_code == 422, body
        assert reason in json.dumps(response.json()["detail"]), response.json()
    assert _count(coordinator, "job") == 0 and _count(coordinator, "run") == 0
    assert api.post("/api/v1/jobs", json={"models": [sha], "n_ctx": 512}).status_code == 201


def test_unreachable_coordinator_and_busy_port(coordinator: Coordinator, tmp_path: Path) -> None:
    unreachable = run_cli(tmp_path, "jobs", "list", "--url", "http://127.0.0.1:9")
    assert _one_clear_line(unreachable) == "error: coordinator not reachable at http://127.0.0.1:9"
    port = coordinator.http.rsplit(":", 1)[1]
    busy = run_cli(tmp_path, "coordinator", "serve", "--http-port", port, "--grpc-port", "0")
    assert f"HTTP port {port} on 127.0.0.1 is already in use" in _one_clear_line(busy)


def _enrolled_stub(
    coordinator: Coordinator,
) -> tuple[pb_grpc.AgentServiceStub, tuple[tuple[str, str], ...], grpc.Channel]:
    token = coordinator.token_secret()
    channel = coordinator.channel()
    stub = pb_grpc.AgentServiceStub(channel)
    reply = stub.Enroll(pb.EnrollRequest(token=token, name="raw-agent"), timeout=10)
    metadata = (
        ("x-edgebench-agent-id", reply.agent_id),
        ("x-edgebench-agent-secret", reply.secret),
    )
    return stub, metadata, channel


def test_grpc_refuses_bad_credentials_names_and_results(coordinator: Coordinator) -> None:
    stub, metadata, channel = _enrolled_stub(coordinator)
    hello = pb.AgentMessage(hello=pb.Hello())
    with pytest.raises(grpc.RpcError) as refused:
        list(
            stub.Session(
                iter([hello]),
                metadata=(("x-edgebench-agent-id", "x"), ("x-edgebench-agent-secret", "y")),
                timeout=10,
            )
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as bad_name:
        stub.Enroll(pb.EnrollRequest(token="t", name="bad name!"), timeout=10)
    assert bad_name.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as no_hello:
        list(
            stub.Session(
                iter([pb.AgentMessage(heartbeat=pb.Heartbeat())]), metadata=metadata, timeout=10
            )
        )
    assert no_hello.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    forged = pb.RunResult(
        result_id=str(uuid.uuid4()),
        run_id=str(uuid.uuid4()),
        lease_epoch=1,
        metrics=pb.Metrics(
            backend="llama_cpp",
            variant="F32",
            model_sha256="a" * 64,
            n_gen=2,
            reps=1,
            decode_tps=-5.0,
        ),
    )
    not_uuid = pb.RunResult(result_id="123", run_id="x")
    replies = list(
        stub.Session(
            iter([hello, pb.AgentMessage(result=forged), pb.AgentMessage(result=not_uuid)]),
            metadata=metadata,
            timeout=10,
        )
    )
    acks = [r.ack for r in replies if r.HasField("ack")]
    assert [a.accepted for a in acks] == [False, False]
    assert [a.code for a in acks] == ["INVALID_ARGUMENT", "INVALID_ARGUMENT"]
    assert "raw timings" in acks[0].error and "UUID" in acks[1].error
    assert _count(coordinator, "result") == 0
    with pytest.raises(grpc.RpcError) as bad_sha:
        list(
            stub.FetchArtifact(
                pb.FetchArtifactRequest(sha256="../../etc/passwd"), metadata=metadata, timeout=10
            )
        )
    assert bad_sha.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_an_agent_fetches_only_the_models_its_leases_name(
    coordinator: Coordinator, tiny_model: Path
) -> None:
    queued = coordinator.cli("jobs", "submit", "--model", str(tiny_model), "--tag", "rack=zz")
    assert queued.returncode == 0, queued.stderr  # uploaded; its run waits for rack zz
    sha = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    stub, metadata, channel = _enrolled_stub(coordinator)  # an agent holding no run
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.FetchArtifact(pb.FetchArtifactRequest(sha256=sha), metadata=metadata,
                                timeout=10))  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "holds no run of model" in (refused.value.details() or "")
    channel.close()


def test_sigterm_stops_the_coordinator_cleanly(tmp_path: Path) -> None:
    coord = start_coordinator(tmp_path)
    stop(coord.process)
    assert coord.process.returncode == 0


def test_agent_with_a_wrong_secret_stops_with_a_clear_error(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    enroll_agent(coordinator, tmp_path, "forged")
    credential_file = tmp_path / "config" / "agent.json"
    credential = json.loads(credential_file.read_text())
    credential_file.write_text(json.dumps({**credential, "secret": "guessed"}))
    result = run_cli(tmp_path, "agent", "run", timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the coordinator at ") and "enroll again" in last


def test_busy_grpc_port_is_one_clear_line(coordinator: Coordinator, tmp_path: Path) -> None:
    port = coordinator.grpc.rsplit(":", 1)[1]
    busy = run_cli(tmp_path, "coordinator", "serve", "--grpc-port", port, "--http-port", "0")
    assert _one_clear_line(busy) == (
        f"error: gRPC port {port} on 127.0.0.1 is already in use (--grpc-port)"
    )


def test_a_database_from_a_newer_edgebench_is_one_clear_line(tmp_path: Path) -> None:
    from sqlalchemy import text

    from edgebench.coordinator.store import Store

    url = f"sqlite:///{tmp_path / 'newer.db'}"
    store = Store(url)
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    refused = run_cli(tmp_path, "coordinator", "serve", "--db", url, "--http-port", "0",
                      "--grpc-port", "0")  # fmt: skip
    line = _one_clear_line(refused)
    assert line.startswith("error: the database is at schema revision f00d")


def test_guessing_enrollment_tokens_is_slowed_per_address(coordinator: Coordinator) -> None:
    channel = coordinator.channel()
    stub = pb_grpc.AgentServiceStub(channel)
    codes = []
    for attempt in range(21):
        with pytest.raises(grpc.RpcError) as refused:
            stub.Enroll(pb.EnrollRequest(token=f"ebe_guess{attempt}", name="guesser"), timeout=10)
        codes.append(refused.value.code())
    assert codes[:20] == [grpc.StatusCode.PERMISSION_DENIED] * 20
    assert codes[20] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many failed attempts from 127.0.0.1" in (refused.value.details() or "")
    trailing = dict(refused.value.trailing_metadata() or ())
    assert 0 < int(trailing["retry-after"]) <= 60
    assert _count(coordinator, "device") == 0
    channel.close()


def test_a_session_that_keeps_sending_malformed_messages_is_ended(
    coordinator: Coordinator,
) -> None:
    stub, metadata, channel = _enrolled_stub(coordinator)
    hello = pb.AgentMessage(hello=pb.Hello())
    junk = [pb.AgentMessage(result=pb.RunResult(result_id=f"x{i}")) for i in range(80)]
    acks = []
    with pytest.raises(grpc.RpcError) as ended:
        for reply in stub.Session(iter([hello, *junk]), metadata=metadata, timeout=10):
            if reply.HasField("ack"):
                acks.append(reply.ack)
    assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "50 malformed messages" in (ended.value.details() or "")
    assert len(acks) <= 50 and not any(a.accepted for a in acks)
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()
