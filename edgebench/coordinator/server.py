"""One coordinator: the gRPC service and the HTTP app on one event loop, two ports; or the
HTTP app in worker processes of its own (httpworkers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edgebench import paths
from edgebench.coordinator import certificates
from edgebench.coordinator.artifacts import ArtifactFiles
from edgebench.coordinator.certificates import ServerTls
from edgebench.coordinator.dispatch import Dispatcher
from edgebench.coordinator.httpworkers import HttpWorkers, api_context, http_server
from edgebench.coordinator.parsing import ParseErrorsAreInvalidArguments
from edgebench.coordinator.service import AgentService
from edgebench.coordinator.settings import CoordinatorSettings
from edgebench.coordinator.store import Store
from edgebench.dashboard.deps import ApiContext, ApiHooks
from edgebench.discovery import SERVICE_TYPE, Advertisement
from edgebench.errors import EdgebenchError
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc

log = logging.getLogger("edgebench.coordinator")
SERVICE_NAME = "edgebench.v1.AgentService"


class PortInUse(EdgebenchError, RuntimeError):
    pass


@dataclass(frozen=True)
class Ready:
    grpc_address: str
    http_url: str
    admin_token_created: str | None
    authority_fingerprint: str | None  # None: the agent port is plaintext (--insecure)


def bind_socket(host: str, port: int, what: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            flag = f"--{what.lower()}-port"
            raise PortInUse(f"{what} port {port} on {host} is already in use ({flag})") from None
        raise
    return sock


def bind_http_socket(host: str, port: int) -> socket.socket:
    sock = bind_socket(host, port, "HTTP")
    # Accepted connections inherit it: without it a small response written in two parts
    # (headers, body) waits for the client's delayed ACK, ~40 ms on a reused connection.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def grpc_server_options(settings: CoordinatorSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Agents ping every 30 s; accept pings down to 10 s so jitter never strikes.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),
        # Sessions that open together wait in gRPC core until the server takes them; past
        # 1000 waiting, core drops some at random (found by benchmarks/fleet.py: 5-9% of
        # 2000 agents starting at once got CANCELLED and had to retry).
        ("grpc.server.max_pending_requests", 10_000),
        ("grpc.server.max_pending_requests_hard_limit", 20_000),
    ]


async def serve(
    settings: CoordinatorSettings,
    *,
    admin_token: str | None = None,
    on_ready: Callable[[Ready], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Runs until `stop` is set (or the task is cancelled), then shuts down gracefully."""
    if settings.grpc_port:
        # gRPC's own bind failure is logged by its core as a multi-line error; checking
        # first gives the user one clear line instead.
        bind_socket(settings.host, settings.grpc_port, "gRPC").close()
    tls = certificates.for_settings(settings)
    http_socket = bind_http_socket(settings.host, settings.http_port)
    unparsable = ParseErrorsAreInvalidArguments({f"/{SERVICE_NAME}/Session": pb.AgentMessage})
    server = grpc.aio.server(options=grpc_server_options(settings), interceptors=[unparsable])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        grpc_port = _add_port(server, f"{settings.host}:{settings.grpc_port}", tls)
    except RuntimeError:
        grpc_port = 0
    if grpc_port == 0:
        http_socket.close()
        raise PortInUse(
            f"gRPC port {settings.grpc_port} on {settings.host} is already in use (--grpc-port)"
        )

    try:
        store = Store(settings.db_url, retry_base_seconds=settings.retry_base_seconds)
    except BaseException:
        http_socket.close()
        raise
    created = store.ensure_admin_token(admin_token)
    if created:
        paths.write_private(paths.admin_token_file(), created + "\n")
    artifacts = ArtifactFiles(settings.artifact_dir)
    dispatcher = Dispatcher(store, settings)
    loop = asyncio.get_running_loop()
    pb_grpc.add_AgentServiceServicer_to_server(
        AgentService(store, artifacts, dispatcher, settings), server
    )

    def wake_dispatcher() -> None:
        loop.call_soon_threadsafe(dispatcher.kick)

    def cancel_runs(held: list[tuple[str, str]]) -> None:
        loop.call_soon_threadsafe(dispatcher.cancel_runs, held)

    hooks = ApiHooks(jobs_changed=wake_dispatcher, runs_cancelled=cancel_runs)
    http_port = http_socket.getsockname()[1]

    dispatcher.start_writers()
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    try:
        http_task, stop_http = await _start_http(
            settings, tls, http_socket, api_context(settings, store, tls, hooks)
        )
    except BaseException:
        await server.stop(grace=None)
        await dispatcher.stop_writers()
        store.close()
        http_socket.close()
        raise
    reaper = asyncio.create_task(_reap_forever(dispatcher, settings.reap_seconds))
    dispatching = asyncio.create_task(dispatcher.run_forever())
    touching = asyncio.create_task(dispatcher.flush_touches_forever())
    collecting = asyncio.create_task(_short_garbage_collections())
    advertised = None
    if settings.advertise is not None:  # mDNS: a hint for agents on the LAN, never trust
        fingerprint = tls.fingerprint if tls else None
        advertised = await asyncio.to_thread(
            Advertisement, settings.advertise, settings.host, grpc_port, fingerprint
        )
        log.info("advertised as %s on mDNS (%s)", settings.advertise, SERVICE_TYPE)
    scheme = "https" if certificates.serves_https(settings) else "http"
    if on_ready:
        on_ready(
            Ready(
                grpc_address=f"{settings.host}:{grpc_port}",
                http_url=f"{scheme}://{_url_host(settings.host)}:{http_port}",
                admin_token_created=created,
                authority_fingerprint=tls.fingerprint if tls else None,
            )
        )
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        if advertised is not None:
            await asyncio.to_thread(advertised.close)
        await health_servicer.enter_graceful_shutdown()
        reaper.cancel()
        dispatching.cancel()
        touching.cancel()
        collecting.cancel()
        await stop_http()
        await server.stop(grace=5)
        with contextlib.suppress(asyncio.CancelledError):
            await http_task
        http_socket.close()
        await dispatcher.stop_writers()  # what the last calls queued is committed
        store.close()


