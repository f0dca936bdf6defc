"""the leaderboard keeps, per group and view (newest, best), a copy of the summary
columns of the result it shows, so that filtering and sorting 24,000 groups reads one
table instead of joining each group to its result

Revision ID: 0009
Revises: 0008

The new table starts empty; the store refills it from the stored results when it opens
(coordinator/leaderboard.py: `rebuild`), so the rule that picks a shown result lives in
one place.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TEXT = ("result_id", "run_id", "job_id", "device_id")
_AUTO_TEXT = ("source_sha256", "engine_version", "definitions_version", "backend", "variant",
              "model_sha256")  # fmt: skip
_INTEGERS = ("threads", "n_depth", "n_prompt", "n_gen", "reps")
_FLOATS = ("model_size_mb", "load_ms", "ttft_ms", "ttft_ms_std", "prefill_tps",
           "prefill_tps_std", "prefill_tps_ci95", "decode_tps", "decode_tps_std",
           "decode_tps_ci95", "decode_tps_per_core")  # fmt: skip
_FLOATS_AFTER = ("itl_p50_ms", "itl_p90_ms", "itl_p95_ms", "itl_p99_ms", "itl_max_ms", "e2e_ms",
                 "e2e_ms_std", "peak_rss_mb")  # fmt: skip
_NULLABLE_FLOATS = ("decode_tps_per_ghz_core", "gpu_mem_mb", "other_cpu_pct", "stability",
                    "avg_power_w", "prefill_j_per_token", "decode_j_per_token",
                    "temp_max_c")  # fmt: skip


def _auto(name: str) -> sa.Column[str]:
    return sa.Column(name, sqlmodel.sql.sqltypes.AutoString(), nullable=False)


def upgrade() -> None:
    op.drop_index("ix_leaderboard_model_sha256", table_name="leaderboard")
    op.drop_index("ix_leaderboard_device_id", table_name="leaderboard")
    op.drop_table("leaderboard")
    op.create_table(
        "leaderboard",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("view", sa.String(), primary_key=True),
        sa.Column("results", sa.Integer(), nullable=False),
        sa.Column("settings_json", sa.Text(), nullable=False),
        *(sa.Column(name, sa.String(), nullable=False) for name in _TEXT),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        *(_auto(name) for name in _AUTO_TEXT),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in _INTEGERS),
        *(sa.Column(name, sa.Float(), nullable=False) for name in (*_FLOATS, *_FLOATS_AFTER)),
        *(sa.Column(name, sa.Float(), nullable=True) for name in _NULLABLE_FLOATS),
        sa.Column("noisy", sa.Boolean(), nullable=False),
        sa.Column("throttled", sa.Boolean(), nullable=True),
    )
    op.create_index("ix_leaderboard_test", "leaderboard", ["view", "n_prompt", "n_gen", "n_depth"])
    op.create_index("ix_leaderboard_device_id", "leaderboard", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_leaderboard_test", table_name="leaderboard")
    op.drop_index("ix_leaderboard_device_id", table_name="leaderboard")
    op.drop_table("leaderboard")
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
    # refilled from the results by the older code's store when it opens
