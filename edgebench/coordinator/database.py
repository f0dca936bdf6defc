"""Engines for the store's databases: SQLite (WAL, busy timeout, transactions begun by us)
or PostgreSQL through psycopg 3."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.engine import Connection, Engine
from sqlmodel import create_engine

# Execution option naming how an SQLite transaction begins (DEFERRED or IMMEDIATE).
BEGIN_OPTION = "edgebench_sqlite_begin"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module would open transactions itself, lazily and never before DDL;
    # _sqlite_begin opens them instead, so migrations are transactional and claims can
    # take the write lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """BEGIN IMMEDIATE for writers that read then write (claims, migrations: they would
    otherwise both read, then one fail to upgrade its lock); plain BEGIN elsewhere."""
    mode = connection.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


def normalize_url(url: str) -> str:
    """postgres:// and postgresql:// URLs use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _create_private(url: str) -> None:
    """A new SQLite file is made readable by its owner only (it holds token hashes and
    agent secrets' hashes); SQLite gives its -wal and -shm files the same mode."""
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        if path.parent.is_dir() and not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        _create_private(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def writer_engine(engine: Engine) -> Engine:
    """The same engine and pool, with SQLite transactions begun IMMEDIATE."""
    return engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