def _add_port(server: grpc.aio.Server, address: str, tls: ServerTls | None) -> int:
    if tls is None:
        log.warning("the agent port %s is plaintext (--insecure): tokens and secrets "
                    "cross the network readable by anyone on the path", address)  # fmt: skip
        return int(server.add_insecure_port(address))
    credentials = grpc.ssl_server_credentials([(tls.key_pem, tls.chain_pem)])
    return int(server.add_secure_port(address, credentials))


def _url_host(host: str) -> str:
    """A bound address as a URL's host part (bound to all: loopback is one of them)."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def _start_http(
    settings: CoordinatorSettings, tls: ServerTls | None, sock: socket.socket, context: ApiContext
) -> tuple[asyncio.Task[None], Callable[[], Awaitable[None]]]:
    """Serves the HTTP app on this loop, or starts its worker processes; returns the task
    that ends when serving has ended and what makes it end."""
    if settings.http_workers:
        workers = HttpWorkers(settings, tls, sock, context.hooks, settings.http_workers)
        await workers.start()
        return asyncio.create_task(workers.supervise_forever()), workers.stop
    http = http_server(context, tls if certificates.serves_https(settings) else None)
    serving = asyncio.create_task(http.serve(sockets=[sock]))
    while not http.started and not serving.done():
        await asyncio.sleep(0.01)
    if serving.done():
        await serving  # surfaces the start-up error

    async def stop() -> None:
        http.should_exit = True

    return serving, stop


async def _short_garbage_collections(
    freeze_seconds: float = 10.0, full_seconds: float = 3600.0
) -> None:
    """Keeps Python's full garbage collections short. A full collection walks every
    object the process holds, and holds the GIL while it does: with 2,000 agents
    connected it stopped the event loop for 0.3-0.4 s every ten seconds (the worst
    heartbeat round trips, benchmarks/fleet.py). Objects alive for a few seconds are
    frozen (gc.freeze: no collection walks them; reference counting still frees them),
    so a collection walks only what is new. Garbage in reference cycles among frozen
    objects waits for the hourly full collection."""
    gc.freeze()  # start-up: modules, classes, caches
    loop = asyncio.get_running_loop()
    last_full = loop.time()
    try:
        while True:
            await asyncio.sleep(freeze_seconds)
            if loop.time() - last_full >= full_seconds:
                gc.unfreeze()
                gc.collect()
                last_full = loop.time()
            gc.freeze()
    finally:
        gc.unfreeze()  # serving ended (`edgebench demo` goes on in the same process)


async def _reap_forever(dispatcher: Dispatcher, every_seconds: int) -> None:
    while True:
        await asyncio.sleep(every_seconds)
        try:
            await dispatcher.flush_seen()
            await dispatcher.reap()
            await dispatcher.verify()
            dispatcher.kick()  # also picks up runs whose retry backoff has passed
        except Exception:  # the reaper must outlive a failed round (database hiccup)
            log.exception("reaper round failed")
