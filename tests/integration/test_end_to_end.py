"""A job from the CLI, through a real agent process, into the store and the dashboard."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    Coordinator,
    enroll_agent,
    start_agent,
    start_coordinator,
    stop,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def agent(coordinator: Coordinator, tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "agent"
    home.mkdir()
    enroll_agent(coordinator, home, "bench-box")
    process = start_agent(home)
    wait_until(
        lambda: any(d["online"] for d in coordinator.api("/api/v1/devices")),
        what="the agent to come online",
    )
    yield home
    stop(process)


def test_job_runs_end_to_end(coordinator: Coordinator, agent: Path, tiny_model: Path) -> None:
    submitted = coordinator.cli(
        "jobs",
        "submit",
        "--model",
        str(tiny_model),
        "--n-prompt",
        "32",
        "--n-gen",
        "16",
        "--reps",
        "3",
        "--wait",
        "--timeout",
        "120",
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[0]
    assert len(job_id) == 36  # only the id on the first line, then the table
    assert "t/s" in submitted.stdout and "tg16" in submitted.stdout

    results = coordinator.api("/api/v1/results", job=job_id)
    assert len(results) == 1
    assert "rep_timings" not in results[0] and "sensors" not in results[0]  # a summary
    detail = coordinator.api(f"/api/v1/results/{results[0]['id']}")
    fields = detail["fields"]
    assert fields["n_gen"] == 16 and fields["reps"] == 3 and fields["n_prompt"] == 32
    assert fields["variant"] == "F32" and fields["backend"] == "llama_cpp"
    assert fields["decode_tps"] > 0 and fields["ttft_ms"] > 0 and fields["peak_rss_mb"] > 0
    assert fields["gpu_mem_mb"] is None  # a CPU run holds no GPU memory figure
    assert fields["itl_p50_ms"] <= fields["itl_p99_ms"] <= fields["itl_max_ms"]
    assert [len(rep["token_ns"]) for rep in detail["rep_timings"]] == [16, 16, 16]

    job = json.loads(coordinator.cli("jobs", "show", job_id, "--json").stdout)
    assert job["state"] == "succeeded" and job["runs"][0]["device_name"] == "bench-box"
    listed = json.loads(coordinator.cli("jobs", "list", "--json").stdout)
    assert [j["id"] for j in listed] == [job_id]
    devices = json.loads(coordinator.cli("devices", "list", "--json").stdout)
    assert devices[0]["name"] == "bench-box" and devices[0]["tags"] == {"rack": "a1"}
    assert devices[0]["capabilities"]["engines"].get("llama_cpp")
    assert devices[0]["identity"]["cpu_cores_logical"] > 0

    exported = coordinator.cli("results", "export", "-o", "csv", "--job", job_id)
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 1 and float(rows[0]["decode_tps"]) == pytest.approx(fields["decode_tps"])
    as_json = json.loads(coordinator.cli("results", "export", "-o", "json").stdout)
    assert len(as_json[0]["rep_timings"]) == 3
    markdown = coordinator.cli("results", "export", "-o", "md").stdout
    assert markdown.startswith("**bench-box · ") and "| test | t/s | TTFT ms | J/tok |" in markdown

    page = httpx.get(f"{coordinator.http}/devices/{devices[0]['id']}", timeout=10)
    assert page.status_code == 200
    assert "bench-box" in page.text and f"{fields['decode_tps']:,.1f}" in page.text
    job_page = httpx.get(f"{coordinator.http}/jobs/{job_id}", timeout=10).text
    assert "succeeded" in job_page and "bench-box" in job_page
    assert "bench-box" in httpx.get(coordinator.http + "/", timeout=10).text


def test_second_job_reuses_uploaded_model(
    coordinator: Coordinator, agent: Path, tiny_model: Path
) -> None:
    for _ in range(2):
        done = coordinator.cli(
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
        assert done.returncode == 0, done.stderr
    with sqlite3.connect(coordinator.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM artifact").fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM result").fetchone() == (2,)
    cached = list((agent / "cache" / "models").iterdir())
    # downloaded once, verified (its mark beside it), no .part left
    assert sorted(p.suffix for p in cached) == [".gguf", ".verified"]


def test_queued_jobs_run_one_after_another(
    coordinator: Coordinator, agent: Path, tiny_model: Path
) -> None:
    ids = []
    for _ in range(3):
        submitted = coordinator.cli(
            "jobs", "submit", "--model", str(tiny_model), "-p", "8", "-n", "4", "-r", "2"
        )
        assert submitted.returncode == 0, submitted.stderr
        ids.append(submitted.stdout.strip())
    for job_id in ids:
        watched = coordinator.cli("jobs", "watch", job_id, "--timeout", "120")
        assert watched.returncode == 0, watched.stderr
    jobs = json.loads(coordinator.cli("jobs", "list", "--json").stdout)
    assert {j["state"] for j in jobs} == {"succeeded"}
    assert [run["attempts"] for j in jobs for run in j["runs"]] == [1, 1, 1]


def test_device_selectors_from_the_cli(
    coordinator: Coordinator, agent: Path, tiny_model: Path
) -> None:
    small = ("--model", str(tiny_model), "-p", "8", "-n", "4", "-r", "1")
    elsewhere = coordinator.cli("jobs", "submit", *small, "--tag", "rack=b7")
    assert elsewhere.returncode == 0, elsewhere.stderr
    here = coordinator.cli(
        "jobs", "submit", *small, "--tag", "rack=a1", "--accelerator", "none", "--every",
        "--priority", "2", "--submitter", "alice", "--wait", "--timeout", "120",
    )  # fmt: skip
    assert here.returncode == 0, here.stderr
    jobs = {j["id"]: j for j in json.loads(coordinator.cli("jobs", "list", "--json").stdout)}
    waiting = jobs[elsewhere.stdout.strip()]
    assert waiting["state"] == "queued" and waiting["runs"][0]["device_name"] is None
    done = next(j for j in jobs.values() if j["submitter"] == "alice")
    assert done["state"] == "succeeded" and done["priority"] == 2
    assert done["device_name"] == "bench-box"  # --every pinned the one matching device
    nowhere = coordinator.cli("jobs", "submit", *small, "--every", "--arch", "riscv64")
    assert nowhere.returncode == 1
    assert "no enrolled device matches: arch riscv64" in nowhere.stderr
    assert len(json.loads(coordinator.cli("jobs", "list", "--json").stdout)) == 2


def test_http_workers_serve_the_cli_and_wake_the_dispatcher(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The HTTP app in processes of its own: uploads, submissions and pages go to them,
    and a new job still reaches the idle agent at once (no reaper round in this test)."""
    home = tmp_path / "coordinator"
    home.mkdir()
    coord = start_coordinator(home, "--http-workers", "2", "--reap-seconds", "3600")
    agent_home = tmp_path / "agent"
    agent_home.mkdir()
    enroll_agent(coord, agent_home, "bench-box")
    process = start_agent(agent_home)
    try:
        wait_until(lambda: any(d["online"] for d in coord.api("/api/v1/devices")), what="agent")
        done = coord.cli(
            "jobs", "submit", "--model", str(tiny_model), "-p", "8", "-n", "4", "-r", "1",
            "--wait", "--timeout", "60",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.splitlines()[0]
        assert coord.api(f"/api/v1/jobs/{job_id}")["state"] == "succeeded"
        assert "bench-box" in httpx.get(f"{coord.http}/leaderboard", timeout=10).text
    finally:
        stop(process)
        stop(coord.process)
    assert coord.process.returncode == 0
    assert "Traceback" not in (home / "coordinator.log").read_text()


def test_cancel_a_queued_job(coordinator: Coordinator, tiny_model: Path) -> None:
    job_id = coordinator.cli("jobs", "submit", "--model", str(tiny_model)).stdout.strip()
    assert json.loads(coordinator.cli("jobs", "show", job_id, "--json").stdout)["state"] == "queued"
    cancelled = coordinator.cli("jobs", "cancel", job_id)
    assert cancelled.returncode == 0 and "cancelled 1 run (now cancelled)" in cancelled.stderr
    assert (
        json.loads(coordinator.cli("jobs", "show", job_id, "--json").stdout)["state"] == "cancelled"
    )


def test_one_job_compares_three_engines_and_their_variants(
    coordinator: Coordinator,
    agent: Path,
    tiny_model: Path,
    tiny_onnx: Path,
    tiny_onnx_export: Path,
    tiny_hf: Path,
) -> None:
    submitted = coordinator.cli(
        "jobs", "submit", "--model", str(tiny_model), "--model", str(tiny_onnx),
        "--model", str(tiny_onnx_export), "--model", str(tiny_hf),
        "--variant", "", "--variant", "Q4_K_M", "--variant", "int8",
        "-p", "16", "-n", "8", "-r", "2", "--wait", "--timeout", "300",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[0]
    listed = coordinator.api("/api/v1/results", job=job_id)
    results = [coordinator.api(f"/api/v1/results/{r['id']}") for r in listed]
    ran = sorted(
        (
            r["fields"]["backend"],
            r["fields"]["variant"],
            r["environment"]["engine_build"].get("loop"),
        )
        for r in results
    )
    assert ran == [("llama_cpp", "F32", None), ("llama_cpp", "Q4_K_M", None),
                   ("onnx", "fp32", "genai"), ("onnx", "fp32", "greedy"),
                   ("onnx", "int8", "genai"), ("onnx", "int8", "greedy"),
                   ("transformers", "fp32", None)]  # fmt: skip
    results = [r for r in results if r["environment"]["engine_build"].get("loop") != "greedy"]
    by_variant = {r["fields"]["variant"]: r for r in results}
    assert (
        by_variant["Q4_K_M"]["fields"]["model_size_mb"]
        < by_variant["F32"]["fields"]["model_size_mb"]
    )
    assert by_variant["Q4_K_M"]["source_sha256"] == by_variant["F32"]["fields"]["model_sha256"]
    assert by_variant["int8"]["environment"]["engine"] == "onnx"
    # a folder model's id is the hash of its files, the same the agent verified and reports
    from edgebench.modelfiles import tree_sha256

    assert by_variant["fp32"]["source_sha256"] in (tree_sha256(tiny_onnx), tree_sha256(tiny_hf))
    assert sorted((agent / "cache" / "models").iterdir())  # folders unpacked, no archive kept
    assert not list((agent / "cache" / "models").glob("*.tar"))
