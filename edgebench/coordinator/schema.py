"""The store's schema: upgraded to the newest Alembic revision on start, or refused with a
clear message when the database belongs to a newer or unknown edgebench."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from edgebench.coordinator.database import writer_engine
from edgebench.errors import EdgebenchError

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x6564676562656E63  # "edgebenc": any fixed 64-bit key of our own
_alembic_lock = threading.Lock()
log = logging.getLogger("edgebench.coordinator")
logging.getLogger("alembic").setLevel(logging.WARNING)  # one line of ours says what happens


class SchemaError(EdgebenchError):
    pass


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config_for_scripts()).get_current_head()
    assert head is not None
    return head


def _config_for_scripts() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _known(scripts: ScriptDirectory, revision: str) -> bool:
    try:
        return scripts.get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(engine: Engine) -> None:
    """Brings the database to the newest schema; refuses a database it does not know."""
    scripts = ScriptDirectory.from_config(_config_for_scripts())
    if current_revision(engine) == scripts.get_current_head():
        return
    config = _config(engine)
    # Alembic's context is process-global (the thread lock); the transaction takes SQLite's
    # write lock at once and PostgreSQL's advisory lock, so processes migrate in turn.
    with _alembic_lock, writer_engine(engine).begin() as connection:
        _lock_across_processes(connection)
        # Read again under the lock: another coordinator may have just upgraded it.
        current = MigrationContext.configure(connection).get_current_revision()
        if current == scripts.get_current_head():
            return
        if current is not None and not _known(scripts, current):
            raise SchemaError(
                f"the database is at schema revision {current}, which this edgebench does "
                "not know: it was made by a newer edgebench; upgrade edgebench or use "
                "another --db"
            )
        log.info("upgrading the store schema from %s to %s", current or "empty",
                 scripts.get_current_head())  # fmt: skip
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _lock_across_processes(connection: Connection) -> None:
    """Coordinators starting together on one PostgreSQL database take turns to migrate
    (a transaction-scoped advisory lock). SQLite has one coordinator process, and its
    write lock already serialises the migration's transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
