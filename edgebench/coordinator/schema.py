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
from sqlalchemy.engine import Engine

from edgebench.errors import EdgebenchError

MIGRATIONS = Path(__file__).parent / "migrations"
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
    current = current_revision(engine)
    if current == scripts.get_current_head():
        return
    if current is not None and not _known(scripts, current):
        raise SchemaError(
            f"the database is at schema revision {current}, which this edgebench does not "
            "know: it was made by a newer edgebench; upgrade edgebench or use another --db"
        )
    config = _config(engine)
    log.info("upgrading the store schema from %s to %s", current or "empty",
             scripts.get_current_head())  # fmt: skip
    with _alembic_lock, engine.begin() as connection:  # alembic's context is process-global
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
