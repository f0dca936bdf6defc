"""A private PostgreSQL server for the tests, on 127.0.0.1, in a temporary folder.

`EDGEBENCH_TEST_POSTGRES_URL` (a server URL with rights to create databases) is used
instead when set. Otherwise the server binaries of the `postgresql` package are needed
(`apt-get install -y postgresql`; scripts/test.sh installs it). PostgreSQL refuses to run
as root, so as root the server runs as the `postgres` user the package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise PostgresUnavailable(
            f"{name} not found: install PostgreSQL (apt-get install -y postgresql) or set "
            "EDGEBENCH_TEST_POSTGRES_URL"
        )
    return found[-1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self, root: Path) -> None:
        self.data = root / "pgdata"
        self.port = _free_port()
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        initdb = [_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
        self._run([*initdb, "-E", "UTF8"])
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
        log = str(root / "log")
        self._run([_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start"])
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def _run(command: list[str]) -> None:
        subprocess.run(_as_server_user(command), check=True, capture_output=True, text=True)

    def stop(self) -> None:
        command = [_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_server_user(command), check=False, capture_output=True)


def new_database(server_url: str) -> str:
    """A fresh, empty database on the server; its URL."""
    import psycopg

    name = "eb_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name
