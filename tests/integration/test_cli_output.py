"""What a person reads: the human output of every command that talks to a coordinator,
against a real one on loopback with a real agent, after a job of several models, backends
and variants (`--json` is tested beside it, in test_end_to_end)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgebench.coordinator.store import Store
from edgebench.coordinator.tables import Device, Run
from tests.conftest import (
    ADMIN_TOKEN,
    Coordinator,
    cli_env,
    enroll_agent,
    run_cli,
    start_agent,
    stop,
    wait_until,
)
from tests.storefill import fill

pytestmark = pytest.mark.slow


@pytest.fixture
def finished_job(
    coordinator: Coordinator, tmp_path: Path, tiny_model: Path, tiny_onnx_export: Path
) -> Iterator[str]:
    home = tmp_path / "agent"
    home.mkdir()
    enroll_agent(coordinator, home, "bench-box")
    agent = start_agent(home)
    try:
        wait_until(lambda: any(d["online"] for d in coordinator.api("/api/v1/devices")),
                   what="the agent to come online")  # fmt: skip
        done = coordinator.cli(
            "jobs", "submit", "--model", str(tiny_model), "--model", str(tiny_onnx_export),
            "--variant", "", "--variant", "Q8_0", "-p", "8", "-n", "4", "-r", "1",
            "--warmup", "0", "--wait", "--timeout", "240",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield done.stdout.splitlines()[0]
    finally:
        stop(agent)


def _said(text: str) -> str:
    return " ".join(text.replace("│", " ").replace("┃", " ").split())


def test_every_command_for_people(
    coordinator: Coordinator, finished_job: str, tiny_model: Path, tiny_onnx_export: Path
) -> None:
    """One job, every reader of it (the job takes most of the time)."""
    _jobs_list_and_show(coordinator, finished_job)
    _devices(coordinator)
    _results_export(coordinator, finished_job, [tiny_model.name, tiny_onnx_export.name])
    _cancel_of_a_finished_job_changes_nothing(coordinator, finished_job)
    _a_job_no_device_matches(coordinator, tiny_model)


def _a_job_no_device_matches(coordinator: Coordinator, model: Path) -> None:
    small = ("--model", str(model), "-p", "8", "-n", "4", "-r", "1")
    queued = coordinator.cli("jobs", "submit", *small, "--arch", "riscv64")
    assert queued.returncode == 0, queued.stderr
    assert "warning: no enrolled device matches arch riscv64 now" in queued.stderr
    shown = _said(coordinator.cli("jobs", "show", queued.stdout.strip()).stdout)
    assert "waiting: no enrolled device matches arch riscv64" in shown
    page = httpx.get(f"{coordinator.http}/jobs/{queued.stdout.strip()}", timeout=10).text
    assert "Waiting: no enrolled device matches arch riscv64" in page
    refused = coordinator.cli("jobs", "submit", *small, "--device", "bench-box",
                              "--backend", "onnx")  # fmt: skip
    assert refused.returncode == 1 and "backend onnx needs a onnx model" in refused.stderr


def _jobs_list_and_show(coordinator: Coordinator, finished_job: str) -> None:
    listed = coordinator.cli("jobs", "list")
    assert listed.returncode == 0, listed.stderr
    said = _said(listed.stdout)
    assert f"{finished_job[:8]} succeeded 3/3" in said
    assert "tiny-llama" in said and "onnx" in said and "p8 n4" in said
    assert "llama_cpp, onnx" in said and "as is, Q8_0" in said
    for prefix in (finished_job[:8], finished_job[:4]):
        shown = coordinator.cli("jobs", "show", prefix)
        assert shown.returncode == 0, shown.stderr
        said = _said(shown.stdout)
        assert said.startswith(f"job {finished_job} · succeeded · 3/3 runs done")
        assert said.count("succeeded llama_cpp") == 2 and "succeeded onnx as is" in said
        assert "bench-box · tiny-llama" in said and "llama_cpp Q8_0" in said
        assert "pp8" in said and "tg4" in said
    missing = coordinator.cli("jobs", "show", "0000")
    assert missing.returncode == 1 and "no job '0000'" in missing.stderr


def _devices(coordinator: Coordinator) -> None:
    listed = _said(coordinator.cli("devices", "list").stdout)
    assert "bench-box online" in listed
    device = coordinator.api("/api/v1/devices/bench-box")
    for key in ("bench-box", device["id"][:6]):
        shown = coordinator.cli("devices", "show", key)
        assert shown.returncode == 0 and f"id: {device['id']}" in _said(shown.stdout)
    assert coordinator.cli("devices", "show", "ghost").returncode == 1


def _results_export(coordinator: Coordinator, finished_job: str, models: list[str]) -> None:
    def export(*args: str) -> str:
        done = coordinator.cli("results", "export", "--job", finished_job[:8], *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    rows = list(csv.DictReader(io.StringIO(export())))  # csv by default: every field
    assert len(rows) == 3 and "decode_tps_ci95" in rows[0]
    assert {r["model"] for r in rows} == set(models)
    assert sorted((r["backend"], r["variant"]) for r in rows)[:2] == [
        ("llama_cpp", "F32"), ("llama_cpp", "Q8_0"),
    ]  # fmt: skip
    markdown = export("-o", "md").splitlines()
    titles = [line for line in markdown if line.startswith("**bench-box · ")]
    assert len(titles) == 3 and all(len(line) <= 80 for line in markdown)
    assert sum(line.startswith(("| pp8 ", "| tg4 ")) for line in markdown) == 2 * 3
    for fmt in ("json", "jsonl"):
        text = export("-o", fmt)
        data = json.loads(text) if fmt == "json" else [json.loads(x) for x in text.splitlines()]
        assert len(data) == 3 and all(d["model"] and d["rep_timings"] for d in data)
    assert export("--device", "bench-box") and export("--format", "csv")  # hidden alias
    nope = coordinator.cli("results", "export", "--job", "nope")
    assert nope.returncode == 1 and "no job 'nope'" in nope.stderr
    by_name = httpx.get(f"{coordinator.http}/api/v1/results", params={"device": "bench-box"})
    assert by_name.json()["total"] == 3
    ghost = httpx.get(f"{coordinator.http}/api/v1/results", params={"device": "ghost"})
    assert ghost.status_code == 404 and "no device 'ghost'" in ghost.text


def _cancel_of_a_finished_job_changes_nothing(coordinator: Coordinator, finished_job: str) -> None:
    cancelled = coordinator.cli("jobs", "cancel", finished_job[:8])
    assert cancelled.returncode == 0
    assert "had no unfinished runs; nothing was cancelled (now succeeded)" in cancelled.stderr
    retried = coordinator.cli("jobs", "retry", finished_job[:8])
    assert retried.returncode == 0
    assert f"job {finished_job[:8]}: had no failed runs (now succeeded)" in retried.stderr
    job = coordinator.api(f"/api/v1/jobs/{finished_job}")
    assert job["state"] == "succeeded" and len(coordinator.api("/api/v1/results")) == 3


def test_what_agents_wrote_reaches_the_terminal_as_plain_text(coordinator: Coordinator) -> None:
    """Markup, hyperlinks and control codes in hardware strings, tags and error texts are
    printed literally (escaped), never interpreted: `[/bold]` in a CPU name once crashed
    `devices list`."""
    store = Store(f"sqlite:///{coordinator.db_path}")
    filled = fill(store, devices=2, results=4, hostile=True, samples=2)
    with store.session() as s:
        failed_job = s.get(Run, filled.failed_runs[0]).job_id  # type: ignore[union-attr]
    device = filled.devices[0].name
    for args in (("devices", "list"), ("devices", "show", device), ("jobs", "list"),
                 ("jobs", "show", failed_job)):  # fmt: skip
        shown = coordinator.cli(*args)
        assert shown.returncode == 0, (args, shown.stderr)
        text = shown.stdout + shown.stderr
        assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, args
    listed = coordinator.cli("devices", "show", device).stdout
    assert "[/bold]" in listed and "\\x1b]8;;https://evil.example/\\x07click" in listed
    assert "engine said <img src=x" in _said(coordinator.cli("jobs", "show", failed_job).stdout)


def test_enrollment_tokens_for_people(coordinator: Coordinator, tmp_path: Path) -> None:
    made = coordinator.cli("coordinator", "token", "create", "--uses", "3", "--expires", "2h")
    assert made.returncode == 0 and made.stdout.strip().startswith("ebe_")
    assert "valid for 2h; enrolls 3 new device(s)" in made.stderr
    listed = coordinator.cli("coordinator", "token", "list")
    said = _said(listed.stdout)
    assert "Tokens" in said and "active operator 3" in said
    (token,) = json.loads(coordinator.cli("coordinator", "token", "list", "--json").stdout)
    assert token["uses_left"] == 3 and token["state"] == "active"
    revoked = coordinator.cli("coordinator", "token", "revoke", token["id"][:8])
    assert revoked.returncode == 0 and f"token {token['id'][:8]} revoked" in revoked.stderr
    assert "revoked operator 3" in _said(coordinator.cli("coordinator", "token", "list").stdout)
    refused = run_cli(tmp_path, "agent", "enroll", "--coordinator", coordinator.grpc,
                      "--token", made.stdout.strip(), "--name", "late")  # fmt: skip
    assert refused.returncode == 1 and "used up or revoked" in refused.stderr
    unknown = coordinator.cli("coordinator", "token", "revoke", "zzzz")
    assert unknown.returncode == 1 and "no token 'zzzz'" in unknown.stderr


def test_an_unhealthy_device_is_shown_and_resumed(coordinator: Coordinator) -> None:
    store = Store(f"sqlite:///{coordinator.db_path}")
    (device,) = fill(store, devices=1, results=2, samples=2).devices
    with store.writing() as s:
        row = s.get(Device, device.id)
        assert row is not None
        row.outcomes = "FFSF"
        row.unhealthy = "3 of its last 4 runs failed here and succeeded on another device"
        s.add(row)
    assert f"{device.name} unhealthy" in _said(coordinator.cli("devices", "list").stdout)
    shown = _said(coordinator.cli("devices", "show", device.name).stdout)
    assert "unhealthy: 3 of its last 4 runs failed here" in shown
    assert f"(devices resume {device.name})" in shown
    resumed = coordinator.cli("devices", "resume", device.name)
    assert resumed.returncode == 0 and f"{device.name} takes work again" in resumed.stderr
    assert (
        json.loads(coordinator.cli("devices", "show", device.name, "--json").stdout)["unhealthy"]
        == ""
    )


def test_the_audit_log_records_admin_actions_allowed_and_refused(
    coordinator: Coordinator,
) -> None:
    made = coordinator.cli("coordinator", "token", "create", "--viewer")
    assert made.returncode == 0, made.stderr
    refused = coordinator.cli("coordinator", "token", "create", token="eba_wrong")
    assert refused.returncode == 1
    hostile = httpx.post(coordinator.http + "/api/v1/jobs%1b[31mred", timeout=10)
    assert hostile.status_code == 401
    entries = json.loads(coordinator.cli("coordinator", "audit", "--json").stdout)
    assert [(e["actor"], e["action"], e["status"]) for e in entries] == [
        ("unauthenticated", "POST /api/v1/jobs\x1b[31mred", 401),
        ("unauthenticated", "POST /api/v1/tokens", 401),
        ("admin", "POST /api/v1/tokens", 201),
    ]
    assert {e["address"] for e in entries} == {"127.0.0.1"}
    listed = coordinator.cli("coordinator", "audit")
    said = _said(listed.stdout)
    assert "Audit log" in said and "admin POST /api/v1/tokens 201 127.0.0.1" in said
    assert "\x1b" not in listed.stdout and "\\x1b[31mred" in listed.stdout
    viewer = made.stdout.strip()
    as_viewer = coordinator.cli("coordinator", "audit", token=viewer)
    assert as_viewer.returncode == 1 and "admin token" in as_viewer.stderr
    assert as_viewer.stderr.count("EDGEBENCH_TOKEN") == 1


def test_an_admin_deletes_a_result(coordinator: Coordinator) -> None:
    store = Store(f"sqlite:///{coordinator.db_path}")
    fill(store, devices=1, results=3, samples=2)
    store.close()
    first = coordinator.api("/api/v1/results")[0]["id"]
    kept = _answering(coordinator, "n\n", "results", "delete", first[:8])
    assert kept.returncode == 1 and "Delete result" in kept.stdout
    assert len(coordinator.api("/api/v1/results")) == 3
    deleted = coordinator.cli("results", "delete", first[:8], "--yes")
    assert deleted.returncode == 0 and f"result {first[:8]} deleted" in deleted.stderr
    assert first not in {r["id"] for r in coordinator.api("/api/v1/results")}
    assert httpx.get(f"{coordinator.http}/results/{first}", timeout=10).status_code == 404
    again = coordinator.cli("results", "delete", first, "--yes")
    assert again.returncode == 1 and "no result" in again.stderr
    assert "DELETE /api/v1/results/" in coordinator.cli("coordinator", "audit").stdout


def _answering(coordinator: Coordinator, text: str, *args: str) -> Any:
    """A command run with `text` typed at its prompt."""
    env = cli_env(coordinator.home, EDGEBENCH_URL=coordinator.http, EDGEBENCH_TOKEN=ADMIN_TOKEN)
    return subprocess.run([sys.executable, "-m", "edgebench", *args], input=text, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_a_device_whose_hardware_changed_is_shown_in_review_and_accepted(
    coordinator: Coordinator,
) -> None:
    from edgebench.device import HardwareInfo
    from edgebench.proto.convert import to_message
    from edgebench.proto.v1 import agent_pb2 as pb
    from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc

    def hardware(cpu: str) -> pb.HardwareInfo:
        flat = {"cpu_model": cpu, "cpu_cores_physical": 4, "arch": "aarch64"}
        info = HardwareInfo.from_flat({**flat, "engines": {"llama_cpp": "0.3"}})
        return to_message(info, pb.HardwareInfo())

    with coordinator.channel() as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        request = pb.EnrollRequest(token=coordinator.token_secret(), name="swapped",
                                   hardware=hardware("Cortex-A76"))  # fmt: skip
        reply = stub.Enroll(request, timeout=10)
        meta = (("x-edgebench-agent-id", reply.agent_id),
                ("x-edgebench-agent-secret", reply.secret))  # fmt: skip
        hello = pb.AgentMessage(hello=pb.Hello(hardware=hardware("Xeon [bold]Platinum")))
        session = stub.Session(iter([hello]), metadata=meta, timeout=10)
        assert next(session).HasField("welcome")
        session.cancel()
    wait_until(lambda: coordinator.api("/api/v1/devices")[0]["status"] == "review",
               what="the device in review")  # fmt: skip
    listed = _said(coordinator.cli("devices", "list").stdout)
    assert "swapped review Xeon [bold]Platinum" in listed
    shown = coordinator.cli("devices", "show", "swapped").stdout
    assert "swapped · review" in shown and "hardware changed from aarch64 · Cortex-A76" in shown
    accepted = coordinator.cli("devices", "accept", "swapped")
    assert accepted.returncode == 0, accepted.stderr
    assert "swapped accepted as Xeon [bold]Platinum · 4 cores" in accepted.stderr
    assert coordinator.api("/api/v1/devices")[0]["review"] == ""
