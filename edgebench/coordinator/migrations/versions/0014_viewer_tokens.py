"""viewer tokens: an enrollment token row marked `viewer` reads the dashboard and API
where reads need a token (a coordinator beyond loopback, or --private) and enrolls nothing

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "enrollmenttoken",
        sa.Column("viewer", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("enrollmenttoken", "viewer")
