"""A store made by edgebench 0.1.0 (commit c92bad9, before the workload settings were
nested) opens with today's code: the migration rewrites its queued job, which is then
dispatched with the settings it was submitted with. scripts/make_old_store.py made it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgebench.agent.wire import spec_from
from edgebench.coordinator.store import Store
from edgebench.coordinator.wire import assignment_for
from edgebench.dashboard.models import JobCreate
from edgebench.proto.v1 import agent_pb2 as pb
from edgebench.workload import FlashAttention
from tests import lifecycle_ops as ops

STORES = Path(__file__).resolve().parents[1] / "fixtures" / "stores"
OLD_DB, OLD_CREDENTIAL = (
    STORES / "edgebench-0.1.0-c92bad9.sqlite",
    STORES / "edgebench-0.1.0-c92bad9.json",
)


def test_a_queued_job_of_edgebench_0_1_is_dispatched_as_submitted(tmp_path: Path) -> None:
    db = tmp_path / "coordinator.db"
    shutil.copy(OLD_DB, db)
    saved = json.loads(OLD_CREDENTIAL.read_text())
    store = Store(f"sqlite:///{db}", retry_base_seconds=0.0)  # migrates on open
    job = store.get_job(saved["job_id"])
    assert JobCreate.model_validate_json(job.spec_json).submitter == "carol"
    agent = store.authenticate_agent(saved["agent_id"], saved["secret"])
    assert agent is not None
    claim = ops.claim_run(store, agent=agent, device=store.get_device("old-box"), lease_seconds=60)
    assert claim is not None and claim.job.id == job.id
    spec = JobCreate.model_validate_json(claim.job.spec_json)
    artifact = store.get_artifact(claim.run.model_sha256)
    sent = assignment_for(claim, artifact, spec, lease_seconds=60).SerializeToString()
    run = spec_from(pb.RunAssignment.FromString(sent))
    workload = run.workload
    assert (run.backend, run.variant) == ("llama_cpp", "")
    assert (workload.tests.n_prompt, workload.tests.n_gen) == ([32], [16])
    assert workload.repetitions.reps == 2 and workload.sensors.noisy_pct == 5.0
    engine = workload.engine
    assert (engine.threads, engine.n_batch, engine.n_ubatch) == (1, 256, 512)
    # what it asked then, not today's defaults: flash attention on, no GPU layers
    assert engine.flash_attn == FlashAttention.ON and engine.n_gpu_layers == 0
    (used,) = store.enrollment_tokens()  # the token that enrolled old-box: spent
    assert used.used_at is not None and used.uses_left == 0 and used.revoked_at is None
    store.close()
