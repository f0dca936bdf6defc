"""The HTTP app in worker processes: real processes on a loopback socket over one store;
what the API tells the coordinator arrives through the hooks."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from edgebench.coordinator.httpworkers import HttpWorkers, WorkerStartError
from edgebench.coordinator.jobspec import new_job, plan_runs
from edgebench.coordinator.server import bind_http_socket
from edgebench.coordinator.settings import CoordinatorSettings
from edgebench.coordinator.store import Store
from edgebench.dashboard.deps import ApiHooks
from edgebench.device import HardwareInfo
from tests import lifecycle_ops as ops
from tests.conftest import ADMIN_TOKEN, job_spec

pytestmark = pytest.mark.slow  # spawns Python processes

SHA = "c" * 64
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Heard:
    def __init__(self) -> None:
        self.kicks = 0
        self.cancelled: list[tuple[str, str]] = []

    def hooks(self) -> ApiHooks:
        def kicked() -> None:
            self.kicks += 1

        return ApiHooks(jobs_changed=kicked, runs_cancelled=self.cancelled.extend)


@pytest.fixture
def held_run(tmp_path: Path) -> Iterator[tuple[str, str, str, str]]:
    """(db url, job id, run id, agent id): a job whose one run an agent holds."""
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    store = Store(url, retry_base_seconds=0.0)
    store.ensure_admin_token(ADMIN_TOKEN)
    store.add_artifact(sha256=SHA, filename="m.gguf", size_bytes=10, fmt="gguf")
    enrollment = store.enroll(
        token=store.create_enrollment_token(),
        name="box",
        hardware=HardwareInfo.from_flat({"cpu_model": "t", "engines": {"llama_cpp": "0.3"}}),
        tags={},
    )
    agent = store.authenticate_agent(enrollment.agent_id, enrollment.secret)
    assert agent is not None
    device = store.get_device("box")
    spec = job_spec(models=[SHA], n_prompt=[8], n_gen=[4], reps=1)
    created, _, _ = store.create_job(new_job(spec), plan_runs(spec, {SHA: "gguf"}), spec.selector)
    claim = ops.claim_run(store, agent=agent, device=device, lease_seconds=60)
    assert claim is not None
    store.close()
    yield url, created.id, claim.run.id, agent.id


def _settings(url: str, tmp_path: Path, workers: int = 2) -> CoordinatorSettings:
    return CoordinatorSettings(
        db_url=url, artifact_dir=tmp_path / "artifacts", http_workers=workers
    )


async def _until(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_serve_relay_the_hooks_and_are_replaced_when_they_die(
    held_run: tuple[str, str, str, str], tmp_path: Path
) -> None:
    url, job_id, run_id, agent_id = held_run
    heard = Heard()

    async def scenario() -> list[int]:
        sock = bind_http_socket("127.0.0.1", 0)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        workers = HttpWorkers(_settings(url, tmp_path), None, sock, heard.hooks(), 2)
        await workers.start()
        supervising = asyncio.create_task(workers.supervise_forever())
        first = workers.pids
        try:
            async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=20) as client:
                page = await client.get("/leaderboard")
                assert page.status_code == 200 and "Leaderboard" in page.text
                cancelled = await client.post(f"/api/v1/jobs/{job_id}/cancel")
                assert cancelled.status_code == 200, cancelled.text
                await _until(lambda: heard.cancelled, "the cancel to reach the coordinator")
                assert heard.cancelled == [(run_id, agent_id)]
                body = {"models": [SHA], "n_prompt": [8], "n_gen": [4], "reps": 1}
                assert (await client.post("/api/v1/jobs", json=body)).status_code == 201
                await _until(lambda: heard.kicks == 1, "the new job to reach the coordinator")

                os.kill(first[0], signal.SIGKILL)
                await _until(
                    lambda: len(set(workers.pids) - set(first)) == 1, "a replacement worker"
                )
                for _ in range(6):  # the survivor and then the new one serve
                    assert (await client.get("/api/v1/devices")).status_code == 200
        finally:
            await workers.stop()
            await asyncio.wait_for(supervising, 5)
            sock.close()
        return [*first, *workers.pids]

    pids = asyncio.run(scenario())
    assert not [pid for pid in pids if _alive(pid)], "a worker outlived stop()"


def test_a_worker_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    unreachable = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'c.db'}"

    async def scenario() -> None:
        sock = bind_http_socket("127.0.0.1", 0)
        try:
            await HttpWorkers(
                _settings(unreachable, tmp_path, 1), None, sock, ApiHooks(), 1
            ).start()
        finally:
            sock.close()

    with pytest.raises(WorkerStartError, match="exited while starting"):
        asyncio.run(scenario())


def test_a_message_not_understood_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    heard = Heard()
    sock = bind_http_socket("127.0.0.1", 0)
    sock.close()
    workers = HttpWorkers(_settings("sqlite://", tmp_path), None, sock, heard.hooks(), 0)
    worker = type("W", (), {"slot": 3})()
    for message in (b"{", b'["launch", 1]', b'["runs_cancelled", [[1]]]', b"[1, 2, 3]"):
        with caplog.at_level(logging.WARNING, "edgebench.coordinator"):
            workers._handle(worker, message)
    assert caplog.text.count("HTTP worker 3 sent a message not understood") == 4
    assert heard.kicks == 0 and heard.cancelled == []
