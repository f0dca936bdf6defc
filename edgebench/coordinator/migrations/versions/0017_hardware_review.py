"""a device's hardware is fixed at enrollment: the accepted hardware, and why a device is
in review after a hello reported other hardware

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name in ("accepted_hardware", "review"):
        column = sa.Column(name, sqlmodel.sql.sqltypes.AutoString(), nullable=False,
                           server_default="")  # fmt: skip
        op.add_column("device", column)


def downgrade() -> None:
    op.drop_column("device", "review")
    op.drop_column("device", "accepted_hardware")
