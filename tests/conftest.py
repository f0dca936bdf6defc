"""Shared fixtures: a generated model (cached under tests/.data) and real processes."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from edgebench.dashboard.models import JobCreate
from edgebench.modelgen import (
    TinyLlamaSpec,
    cached_tiny_hf,
    cached_tiny_llama,
    cached_tiny_onnx,
    cached_tiny_onnx_export,
)
from edgebench.tls import split_token

DATA = Path(__file__).parent / ".data"
ADMIN_TOKEN = "eba_test_admin_token"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL: EDGEBENCH_TEST_POSTGRES_URL, or a private one started here
    (in a folder of its own under /tmp: pytest's are private to root, the server is not)."""
    from tests.postgres import PostgresServer

    given = os.environ.get("EDGEBENCH_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    root = Path(tempfile.mkdtemp(prefix="edgebench-pg-"))
    server = PostgresServer(root)
    yield server.url
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh database for one test."""
    from tests.postgres import new_database

    return new_database(postgres_server)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """A random-weight llama GGUF (F32) written with the gguf package."""
    return cached_tiny_llama(DATA / "models", TinyLlamaSpec())


@pytest.fixture(scope="session")
def tiny_hf() -> Path:
    """A random-weight transformers Llama with a BPE tokenizer trained offline."""
    return cached_tiny_hf(DATA / "models")


@pytest.fixture(scope="session")
def tiny_onnx() -> Path:
    """The transformers model turned into an onnxruntime-genai KV-cache decoder."""
    return cached_tiny_onnx(DATA / "models")


@pytest.fixture(scope="session")
def tiny_onnx_export() -> Path:
    """The same decoder as a plain ONNX export (no genai_config.json): our greedy loop."""
    return cached_tiny_onnx_export(DATA / "models")


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEBENCH_")}
    env.update(EDGEBENCH_HOME=str(home), COLUMNS="200", **extra)
    return env


def run_cli(
    home: Path, *args: str, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgebench", *args],
        env=cli_env(home, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Coordinator:
    home: Path
    grpc: str
    http: str
    process: subprocess.Popen[str]
    db_path: Path
    fingerprint: str | None = None  # of its TLS authority; None: plaintext (--insecure)

    @property
    def authority_pem(self) -> bytes:
        return (self.home / "data" / "tls" / "ca.pem").read_bytes()

    def channel(self) -> Any:  # grpc.Channel (in this class, `grpc` names the address)
        """A raw client's channel, verified like an enrolled agent's."""
        if self.fingerprint is None:
            return grpc.insecure_channel(self.grpc)
        return grpc.secure_channel(self.grpc, grpc.ssl_channel_credentials(self.authority_pem))

    def aio_channel(self) -> Any:  # grpc.aio.Channel
        if self.fingerprint is None:
            return grpc.aio.insecure_channel(self.grpc)
        credentials = grpc.ssl_channel_credentials(self.authority_pem)
        return grpc.aio.secure_channel(self.grpc, credentials)

    def token_secret(self) -> str:
        """A new enrollment token's secret part (what a raw client sends)."""
        token = self.cli("coordinator", "token", "create")
        assert token.returncode == 0, token.stderr
        return split_token(token.stdout.strip())[0]

    def cli(self, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
        return run_cli(self.home, *args, EDGEBENCH_URL=self.http, EDGEBENCH_TOKEN=token)

    def api(self, path: str, **params: str) -> Any:
        """GET an API path; a paged list comes back as its items (every one: the
        largest page is asked for)."""
        if path in ("/api/v1/results", "/api/v1/devices", "/api/v1/jobs"):
            params.setdefault("limit", "500")
        verify: Any = True
        if self.http.startswith("https://"):
            verify = ssl.create_default_context(cadata=self.authority_pem.decode())
        response = httpx.get(self.http + path, params=params, timeout=10, verify=verify)
        response.raise_for_status()
        body = response.json()
        if isinstance(body, dict) and set(body) >= {"items", "total", "offset", "limit"}:
            # a short page is the whole list (the total is counted on a connection of its
            # own, so a result stored meanwhile can make it differ by one)
            assert len(body["items"]) < int(body["limit"]), "more than one page"
            return body["items"]
        return body


def start_coordinator(home: Path, *extra: str) -> Coordinator:
    home.mkdir(parents=True, exist_ok=True)
    db_path = home / "coordinator.db"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgebench",
            "coordinator",
            "serve",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--db",
            f"sqlite:///{db_path}",
            *extra,
        ],
        env=cli_env(home, EDGEBENCH_TOKEN=ADMIN_TOKEN),
        stdout=subprocess.PIPE,
        stderr=open(home / "coordinator.log", "w"),  # noqa: SIM115
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("READY"):
        process.kill()
        raise RuntimeError("coordinator did not start: " + (home / "coordinator.log").read_text())
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    fingerprint = None if fields["ca"] == "-" else fields["ca"]
    return Coordinator(home, fields["grpc"], fields["http"], process, db_path, fingerprint)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    home = tmp_path / "coordinator"
    home.mkdir()
    coord = start_coordinator(home)
    yield coord
    stop(coord.process)


def enroll_agent(coord: Coordinator, home: Path, name: str) -> None:
    token = coord.cli("coordinator", "token", "create")
    assert token.returncode == 0, token.stderr
    enrolled = run_cli(
        home,
        "agent",
        "enroll",
        "--coordinator",
        coord.grpc,
        "--token",
        token.stdout.strip(),
        "--name",
        name,
        "--tag",
        "rack=a1",
    )
    assert enrolled.returncode == 0, enrolled.stderr


def start_agent(home: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgebench", "agent", "run", *extra],
        env=cli_env(home),
        stdout=open(home / "agent.log", "w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the agent and its run's process: one group, one "machine"
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def job_spec(**values: Any) -> JobCreate:
    """A job request from stable flat names, as edgebench 0.1's body had them."""
    return JobCreate.model_validate(values)
