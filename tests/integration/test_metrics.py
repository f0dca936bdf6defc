"""`/metrics` parsed with Prometheus's own parser and linted by `promtool check
metrics`, against a real coordinator that has a device and a finished job; beyond the
read rule it wants a bearer token like the API."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    Coordinator,
    enroll_agent,
    start_agent,
    start_coordinator,
    stop,
    wait_until,
)

pytestmark = pytest.mark.slow


def _scrape(coordinator: Coordinator) -> httpx.Response:
    return httpx.get(coordinator.http + "/metrics", timeout=10)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_one_scrape_shows_the_fleet(
    coordinator: Coordinator, tmp_path: Path, tiny_model: Path
) -> None:
    home = tmp_path / "pi"
    enroll_agent(coordinator, home, "scraped-pi")
    agent = start_agent(home)
    try:
        done = coordinator.cli("jobs", "submit", "--model", str(tiny_model), "-p", "8", "-n",
                               "4", "-r", "1", "--wait", "--timeout", "120")  # fmt: skip
        assert done.returncode == 0, done.stderr
        up = ("edgebench_device_up", (("device", "scraped-pi"),))
        # last contact is written with the heartbeats, every few seconds
        wait_until(lambda: _samples(_scrape(coordinator).text).get(up) == 1,
                   what="the device up")  # fmt: skip
        answer = _scrape(coordinator)
    finally:
        stop(agent)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(answer.text)
    assert samples[("edgebench_runs", (("state", "succeeded"),))] == 1
    assert samples[("edgebench_runs", (("state", "queued"),))] == 0
    assert samples[("edgebench_results", (("verification", "trusted"),))] == 1
    assert samples[("edgebench_queue_depth", (("band", "normal"),))] == 0
    assert samples[("edgebench_device_up", (("device", "scraped-pi"),))] == 1
    assert samples[("edgebench_device_takes_work", (("device", "scraped-pi"),))] == 1
    idle_or_busy = sum(samples[("edgebench_devices", (("status", s),))] for s in ("idle", "busy"))
    assert idle_or_busy == 1
    state = ("edgebench_device_state", (("axis", "admission"), ("device", "scraped-pi"),
                                        ("state", "approved")))  # fmt: skip
    assert samples[state] == 1
    assert any(name == "edgebench_info" for name, _ in samples)
    # this process's own instruments (the HTTP app runs in the coordinator's process)
    assert samples[("edgebench_results_stored_total", ())] == 1
    assert samples[("edgebench_dispatch_seconds_count", ())] >= 1
    assert samples[("edgebench_auth_failures_total", ())] == 0
    linted = subprocess.run(["promtool", "check", "metrics"], input=answer.text,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert linted.returncode == 0, linted.stdout + linted.stderr
    (result,) = coordinator.api("/api/v1/results")
    environment = coordinator.api(f"/api/v1/results/{result['id']}")["environment"]
    assert environment["nice"] == {"run": 0, "control": 5}  # agent run --nice 5 (default)


def test_a_private_coordinator_wants_a_bearer_token_for_metrics(tmp_path: Path) -> None:
    coord = start_coordinator(tmp_path / "coordinator", "--private")
    try:
        refused = httpx.get(coord.http + "/metrics", timeout=10)
        assert refused.status_code == 401
        viewer = coord.cli("coordinator", "token", "create", "--viewer").stdout.strip()
        scraped = httpx.get(coord.http + "/metrics", timeout=10,
                            headers={"Authorization": f"Bearer {viewer}"})  # fmt: skip
        assert scraped.status_code == 200 and "edgebench_devices" in scraped.text
    finally:
        stop(coord.process)
