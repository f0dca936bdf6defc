"""A real coordinator on loopback, its store filled through the write path (with hostile
strings everywhere an agent or submitter controls text) and by real runs of a real
agent, and the real Chromium (Debian's package) driven by Playwright through its
executable path: nothing is downloaded."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgebench.coordinator.store import Store
from tests.conftest import (
    Coordinator,
    enroll_agent,
    start_agent,
    start_coordinator,
    stop,
    wait_until,
)
from tests.storefill import Filled, fill

CHROMIUM_NAMES = ("chromium", "chromium-browser", "chromium-headless-shell")


def chromium_path() -> str:
    """EDGEBENCH_CHROMIUM, else Debian's chromium on PATH; scripts/test.sh installs it."""
    given = os.environ.get("EDGEBENCH_CHROMIUM")
    found = given or next((p for n in CHROMIUM_NAMES if (p := shutil.which(n))), None)
    if not found:
        raise RuntimeError("no Chromium: apt-get install chromium (scripts/test.sh does)")
    return found


@dataclass
class Dashboard:
    coordinator: Coordinator
    filled: Filled
    real_job: str  # a job run by the real agent
    agent_home: Path

    @property
    def url(self) -> str:
        return self.coordinator.http


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Dashboard]:
    home = tmp_path_factory.mktemp("dashboard")
    store = Store(f"sqlite:///{home / 'coordinator.db'}", fleet_read_seconds=0.0)
    filled = fill(store, devices=6, results=150, hostile=True, samples=40)
    store.close()
    coordinator = start_coordinator(home)
    agent_home = home / "agent"
    agent_home.mkdir()
    enroll_agent(coordinator, agent_home, "bench-box")
    agent = start_agent(agent_home)
    try:
        wait_until(lambda: any(d["online"] for d in coordinator.api("/api/v1/devices")),
                   what="the agent to come online")  # fmt: skip
        done = coordinator.cli(
            "jobs", "submit", "--model", str(tiny_model), "--device", "bench-box",
            "--variant", "", "--variant", "Q8_0", "-p", "8,16", "-n", "8", "-r", "2",
            "--warmup", "0", "--wait", "--timeout", "240",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield Dashboard(coordinator, filled, done.stdout.splitlines()[0], agent_home)
    finally:
        stop(agent)
        stop(coordinator.process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(),
                                              args=["--no-sandbox"])  # fmt: skip
        yield launched
        launched.close()
