"""Every backend on a generated model: real engines, real files, the same contract."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgebench.agent.backends import BackendError, create_backend
from edgebench.agent.backends.base import EngineSettings
from edgebench.agent.runner import _auto_done, run_benchmark
from edgebench.measure.record import RepTiming
from edgebench.modelgen import build_vocab
from edgebench.workload import RunSpec


def test_generated_vocabulary_is_unique_and_has_byte_fallback() -> None:
    tokens, scores, types = build_vocab()
    assert len(tokens) == len(set(tokens)) == len(scores) == len(types)
    assert len(tokens) % 64 == 0 and 300 <= len(tokens) <= 1000
    assert tokens[3] == "<0x00>" and tokens[258] == "<0xFF>"


# (backend, model): ONNX twice, onnxruntime-genai's folder and a plain export (our loop).
@pytest.fixture(params=["llama_cpp", "onnx", "onnx-export", "transformers"])
def engine(
    request: pytest.FixtureRequest,
    tiny_model: Path,
    tiny_onnx: Path,
    tiny_onnx_export: Path,
    tiny_hf: Path,
) -> tuple[str, Path]:
    models = {
        "llama_cpp": tiny_model,
        "onnx": tiny_onnx,
        "onnx-export": tiny_onnx_export,
        "transformers": tiny_hf,
    }
    return request.param.split("-")[0], models[request.param]


# Each engine is driven through its current API: a deprecated call fails here before the
# engine's next major version breaks it.
@pytest.mark.filterwarnings("error::FutureWarning", "error::DeprecationWarning")
def test_every_backend_times_exactly_n_tokens_per_rep(engine, tmp_path: Path) -> None:
    name, model = engine
    phases: list[tuple[str, int]] = []
    spec = RunSpec.of(backend=name, n_prompt=(24,), n_gen=(10,), n_depth=(0, 16), reps=3)
    results = run_benchmark(
        model,
        spec,
        cache_dir=tmp_path,
        progress=lambda phase, done, total: phases.append((phase, done)),
    )
    assert [(r.n_depth, r.n_prompt, r.n_gen) for r in results] == [(0, 24, 10), (16, 24, 10)]
    for result in results:
        assert result.backend == name and result.reps == 3
        assert [len(r.token_ns) for r in result.rep_timings] == [10, 10, 10]
        assert result.ttft_ms > 0 and result.decode_tps > 0 and result.prefill_tps > 0
        assert result.model_size_mb > 0 and len(result.model_sha256) == 64
        assert result.decode_tps_per_core == pytest.approx(result.decode_tps / result.threads)
        for rep in result.rep_timings:
            assert 0 < rep.prefill_ns <= rep.token_ns[0]
            assert all(b > a for a, b in zip(rep.token_ns, rep.token_ns[1:], strict=False))
        env = result.environment
        assert env["engine"] == name and env["engine_version"] and env["engine_build"]
        assert env["hardware"]["cpu_cores_logical"] > 0 and env["corpus_version"]
    assert phases[0][0] == "preparing" and ("measuring", 3) in phases


@pytest.mark.parametrize(
    ("name", "variant", "smaller"),
    [
        ("llama_cpp", "Q4_K_M", True),
        ("llama_cpp", "Q8_0", True),
        ("onnx", "int8", True),
        ("onnx-export", "int8", True),
        ("transformers", "bf16", False),
    ],
)
def test_variants_are_made_once_and_reused(
    name: str,
    variant: str,
    smaller: bool,
    tiny_model: Path,
    tiny_onnx: Path,
    tiny_onnx_export: Path,
    tiny_hf: Path,
    tmp_path: Path,
) -> None:
    source = {
        "llama_cpp": tiny_model,
        "onnx": tiny_onnx,
        "onnx-export": tiny_onnx_export,
        "transformers": tiny_hf,
    }[name]
    name = name.split("-")[0]
    spec = RunSpec.of(backend=name, variant=variant, n_prompt=(8,), n_gen=(4,), reps=1, warmup=0)
    first = run_benchmark(source, spec, cache_dir=tmp_path)[0]
    assert first.variant == variant
    made = sorted(tmp_path.iterdir())
    if smaller:
        assert len(made) == 1 and first.model_sha256 != first.source_sha256
        assert (
            first.model_size_mb
            < run_benchmark(
                source,
                RunSpec.of(backend=name, n_prompt=(8,), n_gen=(4,), reps=1, warmup=0),
                cache_dir=tmp_path,
            )[0].model_size_mb
        )
        stamp = made[0].stat().st_mtime_ns
        again = run_benchmark(source, spec, cache_dir=tmp_path)[0]
        assert again.model_sha256 == first.model_sha256
        assert made[0].stat().st_mtime_ns == stamp  # reused from the cache, not remade
    else:
        assert made == []  # a dtype is chosen at load: nothing to make


@pytest.mark.parametrize(
    ("name", "variant"), [("llama_cpp", "int8"), ("onnx", "Q4_K_M"), ("transformers", "Q4_0")]
)
def test_unsupported_variant_fails_before_any_work(name: str, variant: str, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot produce variant"):
        run_benchmark(
            tmp_path / "never-read", RunSpec.of(backend=name, variant=variant), cache_dir=tmp_path
        )
    assert list(tmp_path.iterdir()) == []


def test_quantized_source_is_not_requantized(tiny_model: Path, tmp_path: Path) -> None:
    spec = RunSpec.of(variant="Q4_0", n_prompt=(8,), n_gen=(4,), reps=1, warmup=0)
    quantized = next(iter([run_benchmark(tiny_model, spec, cache_dir=tmp_path)]))[0]
    q4 = next(tmp_path.iterdir())
    assert quantized.variant == "Q4_0"
    with pytest.raises(BackendError, match="quantize from an F32 or F16 GGUF"):
        run_benchmark(q4, RunSpec.of(variant="Q8_0"), cache_dir=tmp_path / "other")


def test_context_is_checked(tiny_model: Path) -> None:
    backend = create_backend("llama_cpp")
    backend.load(tiny_model, EngineSettings(threads=1, n_ctx=256))
    try:
        with pytest.raises(BackendError, match="exceed the context"):
            backend.generate([1] * 200, [1] * 200, 10)
    finally:
        backend.close()


@dataclass
class LlamaCalls:
    batches: list[tuple[list[int], ...]]  # per llama_decode: ids, positions, outputs, seq ids
    sampled: list[int]


def _record_llama_calls(monkeypatch: pytest.MonkeyPatch) -> LlamaCalls:
    """What each llama_decode call is given and what each sampling returns."""
    import llama_cpp

    calls = LlamaCalls([], [])
    real_decode, real_sample = llama_cpp.llama_decode, llama_cpp.llama_sampler_sample

    def decode(ctx: object, batch: Any) -> int:
        n = range(batch.n_tokens)
        ids, positions = [batch.token[i] for i in n], [batch.pos[i] for i in n]
        outputs, sequences = [batch.logits[i] for i in n], [batch.seq_id[i][0] for i in n]
        calls.batches.append((ids, positions, outputs, sequences))
        return int(real_decode(ctx, batch))

    def sample(sampler: object, ctx: object, index: int) -> int:
        calls.sampled.append(int(real_sample(sampler, ctx, index)))
        return calls.sampled[-1]

    monkeypatch.setattr(llama_cpp, "llama_decode", decode)
    monkeypatch.setattr(llama_cpp, "llama_sampler_sample", sample)
    return calls


def test_llama_cpp_batches_carry_the_ids_positions_and_output_given(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What reaches llama_decode, in one batch or in chunks of n_batch, and the same tokens
    generated either way."""
    calls = _record_llama_calls(monkeypatch)
    seen, sampled = calls.batches, calls.sampled
    prompt = list(range(30, 50))
    runs = {}
    for n_batch in (64, 8):
        backend = create_backend("llama_cpp")
        backend.load(tiny_model, EngineSettings(threads=1, n_ctx=256, n_batch=n_batch))
        seen.clear()
        sampled.clear()
        try:
            backend.generate([], prompt, 5)
        finally:
            backend.close()
        runs[n_batch] = (list(seen), list(sampled))
    (whole, tokens), (chunks, chunked_tokens) = runs[64], runs[8]
    assert whole[0] == (prompt, list(range(20)), [0] * 19 + [1], [0] * 20)
    assert [c[0] for c in chunks[:3]] == [prompt[:8], prompt[8:16], prompt[16:]]
    assert [c[1] for c in chunks[:3]] == [list(range(8)), list(range(8, 16)), list(range(16, 20))]
    assert [c[2] for c in chunks[:3]] == [[0] * 8, [0] * 8, [0, 0, 0, 1]]
    steps = whole[1:]  # each generated token is fed back at the next position
    assert steps == [([t], [20 + k], [1], [0]) for k, t in enumerate(tokens[:-1])]
    assert chunked_tokens == tokens and len(tokens) == 5


