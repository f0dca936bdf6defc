"""contributor results are verified by replication: where each result stands and why,
the run that replicates it, replication runs, owners of tokens and devices, and each
device's check history and suspension

Results stored before this revision: an operator device's are `trusted`, a
contributor's `unverified` (and will be replicated like new ones).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_TEXT = sqlmodel.sql.sqltypes.AutoString()
_DEVICE_TEXT = ("owner", "checks", "suspended")
_CONTRIBUTED = "device_id IN (SELECT id FROM device WHERE contributor)"


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, _TEXT, nullable=False, server_default="")


def upgrade() -> None:
    for name in _DEVICE_TEXT:
        op.add_column("device", _text(name))
    op.add_column("enrollmenttoken", _text("owner"))
    op.add_column("run", sa.Column("checks_result_id", _TEXT, nullable=True))
    for table in ("result", "leaderboard"):
        op.add_column(table, sa.Column("verification", _TEXT, nullable=False,
                                       server_default="trusted"))  # fmt: skip
    op.add_column("result", sa.Column("verification_note", sa.Text(), nullable=False,
                                      server_default=""))  # fmt: skip
    op.add_column("result", sa.Column("replica_run_id", _TEXT, nullable=True))
    op.create_index("ix_result_verification", "result", ["verification"])
    op.execute(f"UPDATE result SET verification = 'unverified' WHERE {_CONTRIBUTED}")
    op.execute(f"UPDATE result SET replica_run_id = '' WHERE NOT ({_CONTRIBUTED})")
    op.execute(f"UPDATE leaderboard SET verification = 'unverified' WHERE {_CONTRIBUTED}")


def downgrade() -> None:
    op.drop_index("ix_result_verification", table_name="result")
    for name in ("replica_run_id", "verification_note", "verification"):
        op.drop_column("result", name)
    op.drop_column("leaderboard", "verification")
    op.drop_column("run", "checks_result_id")
    op.drop_column("enrollmenttoken", "owner")
    for name in reversed(_DEVICE_TEXT):
        op.drop_column("device", name)
