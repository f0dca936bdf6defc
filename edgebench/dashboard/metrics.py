"""`/metrics` in Prometheus's text format: the fleet as the store sees it at each scrape,
so one scrape of the coordinator shows every device's health though agents sit behind
NAT (and any coordinator sharing the store, or HTTP worker, answers the same). Read by
the same rule as the dashboard (a viewer token beyond loopback, as a bearer token)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from edgebench import __version__
from edgebench.coordinator import telemetry
from edgebench.coordinator.store import Store
from edgebench.coordinator.tables import DEVICE_STATES, RunState
from edgebench.dashboard import queries
from edgebench.dashboard.deps import StoreDep
from edgebench.dashboard.models import VERIFICATION_STATES

router = APIRouter(tags=["metrics"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# every one-word status a device can have (dashboard/queries.py `_status`)
STATUSES = (*DEVICE_STATES["admission"][:1], *DEVICE_STATES["admission"][2:],
            *DEVICE_STATES["automatic"], *DEVICE_STATES["operator"][1:],
            "offline", "idle", "busy")  # fmt: skip


class FleetCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily("edgebench", "edgebench build", value={"version": __version__})
        yield from self._devices()
        counts = self.store.counts()
        runs = GaugeMetricFamily("edgebench_runs", "Runs by state", labels=["state"])
        for state in RunState:
            runs.add_metric([state.value], counts.runs.get(state.value, 0))
        yield runs
        queue = GaugeMetricFamily(
            "edgebench_queue_depth", "Queued runs by priority band", labels=["band"]
        )
        for band in ("high", "normal", "low"):
            queue.add_metric([band], counts.queued.get(band, 0))
        yield queue
        results = GaugeMetricFamily(
            "edgebench_results", "Stored results by verification", labels=["verification"]
        )
        for verification in VERIFICATION_STATES:
            results.add_metric([verification], counts.results.get(verification, 0))
        yield results

    def _devices(self) -> Iterator[Metric]:
        devices = queries.devices(self.store, 0, 100_000).items
        by_status = GaugeMetricFamily("edgebench_devices", "Devices by status", labels=["status"])
        for status in STATUSES:
            by_status.add_metric([status], sum(1 for d in devices if d.status == status))
        yield by_status
        up = GaugeMetricFamily("edgebench_device_up", "1 while connected", labels=["device"])
        seen = GaugeMetricFamily("edgebench_device_last_seen_timestamp_seconds",
                                 "When it was last heard from", labels=["device"])  # fmt: skip
        takes = GaugeMetricFamily("edgebench_device_takes_work",
                                  "1 when approved, active and without an automatic state",
                                  labels=["device"])  # fmt: skip
        for device in devices:
            up.add_metric([device.name], 1 if device.online else 0)
            if device.last_seen_at is not None:
                seen.add_metric([device.name], device.last_seen_at.timestamp())
            free = device.admission == "approved" and device.operator_state == "active"
            takes.add_metric([device.name], 1 if free and not device.automatic else 0)
        yield from (up, seen, takes)
        axes = GaugeMetricFamily("edgebench_device_state", "Each device's state, per axis",
                                 labels=["device", "axis", "state"])  # fmt: skip
        for device in devices:
            axes.add_metric([device.name, "admission", device.admission], 1)
            axes.add_metric([device.name, "operator", device.operator_state], 1)
            axes.add_metric([device.name, "liveness", device.liveness], 1)
            for state in device.automatic:
                axes.add_metric([device.name, "automatic", state], 1)
        yield axes


class _ThisProcess(Collector):
    """This process's own instruments (coordinator/telemetry.py): counted where the
    agents are served, so only an in-process HTTP app has them to show."""

    def collect(self) -> Iterator[Metric]:
        yield from telemetry.REGISTRY.collect()


@router.get("/metrics", response_class=Response)
def metrics(store: StoreDep) -> Response:
    """The fleet in Prometheus's text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(store))
    registry.register(_ThisProcess())
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
