"""How fast the dashboard reads at fleet size: a store filled through the coordinator's
own write path (tests/storefill.py: enrollment, jobs, dispatch rounds, result batches
with realistic payloads), a real coordinator process serving it, every page and every
/api/v1 list call requested in interleaved rounds (routes shuffled per round), and the
server's own time per request (the Server-Timing header) reported per route: p50, p95
over all rounds, and the range of the per-round p95s (the interval). The coordinator's
RSS is sampled throughout; a full CSV export is streamed at the end.

Target on a 2-core machine (issue 17): 1,000 devices and 100,000 results, p95 under
150 ms per route (first page in the default sort, and the slowest filter and sort
combination of each route), coordinator RSS under 500 MB.

Usage: .venv/bin/python -m benchmarks.dashboard [--devices 1000] [--results 100000]
       [--postgres] [--rounds 5] [--repeat 4]
The SQLite store is kept in benchmarks/.data/ and reused by later runs of the same size.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.fleet import percentile, start_coordinator
from edgebench.coordinator.store import Store
from tests.storefill import fill

HERE = Path(__file__).resolve().parent


def filled_store(args: argparse.Namespace) -> str:
    """The store's URL, filled (once per size for SQLite: the file is kept)."""
    if args.postgres:
        from tests.postgres import PostgresServer, new_database

        server = PostgresServer(Path(tempfile.mkdtemp(prefix="edgebench-pg-")))
        args.cleanup.append(server.stop)
        url = new_database(server.url)
    else:
        path = HERE / ".data" / f"dashboard-{args.devices}-{args.results}.db"
        url = f"sqlite:///{path}"
        if path.exists():
            print(f"reusing {path}")
            return url
        path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(url)
    started = time.monotonic()

    def progress(done: int) -> None:
        if done % 10_000 < args.devices:
            rate = done / (time.monotonic() - started)
            print(f"  {done:,} results stored ({rate:,.0f}/s)", flush=True)

    print(f"filling: {args.devices:,} devices, {args.results:,} results", flush=True)
    fill(store, devices=args.devices, results=args.results, samples=120, progress=progress)
    store.close()
    return url


def routes(http: str) -> list[str]:
    """Every page and list call, each in its default view and its heaviest view."""
    client = httpx.Client(base_url=http, timeout=60)
    device = client.get("/api/v1/devices", params={"limit": 1}).json()["items"][0]["name"]
    job = client.get("/api/v1/jobs", params={"limit": 1}).json()["items"][0]["id"]
    results = client.get("/api/v1/results", params={"limit": 4}).json()["items"]
    compare = "&".join(f"r={r['id']}" for r in results)
    total = client.get("/api/v1/results", params={"limit": 1}).json()["total"]
    client.close()
    return [
        "/",
        "/leaderboard",
        "/leaderboard?test=all&sort=model&order=asc",
        "/leaderboard?test=all&q=pi&hide_noisy=true&sort=ttft_ms&order=asc",
        "/jobs",
        f"/jobs/{job}",
        f"/devices/{device}",
        f"/results/{results[0]['id']}",
        f"/compare?{compare}",
        "/api/v1/devices",
        "/api/v1/jobs",
        "/api/v1/results",
        "/api/v1/results?sort=device&order=asc",
        "/api/v1/results?q=laptop&hide_noisy=true&sort=ttft_ms&order=asc",
        f"/api/v1/results?sort=decode_tps&offset={max(total - 50, 0)}",
        "/api/v1/leaderboard",
        "/api/v1/leaderboard?test=all&sort=hardware_class&order=asc",
        f"/api/v1/results/{results[0]['id']}",
    ]


class RssWatch(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak_mib = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            family = [self.process, *self.process.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in family if p.is_running())
            self.peak_mib = max(self.peak_mib, rss / 2**20)


def server_ms(response: httpx.Response) -> float:
    timing = response.headers.get("server-timing", "")
    return float(timing.split("dur=")[1]) if "dur=" in timing else float("nan")


def measure(http: str, paths: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """{path: (per-round server times, sizes, client times)}."""
    by_path: dict[str, dict[str, list[Any]]] = {
        p: {"rounds": [], "bytes": [], "client": []} for p in paths
    }
    rng = random.Random(1)
    with httpx.Client(base_url=http, timeout=120) as client:
        for path in paths:  # warm-up: caches, imports, the first query plans
            client.get(path).raise_for_status()
        for round_index in range(args.rounds):
            order = paths[:]
            rng.shuffle(order)
            for path in order:
                times = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    response = client.get(path)
                    response.raise_for_status()
                    by_path[path]["client"].append((time.perf_counter() - started) * 1000)
                    times.append(server_ms(response))
                    by_path[path]["bytes"].append(len(response.content))
                by_path[path]["rounds"].append(times)
            print(f"  round {round_index + 1}/{args.rounds} done", flush=True)
    return by_path


def export_once(http: str) -> tuple[float, int]:
    started, size = time.perf_counter(), 0
    with httpx.stream("GET", f"{http}/api/v1/results/export", params={"format": "csv"},
                      timeout=600) as response:  # fmt: skip
        for chunk in response.iter_bytes():
            size += len(chunk)
    return time.perf_counter() - started, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true", help="a private PostgreSQL server")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--repeat", type=int, default=4, help="requests per route per round")
    parser.add_argument("--http-workers", type=int, default=0,
                        help="HTTP worker processes (serve --http-workers)")  # fmt: skip
    args = parser.parse_args()
    args.cleanup = []
    try:
        url = filled_store(args)
        home = Path(tempfile.mkdtemp(prefix="edgebench-dashboard-"))
        process, _, http = start_coordinator(home, url, args.http_workers)
        watch = RssWatch(process.pid)
        watch.start()
        try:
            paths = routes(http)
            by_path = measure(http, paths, args)
            export_s, export_bytes = export_once(http)
        finally:
            watch.stop.set()
            process.terminate()
            process.wait(timeout=30)
        report(args, by_path, watch.peak_mib, export_s, export_bytes)
    finally:
        for stop in args.cleanup:
            stop()


def report(
    args: argparse.Namespace,
    by_path: dict[str, Any],
    peak_mib: float,
    export_s: float,
    export_bytes: int,
) -> None:
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"\n{backend}, {args.devices:,} devices, {args.results:,} results; "
          f"{args.rounds} interleaved rounds x {args.repeat} requests per route; "
          "server time (Server-Timing) in ms\n")  # fmt: skip
    print("| route | p50 | p95 | p95 per round (min-max) | client p50 | KiB |")
    print("|---|--:|--:|--:|--:|--:|")
    for path, data in by_path.items():
        every = [t for times in data["rounds"] for t in times]
        per_round = [percentile(times, 0.95) for times in data["rounds"]]
        print(f"| `{path[:70]}` | {percentile(every, 0.5):.1f} | {percentile(every, 0.95):.1f} "
              f"| {min(per_round):.1f}-{max(per_round):.1f} "
              f"| {statistics.median(data['client']):.1f} "
              f"| {statistics.median(data['bytes']) / 1024:.0f} |")  # fmt: skip
    print(f"\ncoordinator peak RSS (with its HTTP workers, if any): {peak_mib:.0f} MiB")
    print(f"full CSV export: {export_bytes / 2**20:.1f} MiB in {export_s:.1f} s (streamed)")


if __name__ == "__main__":
    main()
