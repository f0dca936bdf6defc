"""devices: the hardware columns become two JSON documents, identity (what the device
is) and capabilities (what it has installed now)

Revision ID: 0007
Revises: 0006

A data migration; the field lists are spelled out here on purpose (a revision describes
the shapes of its day, not later edits of edgebench/device.py).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_IDENTITY = ("hostname", "cpu_model", "cpu_cores_physical", "cpu_cores_logical",
             "cpu_max_mhz", "ram_bytes", "os", "arch", "accelerator")  # fmt: skip
_CAPABILITIES = ("kernel", "os_release", "python_version", "edgebench_version")
_TEXT_COLUMNS = ("hostname", "cpu_model", "os", "os_release", "kernel", "arch",
                 "python_version", "accelerator", "edgebench_version")  # fmt: skip
_OLD: dict[str, Any] = {
    **{name: sa.String() for name in _TEXT_COLUMNS},
    "cpu_cores_physical": sa.Integer(),
    "cpu_cores_logical": sa.Integer(),
    "cpu_max_mhz": sa.Float(),
    "ram_bytes": sa.BigInteger(),
    "engines_json": sa.Text(),
}


def _device(*names: str) -> Any:
    return sa.table("device", sa.column("id", sa.String), *(sa.column(n) for n in names))


def _drop(*names: str) -> None:
    """Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35 has it for columns without an
    index): batch mode would copy the table, and dropping the old copy breaks the foreign
    keys of the rows that point at devices inside the migration's transaction."""
    for name in names:
        op.execute(f"ALTER TABLE device DROP COLUMN {name}")


def upgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("identity_json", sa.Text(), nullable=False, server_default="{}")
        )
        batch_op.add_column(
            sa.Column("capabilities_json", sa.Text(), nullable=False, server_default="{}")
        )
    bind = op.get_bind()
    old = _device(*_OLD)
    new = _device("identity_json", "capabilities_json")
    for row in bind.execute(sa.select(old)).mappings().all():
        identity = {name: row[name] for name in _IDENTITY}
        capabilities = {name: row[name] for name in _CAPABILITIES}
        capabilities["engines"] = json.loads(row["engines_json"] or "{}")
        bind.execute(
            new.update()
            .where(new.c.id == row["id"])
            .values(identity_json=json.dumps(identity), capabilities_json=json.dumps(capabilities))
        )
    _drop(*_OLD)


def downgrade() -> None:
    for name, kind in _OLD.items():
        default = "{}" if name == "engines_json" else "" if isinstance(kind, sa.String) else "0"
        op.add_column("device", sa.Column(name, kind, nullable=False, server_default=default))
    bind = op.get_bind()
    device = _device("identity_json", "capabilities_json", *_OLD)
    for row in bind.execute(sa.select(device)).mappings().all():
        values = {**json.loads(row["identity_json"]), **json.loads(row["capabilities_json"])}
        engines = values.pop("engines", {})
        values = {k: v for k, v in values.items() if k in _OLD}
        bind.execute(
            device.update()
            .where(device.c.id == row["id"])
            .values(**values, engines_json=json.dumps(engines))
        )
    _drop("capabilities_json", "identity_json")
