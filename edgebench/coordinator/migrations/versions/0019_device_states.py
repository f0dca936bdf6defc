"""the device state model: admission (pending until approved where approval is required,
rejected) and the operator's state (active, drained, maintenance) with who set it and why

Devices stored before this revision are approved and active.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_COLUMNS = {"admission": "approved", "operator_state": "active", "operator_note": ""}


def upgrade() -> None:
    for name, default in _COLUMNS.items():
        column = sa.Column(name, sqlmodel.sql.sqltypes.AutoString(), nullable=False,
                           server_default=default)  # fmt: skip
        op.add_column("device", column)


def downgrade() -> None:
    for name in reversed(_COLUMNS):
        op.drop_column("device", name)
