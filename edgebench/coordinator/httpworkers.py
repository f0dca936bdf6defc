"""The HTTP app in processes of its own (`coordinator serve --http-workers N`).

Building pages and exports is Python work that holds the GIL: served in the coordinator's
process it delays the agents' gRPC loop (benchmarks/fleet.py --read-pages: heartbeat p99
137 ms beside one reader at 1,000 agents). Workers share the listening socket and the
store; what the API must tell the rest of the coordinator (new runs are queued, held runs
were cancelled) comes back over a pipe per worker, read by the coordinator's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn

from edgebench.coordinator.artifacts import ArtifactFiles
from edgebench.coordinator.certificates import ServerTls, serves_https
from edgebench.coordinator.settings import CoordinatorSettings
from edgebench.coordinator.store import Store
from edgebench.dashboard.app import create_app
from edgebench.dashboard.deps import ApiContext, ApiHooks

log = logging.getLogger("edgebench.coordinator")

# The agents' loop is the one that must not wait: the scheduler favours it over readers.
WORKER_NICENESS = 5
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
RESTART_PAUSE_SECONDS = 1.0
LOG_FORMAT = "%(asctime)s %(name)s %(message)s"


class HttpServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the process that runs it owns shutdown
    (the coordinator drains gRPC and HTTP together on SIGTERM)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_server(context: ApiContext, https: ServerTls | None = None) -> HttpServer:
    """The HTTP app's server; `https`: TLS with that material's certificate and key."""
    config = uvicorn.Config(
        create_app(context),
        log_level="warning",
        lifespan="off",
        access_log=False,
        ssl_certfile=https.combined_file if https else None,
    )
    return HttpServer(config)


def api_context(
    settings: CoordinatorSettings, store: Store, tls: ServerTls | None, hooks: ApiHooks
) -> ApiContext:
    return ApiContext(
        store,
        ArtifactFiles(settings.artifact_dir),
        settings.max_artifact_bytes,
        hooks,
        authority_fingerprint=tls.fingerprint if tls else None,
        reads_need_token=settings.reads_need_token,
    )


# ---- in a worker -----------------------------------------------------------------------


class _HookSender:
    """ApiHooks of a worker: each call becomes one JSON message to the coordinator."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()  # routes run in a thread pool

    def send(self, kind: str, value: Any = None) -> None:
        with self._lock:
            try:
                self._connection.send_bytes(json.dumps([kind, value]).encode())
            except OSError:  # the coordinator is gone; the parent watch stops us
                log.warning("could not tell the coordinator %s", kind)

    def hooks(self) -> ApiHooks:
        return ApiHooks(
            jobs_changed=lambda: self.send("jobs_changed"),
            runs_cancelled=lambda held: self.send("runs_cancelled", held),
        )


