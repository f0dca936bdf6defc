"""run queue index with priority descending (one index scan serves a claim's order);
index on run.agent_id (a round looks up the leases its asking agents hold)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index("ix_run_queue")
        batch_op.create_index(
            "ix_run_queue",
            ["state", "submitter", sa.text("priority DESC"), "created_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_run_agent_id"), ["agent_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_agent_id"))
        batch_op.drop_index("ix_run_queue")
        batch_op.create_index(
            "ix_run_queue", ["state", "submitter", "priority", "created_at"], unique=False
        )
