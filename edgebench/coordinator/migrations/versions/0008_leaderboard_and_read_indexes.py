"""dashboard reads: the leaderboard summary table, artifact parameter counts, an index
on result.created_at (lists are sorted by it), and each result's payload (sensor
samples, environment, windows, raw timings) moved to a table of its own so that the
result table's rows stay narrow

Revision ID: 0008
Revises: 0007

The table starts empty; the store fills it from the stored results when it opens a store
whose results have no groups yet (coordinator/leaderboard.py: `rebuild`), so the grouping
rule lives in one place.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

_PAYLOAD_TEXT = ("windows_json", "environment_json", "sensors_json")

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leaderboard",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("model_sha256", sa.String(), nullable=False),
        sa.Column("variant", sa.String(), nullable=False),
        sa.Column("backend", sa.String(), nullable=False),
        sa.Column("device_id", sa.String(), sa.ForeignKey("device.id"), nullable=False),
        sa.Column("n_depth", sa.Integer(), nullable=False),
        sa.Column("n_prompt", sa.Integer(), nullable=False),
        sa.Column("n_gen", sa.Integer(), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("settings_json", sa.Text(), nullable=False),
        sa.Column("results", sa.Integer(), nullable=False),
        sa.Column("latest_id", sa.String(), nullable=False),
        sa.Column("latest_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("clean_id", sa.String(), nullable=True),
        sa.Column("clean_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("best_id", sa.String(), nullable=True),
        sa.Column("best_decode_tps", sa.Float(), nullable=True),
    )
    op.create_index("ix_leaderboard_model_sha256", "leaderboard", ["model_sha256"])
    op.create_index("ix_leaderboard_device_id", "leaderboard", ["device_id"])
    op.create_index("ix_result_created_at", "result", ["created_at"])
    op.add_column("artifact", sa.Column("parameters", sa.BigInteger(), nullable=True))
    # filled from identity_json by the store when it opens (edgebench.device.hardware_class)
    op.add_column(
        "device",
        sa.Column("hardware_class", sqlmodel.sql.sqltypes.AutoString(), nullable=False,
                  server_default=""),
    )  # fmt: skip
    op.create_table(
        "result_payload",
        sa.Column("result_id", sa.String(), sa.ForeignKey("result.id"), primary_key=True),
        *(sa.Column(name, sa.Text(), nullable=False) for name in _PAYLOAD_TEXT),
        sa.Column("timings", sa.LargeBinary(), nullable=False),
    )
    columns = ", ".join((*_PAYLOAD_TEXT, "timings"))
    op.execute(
        f"INSERT INTO result_payload (result_id, {columns}) SELECT id, {columns} FROM result"
    )
    for name in (*_PAYLOAD_TEXT, "timings"):
        # plain DROP COLUMN (SQLite >= 3.35): batch mode's table copy would break the
        # foreign keys pointing at results inside this transaction (see 0007)
        op.execute(f"ALTER TABLE result DROP COLUMN {name}")


def downgrade() -> None:
    for name in _PAYLOAD_TEXT:
        op.add_column("result", sa.Column(name, sa.Text(), nullable=False, server_default="{}"))
    op.add_column(
        "result", sa.Column("timings", sa.LargeBinary(), nullable=False, server_default=b"")
    )
    for name in (*_PAYLOAD_TEXT, "timings"):
        op.execute(
            f"UPDATE result SET {name} = (SELECT {name} FROM result_payload "
            "WHERE result_payload.result_id = result.id)"
        )
    op.drop_table("result_payload")
    op.drop_column("device", "hardware_class")
    op.drop_column("artifact", "parameters")
    op.drop_index("ix_result_created_at", table_name="result")
    op.drop_table("leaderboard")
