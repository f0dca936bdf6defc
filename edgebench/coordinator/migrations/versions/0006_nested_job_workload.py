"""job specs: the workload settings nested in their four sections (tests, repetitions,
sensors, engine); flash attention becomes on/off/auto

Revision ID: 0006
Revises: 0005

A data migration. The layout is spelled out here on purpose: a revision describes the
shapes of its day and must not follow later edits of edgebench/workload.py. Values a
queued job asked for are kept as they were (flash attention off stays off, 0 GPU layers
stay 0), so a job runs as it was submitted.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_SECTIONS: dict[str, tuple[str, ...]] = {
    "tests": ("n_prompt", "n_gen", "n_depth"),
    "repetitions": (
        "reps", "warmup", "max_reps", "max_seconds", "sustained_seconds", "window_seconds",
    ),
    "sensors": ("sample_hz", "idle_seconds", "noisy_pct", "cooldown_c", "cooldown_max_seconds"),
    "engine": ("threads", "n_ctx", "n_batch", "n_ubatch", "n_gpu_layers", "flash_attn",
               "provider"),
}  # fmt: skip
_JOB = sa.table("job", sa.column("id", sa.String), sa.column("spec_json", sa.Text))


def _nested(spec: dict[str, Any]) -> dict[str, Any]:
    if "workload" in spec:
        return spec
    workload: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    for section, names in _SECTIONS.items():
        for name in names:
            if name in spec:
                workload[section][name] = spec.pop(name)
    engine = workload["engine"]
    if "flash_attn" in engine:
        engine["flash_attn"] = "on" if engine["flash_attn"] else "off"
    return {**spec, "workload": workload}


def _flat(spec: dict[str, Any]) -> dict[str, Any]:
    workload = spec.pop("workload", None)
    if workload is None:
        return spec
    for section, names in _SECTIONS.items():
        for name in names:
            if name in workload.get(section, {}):
                spec[name] = workload[section][name]
    spec["flash_attn"] = spec.get("flash_attn") == "on"
    if spec.get("n_gpu_layers") is None:
        spec["n_gpu_layers"] = 0
    return spec


def _rewrite(change: Any) -> None:
    bind = op.get_bind()
    for job_id, text in bind.execute(sa.select(_JOB.c.id, _JOB.c.spec_json)).all():
        spec = change(json.loads(text))
        bind.execute(_JOB.update().where(_JOB.c.id == job_id).values(spec_json=json.dumps(spec)))


def upgrade() -> None:
    _rewrite(_nested)


def downgrade() -> None:
    _rewrite(_flat)
