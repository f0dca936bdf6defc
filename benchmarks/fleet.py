"""How big a fleet one coordinator holds: a real coordinator process, N simulated agents
speaking the real protocol (many per process, asyncio, one gRPC connection each), a
queue kept full of small runs, realistic result payloads.

Each simulated agent sends what the real agent sends (edgebench/agent/session.py): it
connects, asks for work, "runs" an assignment for about --run-seconds (x0.5 to x1.5)
with a progress message at each phase and repetition, sends a result of the size a real
one has (5 reps x n_gen raw token timestamps, environment, sensors) and at once asks for
work again; it heartbeats every --heartbeat seconds, naming its run while it has one.
Printed: agents held, runs dispatched and results stored per second,
dispatch latency (work request -> assignment, with runs queued) and heartbeat round trip
(heartbeat -> acknowledgement) p50/p99, coordinator RSS and CPU.

Targets on a 2-core machine (issue 5): 1,000 agents on SQLite and 2,000 on PostgreSQL
held for 5 minutes with heartbeats every 10 s, heartbeat p99 < 100 ms, dispatch p99
< 250 ms, >= 100 runs completed per second on SQLite.

Agents speak TLS as real ones do (the coordinator's own CA); --insecure measures plaintext.

Usage: .venv/bin/python -m benchmarks.fleet --agents 1000 [--postgres] [--duration 300]
       [--insecure]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
from sqlalchemy import create_engine, text

from edgebench.agent.transport import channel_options
from edgebench.agent.wire import metrics_message
from edgebench.cli.client import CoordinatorClient
from edgebench.coordinator.tables import RunState
from edgebench.dashboard.models import JobCreate
from edgebench.measure.record import RepTiming, summarize
from edgebench.modelgen import TinyLlamaSpec, cached_tiny_llama
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc
from edgebench.protocol import AGENT_ID_KEY, AGENT_SECRET_KEY
from edgebench.tls import split_token
from edgebench.workload import Workload

HERE = Path(__file__).resolve().parent
ADMIN_TOKEN = "eba_fleet_benchmark"
QUEUED_COUNT = text("SELECT count(*) FROM run WHERE state = :state")  # enums stored by name
N_GEN = list(range(32, 112, 8))  # 10 generation lengths x 10 prompts x 10 depths = 1000 runs
N_PROMPT = list(range(16, 176, 16))
N_DEPTH = list(range(0, 100, 10))
REPS = 5
# Each simulated agent gets a TCP connection of its own, as real agents have: by default
# gRPC shares one connection among a process's channels to the same address (found when
# 1000 simulated agents turned out to be 1000 streams on one connection).
OWN_CONNECTION = [*channel_options(), ("grpc.use_local_subchannel_pool", 1)]
BACKLOG = 3000  # queued runs the driver keeps, topping up with new jobs every second


# ---- one simulator process ---------------------------------------------------------


@dataclass
class Stats:
    connected: int = 0
    held_at_end: int = 0
    dispatched: int = 0
    stored: int = 0
    refused: int = 0
    cancelled: int = 0  # CancelRun received: a lease the coordinator saw as stale
    reconnects: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # why sessions broke: status codes
    dispatch_ms: list[float] = field(default_factory=list)
    heartbeat_ms: list[float] = field(default_factory=list)


def payload_for(n_gen: int, n_prompt: int) -> pb.Metrics:
    """A result as big as a real one: 5 reps of n_gen token timestamps plus provenance,
    its figures made from them (the coordinator recomputes them)."""
    reps = []
    for _ in range(REPS):
        start = 1_000_000
        stamps, now = [], start + 4_000_000
        for _ in range(n_gen):
            now += random.randint(1_500_000, 2_500_000)
            stamps.append(now)
        reps.append(RepTiming(prefill_ns=4_000_000, token_ns=tuple(stamps), start_ns=start))
    result = summarize(reps, backend="llama_cpp", variant="Q4_K_M", model_sha256="a" * 64,
                       threads=4, n_prompt=n_prompt, load_ms=120.0, peak_rss_mb=512.0)  # fmt: skip
    result.environment = {"cpu_model": "Cortex-A76", "cores": 4, "engine_build": {"x": "y" * 200}}
    result.sensors = {"sources": ["raspberrypi"], "samples": [[0.1 * i, 5.1] for i in range(50)]}
    return metrics_message(result)


def _channel(address: str, ca: str | None, options: list[tuple[str, int]]) -> grpc.aio.Channel:
    """As an enrolled agent's: verified against the coordinator's CA, or plaintext."""
    if not ca:
        return grpc.aio.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(Path(ca).read_bytes())
    return grpc.aio.secure_channel(address, credentials, options=options)


async def simulated_agent(
    address: str, credential: dict[str, str], args: argparse.Namespace, stats: Stats,
    payloads: dict[tuple[int, int], pb.Metrics], window: tuple[float, float], stop: asyncio.Event,
) -> None:  # fmt: skip
    meta = ((AGENT_ID_KEY, credential["agent_id"]), (AGENT_SECRET_KEY, credential["secret"]))
    measuring = lambda: window[0] <= time.time() <= window[1]  # noqa: E731
    first = True
    while not stop.is_set():
        async with _channel(address, args.ca, OWN_CONNECTION) as channel:
            call = pb_grpc.AgentServiceStub(channel).Session(metadata=meta)
            try:
                await _session(call, args, stats, payloads, measuring, stop, first)
            except grpc.aio.AioRpcError as exc:
                stats.reconnects += 1
                stats.errors[exc.code().name] = stats.errors.get(exc.code().name, 0) + 1
            finally:
                call.cancel()
        first = False
        await asyncio.sleep(1.0)


async def _session(
    call: Any, args: argparse.Namespace, stats: Stats, payloads: dict[tuple[int, int], pb.Metrics],
    measuring: Any, stop: asyncio.Event, first: bool,
) -> None:  # fmt: skip
    await call.write(pb.AgentMessage(hello=pb.Hello(hardware=HARDWARE)))
    if not (await call.read()).HasField("welcome"):
        return
    if first:
        stats.connected += 1
    outgoing: asyncio.Queue[pb.AgentMessage] = asyncio.Queue()
    asked_at: dict[str, float] = {}
    beats: dict[int, float] = {}
    running: list[pb.RunAssignment] = []  # the run in progress, as the real agent has one

    def send(**body: Any) -> None:
        outgoing.put_nowait(pb.AgentMessage(**body))

    def ask() -> None:
        request_id = str(uuid.uuid4())
        asked_at[request_id] = time.perf_counter()
        send(work_request=pb.WorkRequest(request_id=request_id))

    async def writer() -> None:
        while True:
            await call.write(await outgoing.get())

    async def heartbeats() -> None:
        await asyncio.sleep(random.uniform(0, args.heartbeat))  # spread the fleet out
        seq = 0
        while True:
            seq += 1
            beats[seq] = time.perf_counter()
            beat = pb.Heartbeat(seq=seq)
            if running:
                beat.run_id, beat.lease_epoch = running[0].run_id, running[0].lease_epoch
            send(heartbeat=beat)
            await asyncio.sleep(args.heartbeat)

    async def execute(assignment: pb.RunAssignment) -> None:
        """What the real agent sends for a run: progress at each phase and repetition,
        the result, then at once a new work request. Run lengths vary (x0.5 to x1.5):
        real runs differ, and equal ones would march the fleet in lockstep."""
        running.append(assignment)
        phases = [("fetching", 0), ("loading", 0), ("warmup", 0)]
        phases += [("measuring", rep) for rep in range(REPS + 1)]
        step = args.run_seconds * random.uniform(0.5, 1.5) / len(phases)
        run_id, epoch = assignment.run_id, assignment.lease_epoch
        for phase, rep in phases:
            send(progress=pb.RunProgress(run_id=run_id, lease_epoch=epoch, phase=phase, rep=rep,
                                         reps=REPS))  # fmt: skip
            await asyncio.sleep(step)
        tests = assignment.spec.workload.tests
        result = pb.RunResult(result_id=str(uuid.uuid4()), run_id=assignment.run_id,
                              lease_epoch=assignment.lease_epoch,
                              metrics=payloads[tests.n_gen[0], tests.n_prompt[0]])  # fmt: skip
        result.metrics.n_depth = tests.n_depth[0]  # what it measured is its run's
        result.metrics.model_sha256 = result.metrics.source_sha256 = assignment.model.sha256
        running.clear()
        send(result=result)
        ask()

    tasks = [asyncio.create_task(writer()), asyncio.create_task(heartbeats())]
    ask()
    try:
        while not stop.is_set():
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("body")
            now = time.perf_counter()
            if kind == "assignment":
                sent = asked_at.pop(message.assignment.request_id, None)
                if measuring() and sent is not None:
                    stats.dispatched += 1
                    stats.dispatch_ms.append((now - sent) * 1000)
                if not running:
                    tasks.append(asyncio.create_task(execute(message.assignment)))
                    tasks = [task for task in tasks if not task.done()]
            elif kind == "ack":
                if measuring():
                    stats.stored += int(message.ack.accepted)
                    stats.refused += int(not message.ack.accepted)
            elif kind == "heartbeat_ack":
                sent = beats.pop(message.heartbeat_ack.seq, None)
                if measuring() and sent is not None:
                    stats.heartbeat_ms.append((now - sent) * 1000)
            elif kind == "cancel":
                stats.cancelled += 1
    finally:
        stats.held_at_end += int(stop.is_set())
        for task in tasks:
            task.cancel()


async def simulate(args: argparse.Namespace) -> None:
    credentials = json.loads(Path(args.credentials).read_text())
    window = (args.start_at, args.start_at + args.duration)
    payloads = {(g, p): payload_for(g, p) for g in N_GEN for p in N_PROMPT}
    stats, stop = Stats(), asyncio.Event()
    agents = [
        asyncio.create_task(simulated_agent(args.address, c, args, stats, payloads, window, stop))
        for c in credentials
    ]
    await asyncio.sleep(max(0.0, window[1] - time.time()))
    held = stats  # counted as the sessions see the stop
    stop.set()
    await asyncio.sleep(0.5)
    for task in agents:
        task.cancel()
    await asyncio.gather(*agents, return_exceptions=True)
    Path(args.out).write_text(json.dumps(asdict(held)))


# ---- the driver ----------------------------------------------------------------------


Coordinator = tuple[subprocess.Popen[str], str, str]  # process, gRPC address, HTTP URL


def ca_of(home: Path) -> str:
    """The CA file a coordinator in `home` made ("" when it serves --insecure)."""
    path = home / "data" / "tls" / "ca.pem"
    return str(path) if path.exists() else ""


def start_coordinator(
    home: Path, db_url: str, http_workers: int = 0, insecure: bool = False
) -> Coordinator:
    env = {**os.environ, "EDGEBENCH_HOME": str(home), "EDGEBENCH_TOKEN": ADMIN_TOKEN}
    with (home / "coordinator.log").open("w") as log:  # the child keeps its own handle
        process = subprocess.Popen(
            [sys.executable, "-m", "edgebench", "coordinator", "serve", "--db", db_url,
             "--grpc-port", "0", "--http-port", "0", "--lease-seconds", "60",
             "--http-workers", str(http_workers), *(["--insecure"] if insecure else [])],
            env=env, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("READY"):
        raise SystemExit("coordinator did not start: " + (home / "coordinator.log").read_text())
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    return process, fields["grpc"], fields["http"]


async def enroll_all(address: str, ca: str, tokens: list[str]) -> list[dict[str, str]]:
    limit = asyncio.Semaphore(32)
    async with _channel(address, ca, []) as channel:
        stub = pb_grpc.AgentServiceStub(channel)

        async def one(index: int, token: str) -> dict[str, str]:
            async with limit:
                secret = split_token(token)[0]
                request = pb.EnrollRequest(token=secret, name=f"sim-{index:05d}", hardware=HARDWARE)
                reply = await stub.Enroll(request)
            return {"agent_id": reply.agent_id, "secret": reply.secret}

        return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens))))


# What every simulated agent says it is and can run, at enrollment and on every hello.
HARDWARE = pb.HardwareInfo(
    identity=pb.DeviceIdentity(hostname="sim", cpu_model="Cortex-A76", cpu_cores_logical=4,
                               ram_bytes=8 << 30, arch="aarch64", os="Linux"),
    capabilities=pb.DeviceCapabilities(engines={"llama_cpp": "0.3.36"}),
)  # fmt: skip


def job_body(sha: str, runs: int) -> JobCreate:
    """A job of `runs` runs (100 or 1000: 10 generation lengths x 10 prompts x 1 or 10
    depths) from one of three submitters."""
    depths = N_DEPTH[: runs // (len(N_GEN) * len(N_PROMPT))]
    workload = Workload.from_flat(
        {"n_prompt": N_PROMPT, "n_gen": N_GEN, "n_depth": depths, "reps": REPS}
    )
    return JobCreate(models=[sha], workload=workload, submitter=random.choice(["ann", "bob", "cy"]))


@dataclass(frozen=True)
class CpuShares:
    """CPU seconds so far: the coordinator, the simulators, and the whole machine busy
    (the simulators share the cores, so a saturated machine shows in the latencies)."""

    coordinator: float
    simulators: float
    machine_busy: float

    @classmethod
    def now(cls, coordinators: list[psutil.Process], simulators: list[psutil.Process]) -> CpuShares:
        machine = psutil.cpu_times()
        return cls(
            coordinator=sum(sum(p.cpu_times()[:2]) for p in coordinators),
            simulators=sum(sum(p.cpu_times()[:2]) for p in simulators),
            machine_busy=sum(machine) - machine.idle - getattr(machine, "iowait", 0.0),
        )

    def minus(self, earlier: CpuShares) -> CpuShares:
        return CpuShares(self.coordinator - earlier.coordinator,
                         self.simulators - earlier.simulators,
                         self.machine_busy - earlier.machine_busy)  # fmt: skip


def _pct(cpu: CpuShares | None, part: str, seconds: float) -> str:
    return "-" if cpu is None else f"{100 * getattr(cpu, part) / seconds:.0f}"


def _rss_mib(processes: list[psutil.Process]) -> float:
    with contextlib.suppress(psutil.Error):
        return sum(p.memory_info().rss for p in processes) / 2**20
    return 0.0


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    with contextlib.suppress(psutil.Error):
        return sum(sum(p.cpu_times()[:2]) for p in processes)
    return 0.0


def _merged(parts: list[dict[str, Any]], key: str) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in parts:
        for name, count in part[key].items():
            merged[name] = merged.get(name, 0) + count
    return merged


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drive(args: argparse.Namespace) -> None:
    if args.coordinators > 1 and not args.postgres:
        raise SystemExit("--coordinators above 1 needs --postgres (SQLite: one coordinator)")
    work = Path(tempfile.mkdtemp(prefix="edgebench-fleet-"))
    pg = None
    db_url = f"sqlite:///{work / 'coordinator.db'}"
    if args.postgres:
        from tests.postgres import PostgresServer, new_database

        pg = PostgresServer(Path(tempfile.mkdtemp(prefix="edgebench-pg-")))  # own folder
        db_url = new_database(pg.url)
    coordinators: list[Coordinator] = []
    try:
        for index in range(args.coordinators):
            home = work / f"coordinator-{index}"
            home.mkdir()
            coordinators.append(start_coordinator(home, db_url, args.http_workers, args.insecure))
        report(args, work, coordinators, db_url)
    finally:
        for process, _, _ in coordinators:
            process.terminate()
            process.wait(timeout=30)
        if pg is not None:
            pg.stop()


def report(
    args: argparse.Namespace, work: Path, coordinators: list[Coordinator], db_url: str
) -> None:
    api = CoordinatorClient(coordinators[0][2], ADMIN_TOKEN)
    model = cached_tiny_llama(
        HERE / ".data" / "models",
        TinyLlamaSpec(n_embd=64, n_layer=1, n_head=2, n_head_kv=2, n_ff=128),
    )
    sha = api.upload_model(model, "gguf").sha256
    print(f"enrolling {args.agents} agents...", flush=True)
    tokens = [api.create_token(contributor=False)
              for _ in range(args.agents)]  # fmt: skip
    addresses = [address for _, address, _ in coordinators]
    homes = [work / f"coordinator-{index}" for index in range(len(coordinators))]
    credentials = asyncio.run(enroll_all(addresses[0], ca_of(homes[0]), tokens))
    for _ in range(BACKLOG // args.job_runs):
        api.submit_job(job_body(sha, args.job_runs))
    start_at = time.time() + args.warmup
    simulators = []
    for index in range(args.processes):
        part = credentials[index :: args.processes]
        creds = work / f"credentials-{index}.json"
        creds.write_text(json.dumps(part))
        simulators.append(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fleet", "--simulate",
             "--address", addresses[index % len(addresses)],
             "--ca", ca_of(homes[index % len(homes)]),
             "--credentials", str(creds), "--out", str(work / f"stats-{index}.json"),
             "--start-at", str(start_at), "--duration", str(args.duration),
             "--heartbeat", str(args.heartbeat), "--run-seconds", str(args.run_seconds)],
        ))  # fmt: skip
    print(f"{args.agents} agents in {args.processes} processes; warm-up {args.warmup:.0f} s, "
          f"measuring {args.duration:.0f} s", flush=True)  # fmt: skip
    reader = PageReader(coordinators[0][2], start_at + args.duration) if args.read_pages else None
    if reader:
        reader.start()
    watched = [psutil.Process(process.pid) for process, _, _ in coordinators]
    simulated = [psutil.Process(p.pid) for p in simulators]
    engine = create_engine(db_url)
    rss_peak, workers_rss_peak, workers_cpu_start, stored_start = 0.0, 0.0, 0.0, 0
    workers = [child for p in watched for child in p.children()]  # serve --http-workers
    cpu_start: CpuShares | None = None
    while time.time() < start_at + args.duration:
        time.sleep(1.0)
        rss_peak = max(rss_peak, *(p.memory_info().rss / 2**20 for p in watched))
        workers_rss_peak = max(workers_rss_peak, _rss_mib(workers))
        with engine.connect() as db:
            queued = db.execute(QUEUED_COUNT, {"state": RunState.QUEUED.name}).scalar()
            stored = int(db.execute(text("SELECT count(*) FROM result")).scalar() or 0)
        if cpu_start is None and time.time() >= start_at:
            cpu_start, stored_start = CpuShares.now(watched, simulated), stored
            workers_cpu_start = _cpu_seconds(workers)
        for _ in range(max(0, BACKLOG - (queued or 0)) // args.job_runs):
            api.submit_job(job_body(sha, args.job_runs))  # keeps the queue full
    cpu = CpuShares.now(watched, simulated).minus(cpu_start) if cpu_start else None
    workers_cpu = _cpu_seconds(workers) - workers_cpu_start if cpu_start else 0.0
    with engine.connect() as db:
        stored_end = int(db.execute(text("SELECT count(*) FROM result")).scalar() or 0)
    for process in simulators:
        process.wait(timeout=120)
    parts = [json.loads((work / f"stats-{i}.json").read_text()) for i in range(args.processes)]
    total = {key: sum(p[key] for p in parts) for key in ("connected", "held_at_end",
             "dispatched", "stored", "refused", "cancelled", "reconnects")}  # fmt: skip
    dispatch = [v for p in parts for v in p["dispatch_ms"]]
    beats = [v for p in parts for v in p["heartbeat_ms"]]
    backend = "PostgreSQL" if args.postgres else "SQLite"
    if args.coordinators > 1:
        backend += f" shared by {args.coordinators} coordinator processes"
    rows = [
        ("agents enrolled / connected / held at the end",
         f"{args.agents} / {total['connected']} / {total['held_at_end']}"),
        ("session re-opens (why)", f"{total['reconnects']} {_merged(parts, 'errors') or ''}"),
        ("runs dispatched per second", f"{total['dispatched'] / args.duration:.1f}"),
        ("results stored per second (acks; database)", f"{total['stored'] / args.duration:.1f}; "
         f"{(stored_end - stored_start) / args.duration:.1f}"),
        ("results refused; runs cancelled as stale", f"{total['refused']}; {total['cancelled']}"),
        ("dispatch latency p50 / p99 ms", f"{percentile(dispatch, 0.5):.1f} / "
         f"{percentile(dispatch, 0.99):.1f}"),
        ("heartbeat round trip p50 / p99 ms (n)", f"{percentile(beats, 0.5):.1f} / "
         f"{percentile(beats, 0.99):.1f} ({len(beats)})"),
        ("coordinator peak RSS MiB (the biggest)", f"{rss_peak:.0f}"),
        (f"coordinator CPU, % of one core ({args.coordinators} process(es))",
         _pct(cpu, "coordinator", args.duration)),
        ("its other processes (HTTP workers): peak RSS MiB; CPU, % of one core",
         f"{workers_rss_peak:.0f}; {100 * workers_cpu / args.duration:.0f}"),
        ("simulators' CPU, % of one core", _pct(cpu, "simulators", args.duration)),
        ("whole machine busy, % of all cores",
         _pct(cpu, "machine_busy", args.duration * (psutil.cpu_count() or 1))),
    ]  # fmt: skip
    if reader:
        reader.join()
        rows.append(("dashboard reader: pages read; p50 / p95 ms",
                     f"{len(reader.times)}; {percentile(reader.times, 0.5):.0f} / "
                     f"{percentile(reader.times, 0.95):.0f}"))  # fmt: skip
    transport = "plaintext (--insecure)" if args.insecure else "TLS"
    print(f"\n{backend}, {args.agents} agents over {transport}, {args.duration:.0f} s, "
          f"heartbeat every {args.heartbeat:g} s, runs of {args.run_seconds:g} s\n")  # fmt: skip
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if dispatch:
        print(f"\n(dispatch mean {statistics.fmean(dispatch):.1f} ms over {len(dispatch)})")


# Every page and list call a dashboard reader loads (issue 17: reading the dashboard at its
# heaviest must not stall the agents).
READER_PATHS = ("/", "/leaderboard", "/leaderboard?test=all&sort=model&order=asc", "/jobs",
                "/devices/sim-00000", "/api/v1/devices", "/api/v1/jobs", "/api/v1/results",
                "/api/v1/results?sort=ttft_ms&q=sim", "/api/v1/leaderboard?test=all")  # fmt: skip


class PageReader(threading.Thread):
    """One client reading every dashboard page in a loop until `until`."""

    def __init__(self, http: str, until: float) -> None:
        super().__init__(daemon=True)
        self.http, self.until = http, until
        self.times: list[float] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.http, timeout=60) as client:
            while time.time() < self.until:
                for path in READER_PATHS:
                    started = time.perf_counter()
                    client.get(path)
                    self.times.append((time.perf_counter() - started) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--postgres", action="store_true", help="a private PostgreSQL server")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--run-seconds", type=float, default=5.0, help="each simulated run")
    parser.add_argument("--processes", type=int, default=2, help="simulator processes")
    parser.add_argument("--coordinators", type=int, default=1,
                        help="coordinator processes sharing the database (PostgreSQL only); "
                             "simulator processes are spread over them")  # fmt: skip
    parser.add_argument("--job-runs", type=int, choices=(100, 1000), default=100,
                        help="runs per submitted job (storing a 1000-run job and answering "
                        "with its view holds the coordinator's CPU for a moment)")  # fmt: skip
    parser.add_argument("--read-pages", action="store_true",
                        help="a client reads every dashboard page in a loop meanwhile")  # fmt: skip
    parser.add_argument("--http-workers", type=int, default=0,
                        help="HTTP worker processes (serve --http-workers)")  # fmt: skip
    parser.add_argument("--insecure", action="store_true",
                        help="plaintext agents (serve --insecure); default: TLS")  # fmt: skip
    parser.add_argument("--simulate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--credentials", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.simulate:
        asyncio.run(simulate(args))
    else:
        drive(args)


if __name__ == "__main__":
    main()
