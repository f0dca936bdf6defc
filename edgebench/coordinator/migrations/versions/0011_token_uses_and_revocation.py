"""enrollment tokens: a number of uses (a used token of an older store has none left)
and revocation

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "enrollmenttoken",
        sa.Column("uses_left", sa.Integer(), nullable=False, server_default="1"),
    )
    op.add_column(
        "enrollmenttoken",
        sa.Column("revoked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    )
    op.execute("UPDATE enrollmenttoken SET uses_left = 0 WHERE used_at IS NOT NULL")


def downgrade() -> None:
    op.drop_column("enrollmenttoken", "revoked_at")
    op.drop_column("enrollmenttoken", "uses_left")
