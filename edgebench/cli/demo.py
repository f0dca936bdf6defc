"""`edgebench demo`: a coordinator, one local agent and a generated model, end to end."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from edgebench import paths
from edgebench.cli.client import CoordinatorClient
from edgebench.cli.common import err, require_extras
from edgebench.cli.jobs import print_job_results, user_name, wait_for_job
from edgebench.dashboard.models import JobCreate
from edgebench.errors import EdgebenchError
from edgebench.workload import Workload

DEMO_DEVICE = "demo-agent"
DEMO_VARIANTS = ["", "Q8_0"]  # the generated F32 model as it is, and quantized


class EmbeddedCoordinator:
    """A coordinator on its own event loop in a background thread of this process."""

    def __init__(self, home: Path, host: str, grpc_port: int, http_port: int) -> None:
        from edgebench.coordinator.settings import CoordinatorSettings

        self.admin_token = _admin_token()
        self.settings = CoordinatorSettings(
            db_url=f"sqlite:///{paths.ensure(home) / 'coordinator.db'}",
            artifact_dir=home / "artifacts",
            host=host,
            grpc_port=grpc_port,
            http_port=http_port,
        )
        self.ready = threading.Event()
        self.grpc_address = ""
        self.http_url = ""
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="coordinator", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        self.ready.wait(timeout)
        if self.error:
            raise self.error
        if not self.ready.is_set():
            raise EdgebenchError("the embedded coordinator did not start in time")

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)

    def _run(self) -> None:
        from edgebench.coordinator.server import Ready, serve

        def on_ready(info: Ready) -> None:
            self.grpc_address, self.http_url = info.grpc_address, info.http_url
            self.ready.set()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(
                self.settings, admin_token=self.admin_token, on_ready=on_ready, stop=self._stop
            )

        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the main thread, which reports it
            self.error = exc
            self.ready.set()


def _admin_token() -> str:
    """The token the local CLI already uses (a coordinator's saved one), else a new one
    saved where the CLI finds it, so that `jobs submit` works against the demo."""
    saved = paths.admin_token_file()
    if saved.is_file() and saved.read_text().strip():
        return saved.read_text().strip()
    token = "eba_" + secrets.token_urlsafe(24)
    paths.write_private(saved, token + "\n")
    return token


def _agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgebench", "agent", *args]


def _start_agent(
    home: Path, coordinator: EmbeddedCoordinator, api: CoordinatorClient
) -> subprocess.Popen[bytes]:
    """Enrolls and starts the local agent as its own process, with its own home, so that
    its measurements are not disturbed by the coordinator's threads."""
    env = {**os.environ, "EDGEBENCH_HOME": str(home)}
    # a demo run before enrolled it: its name is taken only by a token made for it
    again = any(device.name == DEMO_DEVICE for device in api.devices())
    token = api.create_token(
        contributor=False, expires_in_seconds=600, device=DEMO_DEVICE if again else None
    )
    enrolled = subprocess.run(
        _agent_command(
            "enroll",
            "--coordinator",
            coordinator.grpc_address,
            "--token",
            token,
            "--name",
            DEMO_DEVICE,
        ),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if enrolled.returncode != 0:
        raise EdgebenchError(f"demo agent could not enroll: {enrolled.stderr.strip()}")
    log = (home / "agent.log").open("ab")
    return subprocess.Popen(_agent_command("run"), env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_online(api: CoordinatorClient, agent: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise EdgebenchError(f"demo agent exited (code {agent.returncode}):\n{tail}")
        if any(d.name == DEMO_DEVICE and d.online for d in api.devices()):
            return
        time.sleep(0.2)
    raise EdgebenchError("demo agent did not connect within 60 s")


def demo(
    exit_after: Annotated[
        bool, typer.Option("--exit", help="Stop after the result table (for scripts).")
    ] = False,
    http_port: Annotated[int, typer.Option(help="Dashboard port (0 = any free port).")] = 8080,
    grpc_port: Annotated[
        int, typer.Option(help="Port the agent connects to (0 = any free port).")
    ] = 50051,
    n_prompt: Annotated[
        int,
        typer.Option("--n-prompt", "-p", min=1, help="Prompt length; the demo also runs 4x it."),
    ] = 64,
    n_gen: Annotated[int, typer.Option("--n-gen", "-n", min=2)] = 64,
    reps: Annotated[int, typer.Option("--reps", "-r", min=1)] = 3,
) -> None:
    """Start a coordinator, enroll one local agent, benchmark a generated model, show the
    dashboard. Everything lives under the demo folder of the data directory."""
    require_extras("demo", "coordinator", "agent", "llama")
    from edgebench.modelgen import cached_tiny_llama

    home = paths.ensure(paths.data_dir() / "demo")
    with err.status("generating the demo model (cached after the first time)"):
        model = cached_tiny_llama(paths.cache_dir() / "generated")
    err.print(f"[green]✓[/] model {model.name}")
    coordinator = EmbeddedCoordinator(home, "127.0.0.1", grpc_port, http_port)
    coordinator.start()
    err.print(
        f"[green]✓[/] coordinator at {coordinator.http_url} (gRPC {coordinator.grpc_address})"
    )
    api = CoordinatorClient(coordinator.http_url, coordinator.admin_token)
    agent = None
    try:
        agent_home = home / "agent"
        agent = _start_agent(agent_home, coordinator, api)
        with err.status("waiting for the local agent to connect"):
            _wait_online(api, agent, agent_home / "agent.log")
        err.print(f"[green]✓[/] agent {DEMO_DEVICE} online")
        artifact = api.upload_model(model, "gguf")
        # Two variants x two prompt lengths: the leaderboard, its scatter and compare
        # have something to show on first start.
        workload = Workload.from_flat(
            {"n_prompt": [n_prompt, 4 * n_prompt], "n_gen": [n_gen], "reps": reps}
        )
        job = api.submit_job(
            JobCreate(
                models=[artifact.sha256],
                variants=DEMO_VARIANTS,
                workload=workload,
                device=DEMO_DEVICE,
                submitter=user_name(),
            )
        )
        err.print(f"[green]✓[/] job {job.id} queued")
        finished = wait_for_job(api, job.id, timeout=600)
        print_job_results(api, finished)
        err.print(f"leaderboard: {coordinator.http_url}/leaderboard")
        err.print(f"this job: {coordinator.http_url}/jobs/{job.id}")
        _print_next_steps(coordinator, model, still_running=not exit_after)
        if not exit_after:
            err.print(f"dashboard at {coordinator.http_url} — press Ctrl-C to stop")
            while agent.poll() is None:
                time.sleep(0.5)
    except KeyboardInterrupt:
        err.print("stopping")
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
        api.close()
        coordinator.stop()


def _print_next_steps(coordinator: EmbeddedCoordinator, model: Path, still_running: bool) -> None:
    url = (
        "" if coordinator.http_url == "http://127.0.0.1:8080" else f" --url {coordinator.http_url}"
    )
    when = "while the demo runs" if still_running else "after `edgebench demo` (without --exit)"
    err.print(
        f"admin token saved to {paths.admin_token_file()} (the CLI reads it there)\n"
        f"next, {when}, in another terminal:\n"
        f"  edgebench jobs submit{url} --model {model} -p 32,128 -n 32 --wait\n"
        f"  edgebench jobs list{url}",
        highlight=False,
        soft_wrap=True,
    )