def _worker_main(
    settings: CoordinatorSettings,
    tls: ServerTls | None,
    sock: socket.socket,
    connection: Connection,
    parent: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the coordinator stops us
    os.nice(WORKER_NICENESS)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    asyncio.run(_serve_in_worker(settings, tls, sock, _HookSender(connection), parent))


async def _serve_in_worker(
    settings: CoordinatorSettings,
    tls: ServerTls | None,
    sock: socket.socket,
    sender: _HookSender,
    parent: int,
) -> None:
    store = Store(settings.db_url, retry_base_seconds=settings.retry_base_seconds)
    context = api_context(settings, store, tls, sender.hooks())
    server = http_server(context, tls if serves_https(settings) else None)
    loop = asyncio.get_running_loop()

    def exit_soon() -> None:
        server.should_exit = True

    loop.add_signal_handler(signal.SIGTERM, exit_soon)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if not serving.done():
        sender.send("ready")
    while not serving.done():  # a coordinator killed outright must not leave us serving
        if os.getppid() != parent:
            exit_soon()
        await asyncio.wait({serving}, timeout=1.0)
    store.close()
    await serving


# ---- in the coordinator ----------------------------------------------------------------


class WorkerStartError(RuntimeError):
    pass


@dataclass
class _Worker:
    slot: int
    process: BaseProcess
    events: Connection
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = field(default_factory=time.monotonic)


class HttpWorkers:
    """Starts `count` worker processes on `sock`, replaces any that die, stops them."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        tls: ServerTls | None,
        sock: socket.socket,
        hooks: ApiHooks,
        count: int,
    ) -> None:
        self._settings = settings
        self._tls = tls
        self._sock = sock
        self._hooks = hooks
        self._count = count
        self._workers: dict[int, _Worker] = {}
        self._context = multiprocessing.get_context("spawn")  # forking a gRPC process is unsafe
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers.values() if w.process.pid is not None]

    async def start(self) -> None:
        for slot in range(self._count):
            self._spawn(slot)
        try:
            await asyncio.wait_for(self._all_ready(), START_TIMEOUT_SECONDS)
        except TimeoutError:
            await self.stop()
            raise WorkerStartError(
                f"HTTP workers did not start within {START_TIMEOUT_SECONDS:.0f} s"
            ) from None

    async def _all_ready(self) -> None:
        for worker in list(self._workers.values()):
            while not worker.ready.is_set():
                if not worker.process.is_alive():
                    await self.stop()
                    code = worker.process.exitcode
                    raise WorkerStartError(
                        f"an HTTP worker exited while starting (exit code {code}); "
                        "its error is in the coordinator's log"
                    )
                await asyncio.sleep(0.05)

    def _spawn(self, slot: int) -> None:
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main,
            args=(self._settings, self._tls, self._sock, send, os.getpid()),
            name=f"edgebench-http-{slot}",
            daemon=True,
        )
        process.start()
        send.close()  # only the worker writes: its death reads as end of file here
        worker = _Worker(slot, process, receive)
        self._workers[slot] = worker
        asyncio.get_running_loop().add_reader(receive.fileno(), self._read, worker)

    def _read(self, worker: _Worker) -> None:
        try:
            while worker.events.poll():
                self._handle(worker, worker.events.recv_bytes())
        except (EOFError, OSError):
            self._forget(worker)

    def _handle(self, worker: _Worker, message: bytes) -> None:
        handlers: dict[str, Callable[[Any], None]] = {
            "ready": lambda _: worker.ready.set(),
            "jobs_changed": lambda _: self._hooks.jobs_changed(),
            "runs_cancelled": lambda held: self._hooks.runs_cancelled(
                [(str(run), str(agent)) for run, agent in held]
            ),
        }
        try:
            kind, value = json.loads(message)
            handlers[kind](value)
        except (ValueError, TypeError, KeyError):
            log.warning("HTTP worker %d sent a message not understood", worker.slot)

    def _forget(self, worker: _Worker) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(worker.events.fileno())
        worker.events.close()

    async def supervise_forever(self) -> None:
        """A worker that dies is replaced (its requests in flight fail; the next ones are
        served by the others, then by the new one)."""
        while not self._stopping:
            await asyncio.sleep(RESTART_PAUSE_SECONDS)
            for slot, worker in list(self._workers.items()):
                if worker.process.is_alive() or self._stopping:
                    continue
                log.error(
                    "HTTP worker %d (pid %s) exited with code %s; starting another",
                    slot,
                    worker.process.pid,
                    worker.process.exitcode,
                )
                self._forget(worker)
                self._spawn(slot)

    async def stop(self) -> None:
        self._stopping = True
        workers = list(self._workers.values())
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in workers:
            await asyncio.to_thread(worker.process.join, STOP_TIMEOUT_SECONDS)
            if worker.process.is_alive():
                log.warning("HTTP worker %d did not stop in time; killed", worker.slot)
                worker.process.kill()
                await asyncio.to_thread(worker.process.join)
            if not worker.events.closed:
                self._forget(worker)
