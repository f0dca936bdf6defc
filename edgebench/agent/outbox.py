"""Results waiting for the coordinator's acknowledgement, on disk.

A result is written here before it is first sent and deleted only when the coordinator
acknowledges its id, so a crash, a reboot or a lost connection never loses one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("edgebench.agent")


class Outbox:
    """A corrupt file is moved aside (`<name>.corrupt-<time>`) and a row that cannot be
    sent is moved to the `set_aside` table, each with a logged reason: the agent keeps
    serving instead of failing on every start."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = _open(path)
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{path}{suffix}")
                if source.exists():
                    os.replace(source, f"{aside}{suffix}")
            log.warning("outbox %s is unreadable (%s): moved to %s, starting empty",
                        path, exc, aside)  # fmt: skip
            self._db = _open(path)

    def add(self, result_id: str, run_id: str, payload: bytes) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?)",
            (result_id, run_id, payload, time.time()),
        )

    def pending(self) -> list[tuple[str, bytes]]:
        rows = self._db.execute("SELECT result_id, payload FROM outbox ORDER BY created")
        kept = []
        for result_id, payload in rows.fetchall():
            if isinstance(payload, bytes):
                kept.append((str(result_id), payload))
            else:
                self.set_aside(str(result_id), "its payload is not bytes")
        return kept

    def set_aside(self, result_id: str, reason: str) -> None:
        """Moves a row that cannot be sent out of the outbox, keeping it and why."""
        log.warning("result %s set aside, not sent: %s", result_id, reason)
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(
            "INSERT OR REPLACE INTO set_aside SELECT result_id, run_id, payload, created, ?, ?"
            " FROM outbox WHERE result_id = ?",
            (reason, time.time(), result_id),
        )
        self._db.execute("DELETE FROM outbox WHERE result_id = ?", (result_id,))
        self._db.execute("COMMIT")

    def set_aside_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM set_aside").fetchone()[0])

    def remove(self, result_id: str) -> None:
        self._db.execute("DELETE FROM outbox WHERE result_id = ?", (result_id,))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " result_id TEXT PRIMARY KEY, run_id TEXT NOT NULL,"
            " payload BLOB NOT NULL, created REAL NOT NULL)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS set_aside ("
            " result_id TEXT PRIMARY KEY, run_id TEXT, payload BLOB, created REAL,"
            " reason TEXT NOT NULL, moved REAL NOT NULL)"
        )
        db.execute("SELECT COUNT(*) FROM outbox").fetchone()
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db
