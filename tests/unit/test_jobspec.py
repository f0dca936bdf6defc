"""A job's matrix: every combination, and a clear error for what cannot run."""

import pytest
from pydantic import ValidationError

from edgebench.coordinator.jobspec import JobCreate, JobSpecError, plan_runs

GGUF, ONNX, HF = "a" * 64, "b" * 64, "c" * 64
FORMATS = {GGUF: "gguf", ONNX: "onnx", HF: "hf"}


def test_matrix_expands_models_backends_variants_and_sizes() -> None:
    spec = JobCreate(
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
        plan_runs(JobCreate(models=[GGUF], backends=["llama_cpp", "onnx"]), FORMATS)
    with pytest.raises(JobSpecError, match="variant 'int8' cannot be made by llama_cpp"):
        plan_runs(JobCreate(models=[GGUF], variants=["int8"]), FORMATS)
    with pytest.raises(JobSpecError, match="no chosen backend can run model"):
        plan_runs(JobCreate(models=[GGUF, HF], backends=["llama_cpp"]), FORMATS)
    with pytest.raises(JobSpecError, match="unknown backend"):
        plan_runs(JobCreate(models=[GGUF], backends=["tensorflow"]), FORMATS)
    with pytest.raises(JobSpecError, match="at most 1000"):
        plan_runs(
            JobCreate(
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
    spec = JobCreate(models=[GGUF], device="pi5")
    assert spec.selector.devices == ["pi5"] and not spec.selector.every


def test_a_context_size_must_hold_the_largest_test() -> None:
    assert JobCreate(models=[GGUF], n_ctx=128, n_prompt=[64], n_gen=[64]).n_ctx == 128
    assert JobCreate(models=[GGUF]).n_ctx == 0  # sized by the agent from each test
    with pytest.raises(ValidationError, match=r"n_ctx 127 cannot hold .* = 128\)"):
        JobCreate(models=[GGUF], n_ctx=127, n_depth=[0, 32], n_prompt=[32], n_gen=[64])
