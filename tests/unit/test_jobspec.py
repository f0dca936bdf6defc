"""A job's matrix: every combination, and a clear error for what cannot run."""

import pytest
from pydantic import ValidationError

from edgebench.coordinator.jobspec import JobSpecError, plan_runs
from edgebench.dashboard.models import JobCreate
from tests.conftest import job_spec

GGUF, ONNX, HF = "a" * 64, "b" * 64, "c" * 64
FORMATS = {GGUF: "gguf", ONNX: "onnx", HF: "hf"}


def test_matrix_expands_models_backends_variants_and_sizes() -> None:
    spec = job_spec(
        models=[GGUF, ONNX, HF],
        variants=["", "Q4_K_M", "int8", "bf16"],
        n_prompt=[16, 64],
        n_gen=[32],
        n_depth=[0, 128],
    )
    runs = plan_runs(spec, FORMATS)
    by_backend = {b: {r.variant for r in runs if r.backend == b} for b in {r.backend for r in runs}}
    assert by_backend == {
        "llama_cpp": {"", "Q4_K_M"},
        "onnx": {"", "int8"},
        "transformers": {"", "bf16"},
    }
    assert len(runs) == 3 * 2 * 2 * 2  # backends x variants x prompts x depths
    assert {r.model_sha256 for r in runs if r.backend == "onnx"} == {ONNX}


def test_bad_matrices_are_refused_with_the_reason() -> None:
    with pytest.raises(JobSpecError, match="needs a onnx model"):
        plan_runs(job_spec(models=[GGUF], backends=["llama_cpp", "onnx"]), FORMATS)
    with pytest.raises(JobSpecError, match="variant 'int8' cannot be made by llama_cpp"):
        plan_runs(job_spec(models=[GGUF], variants=["int8"]), FORMATS)
    with pytest.raises(JobSpecError, match="no chosen backend can run models of format hf"):
        plan_runs(job_spec(models=[GGUF, HF], backends=["llama_cpp"]), FORMATS)
    with pytest.raises(JobSpecError, match="unknown backend"):
        plan_runs(job_spec(models=[GGUF], backends=["tensorflow"]), FORMATS)
    with pytest.raises(JobSpecError, match="at most 1000"):
        plan_runs(
            job_spec(
                models=[GGUF],
                n_prompt=list(range(1, 17)),
                n_gen=list(range(2, 18)),
                n_depth=list(range(16)),
            ),
            FORMATS,
        )


@pytest.mark.parametrize(
    "body",
    [
        {"models": []},
        {"models": ["xyz"]},
        {"models": [GGUF], "n_gen": [1]},
        {"models": [GGUF], "n_prompt": [0]},
        {"models": [GGUF], "reps": -1},
        {"models": [GGUF], "provider": "rocm"},
        {"models": [GGUF], "device": "a b"},
        {"models": [GGUF], "selector": {"devices": ["../x"]}},
        {"models": [GGUF], "selector": {"tags": {"bad key": "v"}}},
        {"models": [GGUF], "selector": {"arch": "x86 64"}},
        {"models": [GGUF], "selector": {"accelerator": "CUDA!"}},
        {"models": [GGUF], "selector": {"min_memory_gb": -1}},
        {"models": [GGUF], "selector": {"every": "sometimes"}},
        {"models": [GGUF], "selector": {"unknown": 1}},
        {"models": [GGUF], "priority": 101},
        {"models": [GGUF], "n_ctx": -1},
        {"models": [GGUF], "n_ctx": 100, "n_prompt": [64], "n_gen": [32, 64]},  # needs 128
        {"models": [GGUF], "submitter": ""},
    ],
)
def test_malformed_requests_fail_validation(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        JobCreate.model_validate(body)


def test_device_is_shorthand_for_a_named_device_selector() -> None:
    spec = job_spec(models=[GGUF], device="pi5")
    assert spec.selector.devices == ["pi5"] and not spec.selector.every


def test_a_context_size_must_hold_the_largest_test() -> None:
    job = job_spec(models=[GGUF], n_ctx=128, n_prompt=[64], n_gen=[64])
    assert job.workload.engine.n_ctx == 128
    assert job_spec(models=[GGUF]).workload.engine.n_ctx == 0  # sized from each test
    with pytest.raises(ValidationError, match=r"context size 127 cannot hold .* = 128\)"):
        job_spec(models=[GGUF], n_ctx=127, n_depth=[0, 32], n_prompt=[32], n_gen=[64])


def test_the_body_of_edgebench_0_1_is_taken_for_one_release() -> None:
    flat = JobCreate.model_validate(
        {"models": [GGUF], "n_prompt": [32], "reps": 2, "flash_attn": True, "n_gpu_layers": 0}
    )
    nested = JobCreate.model_validate(
        {"models": [GGUF], "workload": {"tests": {"n_prompt": [32]},
         "repetitions": {"reps": 2}, "engine": {"flash_attn": "on", "n_gpu_layers": 0}}}
    )  # fmt: skip
    assert flat == nested
    with pytest.raises(ValidationError, match="not both"):
        JobCreate.model_validate({"models": [GGUF], "reps": 2, "workload": {}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        JobCreate.model_validate({"models": [GGUF], "n_promt": [32]})