def test_llama_cpp_restores_a_repeated_depth_context_instead_of_prefilling_it(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second rep with the same context decodes only the prompt and the generated
    tokens, and generates exactly what a rep that prefilled the context does."""
    calls = _record_llama_calls(monkeypatch)
    sampled = calls.sampled
    backend = create_backend("llama_cpp")
    backend.load(tiny_model, EngineSettings(threads=1, n_ctx=256))
    context, prompt = list(range(20, 52)), list(range(60, 68))
    try:
        runs = []
        for this_context in (context, context, [*context[:-1], 99], context):
            calls.batches.clear()
            sampled.clear()
            timing = backend.generate(this_context, prompt, 6)
            assert len(timing.token_ns) == 6
            runs.append(([len(batch[0]) for batch in calls.batches], list(sampled)))
    finally:
        backend.close()
    prefilled, restored, other, again = runs
    assert prefilled[0] == [32, 8, 1, 1, 1, 1, 1]  # context, prompt, 5 one-token steps
    assert restored[0] == [8, 1, 1, 1, 1, 1]  # the context came back from the saved state
    assert restored[1] == prefilled[1]  # the same tokens generated
    assert other[0] == prefilled[0]  # another context is prefilled (and saved)...
    assert again[0] == prefilled[0] and again[1] == prefilled[1]  # ...so this one is too


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="unknown backend"):
        create_backend("tensorflow")
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(BackendError, match="not a GGUF"):
        run_benchmark(not_gguf, RunSpec.of(reps=1), cache_dir=tmp_path)
    with pytest.raises(BackendError, match="not found"):
        run_benchmark(tmp_path / "missing.gguf", RunSpec.of(reps=1), cache_dir=tmp_path)
    with pytest.raises(BackendError, match=r"neither genai_config\.json nor model\.onnx"):
        run_benchmark(tmp_path, RunSpec.of(backend="onnx", reps=1), cache_dir=tmp_path)
    with pytest.raises(BackendError, match=r"config\.json"):
        run_benchmark(tmp_path, RunSpec.of(backend="transformers", reps=1), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="decode speed needs two"):
        RunSpec.of(n_gen=(1,))  # refused before any run


def test_auto_reps_stop_between_min_and_max(tiny_model: Path, tmp_path: Path) -> None:
    spec = RunSpec.of(n_prompt=(8,), n_gen=(32,), reps=0, min_reps=3, max_reps=6, target_ci=0.5)
    result = run_benchmark(tiny_model, spec, cache_dir=tmp_path)[0]
    assert result.reps_mode == "auto" and 3 <= result.reps <= 6
    strict = RunSpec.of(n_prompt=(8,), n_gen=(8,), reps=0, min_reps=3, max_reps=4, target_ci=0.0)
    assert run_benchmark(tiny_model, strict, cache_dir=tmp_path)[0].reps == 4  # the cap


def _rep(decode_tps: float) -> RepTiming:
    gap = int(1e9 / decode_tps)
    return RepTiming(prefill_ns=1, token_ns=(10, 10 + gap, 10 + 2 * gap))


def test_auto_reps_rule_by_hand() -> None:
    spec = RunSpec.of(reps=0, min_reps=3, max_reps=10, target_ci=0.02, max_seconds=100)
    steady = [_rep(100.0), _rep(100.5), _rep(99.5)]  # ci95 = 4.303 * 0.5 / sqrt(3) = 1.24%
    assert _auto_done(steady, spec.workload.repetitions, elapsed_s=1.0)
    assert not _auto_done(steady[:2], spec.workload.repetitions, elapsed_s=1.0)  # below the minimum
    noisy = [_rep(100.0), _rep(110.0), _rep(90.0)]  # ci95 = 24.8%
    assert not _auto_done(noisy, spec.workload.repetitions, elapsed_s=1.0)
    assert _auto_done(noisy, spec.workload.repetitions, elapsed_s=100.0)  # the time cap
    assert _auto_done(
        noisy * 4, spec.workload.repetitions, elapsed_s=1.0
    )  # the repetition cap (12 >= 10)


def test_sustained_mode_reports_windows_and_stability(tiny_model: Path, tmp_path: Path) -> None:
    spec = RunSpec.of(n_prompt=(8,), n_gen=(32,), sustained_seconds=1.2, window_seconds=0.4)
    result = run_benchmark(tiny_model, spec, cache_dir=tmp_path)[0]
    assert result.reps_mode == "sustained" and result.window_s == 0.4
    # whole windows only; a busy machine may stretch the last rep past the duration
    assert len(result.windows_tps) >= 2 and max(result.windows_tps) > 0
    assert result.stability == pytest.approx(min(result.windows_tps) / max(result.windows_tps))
    assert result.stability is not None and 0 <= result.stability <= 1
    starts = [r.start_ns for r in result.rep_timings]
    assert starts == sorted(starts) and len(starts) == result.reps


def test_bench_command_prints_one_object_per_test(tiny_model: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgebench",
            "bench",
            str(tiny_model),
            "-p",
            "16,32",
            "-n",
            "8",
            "-r",
            "2",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"EDGEBENCH_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    rows = json.loads(done.stdout)
    assert [(r["n_prompt"], r["n_gen"], r["reps"]) for r in rows] == [(16, 8, 2), (32, 8, 2)]
    assert [len(r["token_ns"]) for r in rows[0]["rep_timings"]] == [8, 8]
    assert rows[0]["environment"]["engine"] == "llama_cpp"
    missing = subprocess.run(
        [sys.executable, "-m", "edgebench", "bench", "nope.gguf"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: model not found: nope.gguf"
    bad_variant = subprocess.run(
        [sys.executable, "-m", "edgebench", "bench", str(tiny_model), "--variant", "int8"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad_variant.returncode == 1 and "cannot produce variant 'int8'" in bad_variant.stderr


def test_context_size_is_a_setting_of_the_run(tiny_model: Path, tmp_path: Path) -> None:
    env = {"EDGEBENCH_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    base = [sys.executable, "-m", "edgebench", "bench", str(tiny_model), "-p", "16", "-n", "8"]
    runs = {}
    for ctx in ("0", "1024"):
        done = subprocess.run([*base, "-r", "1", "-c", ctx, "-o", "json"], env=env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        runs[ctx] = json.loads(done.stdout)[0]["environment"]["settings"]["n_ctx"]
    assert runs == {"0": 256, "1024": 1024}  # 0: the test's 24 tokens rounded up to 256
    small = subprocess.run([*base, "-d", "8", "-c", "20"], env=env, capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert small.returncode == 2  # a usage error, before any work
    said = " ".join(small.stderr.replace("│", " ").split())
    assert "context size 20 cannot hold the largest test" in said
    assert "(depth + prompt + generation = 32)" in said


def test_gpu_settings_are_clear_errors_where_the_engine_has_no_gpu(
    tiny_model: Path, tiny_hf: Path, tmp_path: Path
) -> None:
    """CI has no GPU: asking for one fails before any work. On a GPU machine (see
    benchmarks/gpu_check.py) the same settings run and report the GPU memory held."""
    import llama_cpp
    import torch

    runs = [
        (tiny_model, RunSpec.of(reps=1, n_prompt=(8,), n_gen=(4,),
                               n_gpu_layers=-1),
         bool(llama_cpp.llama_supports_gpu_offload()), "cannot offload to a GPU"),
        (tiny_hf, RunSpec.of(backend="transformers", reps=1, n_prompt=(8,), n_gen=(4,),
                            provider="cuda"),
         torch.cuda.is_available(), "sees no CUDA GPU"),
    ]  # fmt: skip
    for model, spec, has_gpu, message in runs:
        if has_gpu:
            assert run_benchmark(model, spec, cache_dir=tmp_path)[0].decode_tps > 0
        else:
            with pytest.raises(BackendError, match=message):
                run_benchmark(model, spec, cache_dir=tmp_path)
    with pytest.raises(BackendError, match="cpu or cuda, not 'tensorrt'"):
        spec = RunSpec.of(backend="transformers", provider="tensorrt")
        run_benchmark(tiny_hf, spec, cache_dir=tmp_path)


def test_what_flash_attention_auto_chose_is_recorded(tiny_model: Path, tmp_path: Path) -> None:
    """llama.cpp's own default (`auto`) is ours; the result says what it became."""
    from edgebench.agent.backends.llama_cpp import flash_attention_from_log

    assert flash_attention_from_log(["llama_context: Flash Attention enabled\n"]) == "on"
    assert flash_attention_from_log(
        ["resolve: Flash Attention not supported, set to disabled\n"]
    ) == "off"  # fmt: skip
    assert flash_attention_from_log(["llama_context: n_ctx = 256\n"]) is None
    for asked, expected in (("auto", {"on", "off"}), ("off", {"off"}), ("on", {"on"})):
        spec = RunSpec.of(n_prompt=(8,), n_gen=(4,), reps=1, warmup=0, flash_attn=asked)
        [result] = run_benchmark(tiny_model, spec, cache_dir=tmp_path)
        settings = result.environment["settings"]
        assert settings["flash_attn"] == asked and settings["n_batch"] == 2048
        assert settings["in_force"]["flash_attn"] in expected, settings
        assert settings["in_force"]["n_gpu_layers"] == 0  # a CPU-only build: none by default
