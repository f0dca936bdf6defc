"""The llama.cpp loop on a generated GGUF: real engine, real file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgebench.agent.backends import BackendError, create_backend
from edgebench.agent.backends.base import EngineSettings
from edgebench.agent.runner import BenchSpec, run_benchmark
from edgebench.modelgen import build_vocab


def test_generated_vocabulary_is_unique_and_has_byte_fallback() -> None:
    tokens, scores, types = build_vocab()
    assert len(tokens) == len(set(tokens)) == len(scores) == len(types)
    assert 300 <= len(tokens) <= 1000
    assert tokens[3] == "<0x00>" and tokens[258] == "<0xFF>"


def test_every_rep_times_exactly_n_tokens(tiny_model: Path) -> None:
    phases = []
    result = run_benchmark(
        tiny_model,
        BenchSpec(n_prompt=40, n_gen=12, reps=3),
        progress=lambda phase, done, total: phases.append((phase, done)),
    )
    assert [len(r.token_ns) for r in result.rep_timings] == [12, 12, 12]
    assert result.variant == "F32" and result.backend == "llama_cpp" and result.reps == 3
    assert result.ttft_ms > 0 and result.decode_tps > 0 and result.prefill_tps > 0
    assert result.load_ms > 0 and result.peak_rss_mb > 10
    for rep in result.rep_timings:
        assert 0 < rep.prefill_ns < rep.token_ns[0]  # the first token comes after the prefill
        assert all(b > a for a, b in zip(rep.token_ns, rep.token_ns[1:], strict=False))
    assert phases[0] == ("loading", 0) and phases[-1] == ("measuring", 3)


def test_prompt_is_exactly_n_tokens_and_context_is_checked(tiny_model: Path) -> None:
    backend = create_backend("llama_cpp")
    backend.load(tiny_model, EngineSettings(threads=1, n_ctx=64))
    try:
        from edgebench.agent.workload import prompt_tokens

        assert len(prompt_tokens(backend.tokenize, 50)) == 50
        with pytest.raises(BackendError, match="exceed the context"):
            backend.generate([1] * 1000, 10)  # llama.cpp may round n_ctx up, not this far
    finally:
        backend.close()


def test_unknown_backend_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="unknown backend"):
        create_backend("tensorflow")
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(BackendError, match="not a GGUF"):
        run_benchmark(not_gguf, BenchSpec(reps=1))
    with pytest.raises(BackendError, match="not found"):
        run_benchmark(tmp_path / "missing.gguf", BenchSpec(reps=1))
    with pytest.raises(ValueError, match="at least 2"):
        run_benchmark(not_gguf, BenchSpec(n_gen=1))


def test_bench_command_prints_one_object_per_test(tiny_model: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgebench",
            "bench",
            str(tiny_model),
            "-p",
            "16",
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
    )
    rows = json.loads(done.stdout)
    assert len(rows) == 1 and rows[0]["n_gen"] == 8 and rows[0]["reps"] == 2
    assert [len(r["token_ns"]) for r in rows[0]["rep_timings"]] == [8, 8]
    missing = subprocess.run(
        [sys.executable, "-m", "edgebench", "bench", "nope.gguf"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: model file not found: nope.gguf"
