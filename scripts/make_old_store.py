"""Writes tests/fixtures/stores/<name>.sqlite: a coordinator store made by an earlier
edgebench, with an enrolled device and a queued job, for the test that opens it with
today's code (tests/unit/test_old_store.py). Run it from a worktree of that commit:

    git worktree add /tmp/old COMMIT
    cd /tmp/old && PYTHONPATH=/tmp/old /path/to/.venv/bin/python \\
        /path/to/scripts/make_old_store.py /path/to/tests/fixtures/stores/NAME.sqlite

It uses only the store API of that commit (Store, JobCreate with flat settings)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgebench.coordinator.jobspec import JobCreate, new_job, plan_runs  # type: ignore[attr-defined]
from edgebench.coordinator.store import Store

SHA = "a" * 64


def main(target: Path) -> None:
    target.unlink(missing_ok=True)
    store = Store(f"sqlite:///{target}")
    store.add_artifact(sha256=SHA, filename="old-model.gguf", size_bytes=10, fmt="gguf")
    enrolled = store.enroll(
        token=store.create_enrollment_token(),
        name="old-box",
        # that commit's Store took the hardware as a flat dict
        hardware={"cpu_model": "old cpu", "arch": "x86_64", "engines": {"llama_cpp": "0.3.36"}},  # type: ignore[arg-type]
        tags={},
    )
    spec = JobCreate.model_validate(
        {"models": [SHA], "n_prompt": [32], "n_gen": [16], "reps": 2, "threads": 1,
         "n_batch": 256, "flash_attn": True, "noisy_pct": 5.0, "device": "old-box",
         "submitter": "carol"}
    )  # fmt: skip
    job, _ = store.create_job(new_job(spec), plan_runs(spec, {SHA: "gguf"}), spec.selector)  # type: ignore[misc]
    store.close()
    credential = {"agent_id": enrolled.agent_id, "secret": enrolled.secret, "job_id": job.id}
    target.with_suffix(".json").write_text(json.dumps(credential, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
