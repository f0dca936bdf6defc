"""run queue index: (state, submitter, priority, created_at) for claims

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_priority"))
        batch_op.create_index(
            "ix_run_queue", ["state", "submitter", "priority", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index("ix_run_queue")
        batch_op.create_index(batch_op.f("ix_run_priority"), ["priority"], unique=False)
