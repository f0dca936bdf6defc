"""Alembic environment: the connection is handed in by edgebench.coordinator.schema."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from edgebench.coordinator import tables

_ = tables  # the tables register themselves on SQLModel.metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
