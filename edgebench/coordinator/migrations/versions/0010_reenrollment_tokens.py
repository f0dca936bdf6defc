"""enrollment tokens may name the one enrolled device they re-enroll: an enrolled
device's name can no longer be taken by any token

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "enrollmenttoken",
        sa.Column("device_name", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("enrollmenttoken", "device_name")
