"""a failed run is retried once on another device; a device's recent outcomes decide
whether it is unhealthy (takes no work until resumed)

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "run",
        sa.Column("failed_on_device_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    )
    for name in ("outcomes", "unhealthy"):
        op.add_column(
            "device",
            sa.Column(name, sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=""),
        )


def downgrade() -> None:
    op.drop_column("device", "unhealthy")
    op.drop_column("device", "outcomes")
    op.drop_column("run", "failed_on_device_id")
