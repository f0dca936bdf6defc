"""Results waiting for the coordinator's acknowledgement, on disk.

A result is written here before it is first sent and deleted only when the coordinator
acknowledges its id, so a crash, a reboot or a lost connection never loses one.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " result_id TEXT PRIMARY KEY, run_id TEXT NOT NULL,"
            " payload BLOB NOT NULL, created REAL NOT NULL)"
        )

    def add(self, result_id: str, run_id: str, payload: bytes) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?)",
            (result_id, run_id, payload, time.time()),
        )

    def pending(self) -> list[tuple[str, bytes]]:
        rows = self._db.execute("SELECT result_id, payload FROM outbox ORDER BY created")
        return [(str(r[0]), bytes(r[1])) for r in rows]

    def remove(self, result_id: str) -> None:
        self._db.execute("DELETE FROM outbox WHERE result_id = ?", (result_id,))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        self._db.close()
