"""device selectors, job priority and submitter, work request ids

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ = (sa, sqlmodel)

# Rows stored before this revision: any device, normal priority, one shared submitter.
_NEW_COLUMNS = (
    ("selector_json", sa.Text(), "{}"),
    ("priority", sa.Integer(), "0"),
    ("submitter", sqlmodel.sql.sqltypes.AutoString(), "default"),
)


def upgrade() -> None:
    for table in ("job", "run"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, kind, default in _NEW_COLUMNS:
                batch_op.add_column(sa.Column(name, kind, nullable=False, server_default=default))
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lease_request_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_run_priority"), ["priority"], unique=False)
    # The defaults were for existing rows only; new rows get theirs from the tables.
    for table in ("job", "run"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, kind, _default in _NEW_COLUMNS:
                batch_op.alter_column(name, existing_type=kind, server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_priority"))
        batch_op.drop_column("lease_request_id")
    for table in ("run", "job"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, _kind, _default in _NEW_COLUMNS:
                batch_op.drop_column(name)
