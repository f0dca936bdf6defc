"""Settings of one coordinator process (flags of `coordinator serve`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgebench import paths
from edgebench.protocol import MAX_MESSAGE_BYTES
from edgebench.tls import is_loopback


def default_db_url() -> str:
    return f"sqlite:///{paths.ensure(paths.data_dir()) / 'coordinator.db'}"


def default_artifact_dir() -> Path:
    return paths.data_dir() / "artifacts"


def default_tls_dir() -> Path:
    return paths.tls_dir()


@dataclass(frozen=True)
class CoordinatorSettings:
    db_url: str
    artifact_dir: Path
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_port: int = 8080
    lease_seconds: int = 60
    reap_seconds: int = 10
    retry_base_seconds: float = 1.0
    # Refuses any single message over this size (results with raw timings are the biggest).
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_artifact_bytes: int = 64 * 1024 * 1024 * 1024
    # 0: the HTTP app shares the agents' event loop; N: it runs in N processes of its own.
    http_workers: int = 0
    # Replication agrees within max(this share of the trusted figure, the combined 95%
    # intervals) (coordinator/verification.py).
    verify_band: float = 0.05
    # A newly enrolled device waits as `pending` until `devices approve` (or `reject`).
    require_approval: bool = False
    advertise: str | None = None  # announce the agent port on mDNS as this instance name
    # TLS on the agent port (and HTTPS beyond loopback) unless `insecure`: the own
    # authority in `tls_dir`, or the operator's `tls_cert` chain and `tls_key`.
    insecure: bool = False
    tls_dir: Path = field(default_factory=default_tls_dir)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_names: tuple[str, ...] = ()  # more names the server certificate is valid for
    https: bool | None = None  # None: HTTPS exactly when bound beyond loopback
    # Who may read the dashboard and API: "open" (anyone who reaches it), "token" (the
    # admin token or a viewer token); None: open on loopback, token beyond it.
    reads: Literal["open", "token"] | None = None

    @property
    def reads_need_token(self) -> bool:
        if self.reads is not None:
            return self.reads == "token"
        return not is_loopback(self.host)

    @property
    def heartbeat_seconds(self) -> int:
        """Three heartbeats per lease (at most every 5 s), so one lost beat never expires it."""
        return max(1, min(5, self.lease_seconds // 3))

    @property
    def touch_flush_seconds(self) -> float:
        """How often heartbeats and progress are written, together: twice per heartbeat,
        so a stale lease is told to stop within a heartbeat."""
        return self.heartbeat_seconds / 2
