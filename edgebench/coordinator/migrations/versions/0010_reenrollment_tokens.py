"""enrollment tokens may name the one enrolled device they re-enroll: an enrolled
device's name can no longer be taken by any token; on PostgreSQL the leaderboard's pages
keep room for updates in place

The leaderboard's rows are rewritten as results arrive, never in an indexed column: with
free room on their page PostgreSQL updates them there (a HOT update) and prunes the old
version. At the default fillfactor (100) every update moved the row to another page: a
100,000-result fill left the table at 99 MB for 34 MB of rows, and each leaderboard read
scanned all of it (benchmarks/RESULTS.md).

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
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE leaderboard SET (fillfactor = 70)")
    op.add_column(
        "enrollmenttoken",
        sa.Column("device_name", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("enrollmenttoken", "device_name")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE leaderboard RESET (fillfactor)")
