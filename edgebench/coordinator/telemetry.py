"""What one coordinator process counts as it serves (Prometheus instruments in a registry
of its own): dispatch latency, results stored and refused by reason, failed
authentication, store errors. `/metrics` adds them to the fleet's store-wide figures
when the HTTP app runs in this process (`--http-workers 0`, the default); a worker
process has none of its own to show."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
DISPATCH_SECONDS = Histogram(
    "edgebench_dispatch_seconds",
    "From an agent's work request to the run sent to it",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RESULTS_STORED = Counter(
    "edgebench_results_stored", "Results stored from agents", registry=REGISTRY
)
RESULTS_REFUSED = Counter(
    "edgebench_results_refused", "Results refused, by gRPC status", ["code"], registry=REGISTRY
)
AUTH_FAILURES = Counter(
    "edgebench_auth_failures",
    "Failed authentication on the agent port (enrollment tokens, agent secrets)",
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "edgebench_store_errors",
    "Store writes or rounds that failed (a database error, not a refusal)",
    registry=REGISTRY,
)
