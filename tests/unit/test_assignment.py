"""What the coordinator asks for is what the agent measures: job spec -> wire -> runner."""

from edgebench.agent.session import spec_from
from edgebench.coordinator.jobspec import JobCreate
from edgebench.coordinator.service import assignment_for
from edgebench.coordinator.store import Claim
from edgebench.coordinator.tables import Artifact, Job, Run

SHA = "d" * 64


def test_a_run_reaches_the_runner_with_every_setting(tmp_path) -> None:
    spec = JobCreate(
        models=[SHA],
        reps=0,
        max_reps=12,
        max_seconds=60,
        warmup=2,
        threads=3,
        n_ctx=4096,
        sustained_seconds=30,
        window_seconds=2,
        n_batch=256,
        n_ubatch=128,
        n_gpu_layers=-1,
        flash_attn=True,
        provider="cuda",
        noisy_pct=5,
    )
    run = Run(
        job_id="j",
        model_sha256=SHA,
        backend="llama_cpp",
        variant="Q4_K_M",
        n_depth=512,
        n_prompt=64,
        n_gen=128,
        lease_epoch=4,
    )
    artifact = Artifact(sha256=SHA, filename="m.gguf", size_bytes=9, format="gguf")
    claim = Claim(run=run, job=Job(id="j", spec_json=spec.model_dump_json()))
    assignment = assignment_for(claim, artifact, spec, lease_seconds=30)
    assert assignment.lease_epoch == 4 and assignment.lease_seconds == 30
    assert assignment.model.format == "gguf" and assignment.model.sha256 == SHA
    bench = spec_from(assignment.workload)
    assert (bench.backend, bench.variant) == ("llama_cpp", "Q4_K_M")
    assert (bench.n_depth, bench.n_prompt, bench.n_gen) == ((512,), (64,), (128,))
    assert (bench.reps, bench.max_reps, bench.max_seconds, bench.warmup) == (0, 12, 60, 2)
    assert (bench.sustained_seconds, bench.window_seconds, bench.noisy_pct) == (30, 2, 5)
    s = bench.settings
    assert (s.threads, s.n_ctx, s.n_batch, s.n_ubatch, s.n_gpu_layers) == (3, 4096, 256, 128, -1)
    assert s.flash_attn and s.provider == "cuda"
