"""Our greedy loop over an ONNX Runtime session (a plain ONNX decoder export): the layout
it reads from the graph, the KV cache it feeds back, and the graphs it refuses."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime
import pytest

from edgebench.agent.backends import BackendError, create_backend
from edgebench.agent.backends import onnx as onnx_backend
from edgebench.agent.backends.base import EngineSettings
from edgebench.agent.backends.onnx import (
    GENAI_PROVIDERS,
    ORT_PROVIDERS,
    OUTPUT_DEVICES,
    DecoderLayout,
    TensorSpec,
    kv_dims_from_config,
    load_gpu_libraries,
    read_layout,
)
from tests.conftest import run_cli

F32 = "tensor(float)"
IDS = TensorSpec("input_ids", ("batch", "seq"), "tensor(int64)")
MASK = TensorSpec("attention_mask", ("batch", "total"), "tensor(int64)")
POSITIONS = TensorSpec("position_ids", ("batch", "seq"), "tensor(int64)")
PAST = TensorSpec("past_key_values.0.key", ("batch", 2, "past", 8), F32)
PAST_V = TensorSpec("past_key_values.0.value", ("batch", 2, "past", 8), F32)
OUTPUTS = [
    TensorSpec("logits", ("batch", "seq", 16), F32),
    TensorSpec("present.0.key", ("batch", 2, "total", 8), F32),
    TensorSpec("present.0.value", ("batch", 2, "total", 8), F32),
]


def test_a_step_feeds_ids_mask_and_positions_after_the_past() -> None:
    layout = read_layout([IDS, MASK, POSITIONS, PAST, PAST_V], OUTPUTS, kv_dims=None)
    assert [(kv.past, kv.present, kv.empty_shape) for kv in layout.kv] == [
        ("past_key_values.0.key", "present.0.key", (1, 2, 0, 8)),
        ("past_key_values.0.value", "present.0.value", (1, 2, 0, 8)),
    ]
    feeds = layout.feeds([7, 9], offset=5)
    assert feeds["input_ids"].tolist() == [[7, 9]] and feeds["input_ids"].dtype == np.int64
    assert feeds["attention_mask"].tolist() == [[1] * 7]
    assert feeds["position_ids"].tolist() == [[5, 6]]
    assert set(feeds) == {"input_ids", "attention_mask", "position_ids"}


def test_open_kv_dimensions_come_from_the_config() -> None:
    open_past = TensorSpec("past_key_values.0.key", ("batch", "heads", "past", "size"), F32)
    open_value = TensorSpec("past_key_values.0.value", ("batch", 2, "past", "size"), F32)
    layout = read_layout([IDS, open_past, open_value], OUTPUTS, kv_dims=(4, 16))
    assert [kv.empty_shape for kv in layout.kv] == [(1, 4, 0, 16), (1, 2, 0, 16)]
    assert layout.attention_mask is None and layout.position_ids is None
    assert set(layout.feeds([1], 0)) == {"input_ids"}
    with pytest.raises(BackendError, match=r"no config\.json"):
        read_layout([IDS, open_past], OUTPUTS, kv_dims=None)


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ([MASK, PAST], OUTPUTS, "no input named input_ids"),
        ([TensorSpec("input_ids", ("b", "s"), F32), PAST], OUTPUTS,
         r"input_ids is tensor\(float\), not int64/int32"),
        ([IDS, TensorSpec("position_ids", ("b", "s"), F32), PAST], OUTPUTS,
         r"position_ids is tensor\(float\)"),
        ([IDS, PAST], OUTPUTS[1:], "no output named logits"),
        ([IDS, PAST], [TensorSpec("logits", ("b", 16), F32), *OUTPUTS[1:]],
         "logits have 2 dimensions"),
        ([IDS, PAST, TensorSpec("token_type_ids", ("b", "s"), "tensor(int64)")], OUTPUTS,
         r"cannot feed: \['token_type_ids'\]"),
        ([IDS], OUTPUTS, "no past KV cache"),
        ([IDS, TensorSpec("past_key_values.1.key", ("b", 2, "p", 8), F32)], OUTPUTS,
         "no output present.1.key"),
        ([IDS, TensorSpec("past_key_values.0.key", ("b", 2, "p", 8), "tensor(int8)")], OUTPUTS,
         "float32 or float16"),
        ([IDS, TensorSpec("past_key_values.0.key", (2, "b", 2, "p", 8), F32)], OUTPUTS,
         "5 dimensions"),
    ],
)  # fmt: skip
def test_graphs_the_loop_cannot_drive_are_refused_clearly(
    inputs: list[TensorSpec], outputs: list[TensorSpec], message: str
) -> None:
    with pytest.raises(BackendError, match=message):
        read_layout(inputs, outputs, kv_dims=None)


def test_kv_dimensions_from_a_transformers_config(tmp_path: Path) -> None:
    assert kv_dims_from_config(tmp_path) is None
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"num_attention_heads": 8, "hidden_size": 512}))
    assert kv_dims_from_config(tmp_path) == (8, 64)
    config.write_text(
        json.dumps({"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32})
    )
    assert kv_dims_from_config(tmp_path) == (2, 32)
    config.write_text(json.dumps({"num_attention_heads": 0, "hidden_size": 512}))
    with pytest.raises(BackendError, match="KV cache's shape"):
        kv_dims_from_config(tmp_path)
    config.write_text("not json")
    with pytest.raises(BackendError, match="KV cache's shape"):
        kv_dims_from_config(tmp_path)


def _without_cache(model: Path, tokens: list[int], n: int) -> list[int]:
    """Greedy tokens from the whole sequence fed again at every step with an empty past:
    what a correct KV-cache loop must reproduce."""
    session = onnxruntime.InferenceSession(str(model / "model.onnx"))
    dims = kv_dims_from_config(model)
    assert dims is not None
    empty = {
        arg.name: np.zeros((1, dims[0], 0, dims[1]), np.float32)
        for arg in session.get_inputs()
        if arg.name.startswith("past_key_values.")
    }
    sequence, out = list(tokens), []
    for _ in range(n):
        feeds = {"input_ids": np.asarray([sequence], np.int64),
                 "attention_mask": np.ones((1, len(sequence)), np.int64), **empty}  # fmt: skip
        token = int(session.run(["logits"], feeds)[0][0, -1].argmax())
        out.append(token)
        sequence.append(token)
    return out


@pytest.mark.parametrize("path", ["native", "bound"])
def test_the_cached_loop_generates_what_the_model_gives_without_a_cache(
    tiny_onnx_export: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Both step paths: native tensors on the CPU, IOBinding (a GPU's path) forced here."""
    fed: list[list[int]] = []
    feeds = DecoderLayout.feeds

    def recording(self: DecoderLayout, tokens: list[int], offset: int) -> Any:
        fed.append(list(tokens))
        return feeds(self, tokens, offset)

    backend = create_backend("onnx")
    backend.load(tiny_onnx_export, EngineSettings(threads=1, n_ctx=64))
    decoder = cast(Any, backend)._decoder
    assert decoder._native_run is not None  # this ONNX Runtime takes the CPU's fast path
    if path == "bound":
        decoder._native_run = None
    monkeypatch.setattr(DecoderLayout, "feeds", recording)
    monkeypatch.setattr(onnx_backend, "CONTEXT_CHUNK", 3)  # the depth in two steps
    context, prompt = [5, 17, 40, 3], [9, 11, 12]
    try:
        timing = backend.generate(context, prompt, 12)
    finally:
        backend.close()
    assert len(timing.token_ns) == 12
    assert fed[:3] == [context[:3], context[3:], prompt]
    assert all(len(step) == 1 for step in fed[3:])
    generated = [step[0] for step in fed[3:]]  # each token is fed back as the next step
    assert generated == _without_cache(tiny_onnx_export, context + prompt, 11)
    assert len(set(generated)) > 1  # random weights still make a sequence that can differ


def test_the_native_step_keeps_its_inputs_alive_through_the_run(tiny_onnx_export: Path) -> None:
    """Its tensors borrow numpy's memory: were the arrays freed before the run, the junk
    allocated here would take their place (numpy reuses small freed buffers)."""
    backend = create_backend("onnx")
    backend.load(tiny_onnx_export, EngineSettings(threads=1, n_ctx=64))
    decoder = cast(Any, backend)._decoder
    real_run = decoder._native_run
    assert real_run is not None

    def run_after_scribbling(feeds: Any, names: Any, options: Any) -> Any:
        gc.collect()
        junk = [np.full(n, 2**30 + n, np.int64) for n in range(1, 40) for _ in range(8)]
        outputs = real_run(feeds, names, options)
        del junk
        return outputs

    decoder._native_run = run_after_scribbling
    context, prompt = [5, 17, 40, 3], [9, 11, 12]
    try:
        logits, past = decoder._step(context + prompt, 0, decoder._empty_past())
        generated = [int(logits.argmax())]
        for position in range(7, 16):
            logits, past = decoder._step([generated[-1]], position, past)
            generated.append(int(logits.argmax()))
    finally:
        backend.close()
    assert generated == _without_cache(tiny_onnx_export, context + prompt, 10)


def test_a_provider_this_onnx_runtime_lacks_is_a_clear_error(tiny_onnx_export: Path) -> None:
    assert set(ORT_PROVIDERS) == set(GENAI_PROVIDERS) == set(OUTPUT_DEVICES)  # one list
    available = onnxruntime.get_available_providers()
    missing = next(p for p, eps in ORT_PROVIDERS.items() if eps[0] not in available)
    backend = create_backend("onnx")
    with pytest.raises(BackendError, match=f"has no {ORT_PROVIDERS[missing][0]}"):
        backend.load(tiny_onnx_export, EngineSettings(provider=missing, n_ctx=64))
    with pytest.raises(BackendError, match="unknown ONNX Runtime provider 'npu'"):
        # the models refuse it first; the backend still checks what it is handed
        backend.load(tiny_onnx_export, EngineSettings.model_construct(provider="npu", n_ctx=64))


def test_cuda_libraries_are_preloaded_for_gpu_providers_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CUDA from pip's nvidia-* packages is loaded before a GPU session (onnxruntime-gpu's
    documented way; on an H200 the CUDA provider then ran on torch's nvidia packages), and
    the loader's warnings do not land in a --json report on stdout."""
    calls: list[str] = []

    def preload() -> None:
        calls.append("preload")
        print("WARNING: cuDNN not found")

    monkeypatch.setattr(onnxruntime, "preload_dlls", preload, raising=False)
    for provider in ("cpu", "dml"):
        load_gpu_libraries(provider)
    assert calls == []
    load_gpu_libraries("cuda")
    load_gpu_libraries("tensorrt")
    assert calls == ["preload", "preload"]
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.count("cuDNN not found") == 2


def test_an_export_without_a_tokenizer_is_refused(tiny_onnx_export: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("model.onnx", "model.onnx.data", "config.json"):
        (folder / name).symlink_to(tiny_onnx_export / name)
    with pytest.raises(BackendError, match=r"no tokenizer\.json"):
        create_backend("onnx").load(folder, EngineSettings(n_ctx=64))


def test_bench_runs_an_export_folder_with_the_onnx_engine_by_default(
    tiny_onnx_export: Path, tmp_path: Path
) -> None:
    done = run_cli(tmp_path, "bench", str(tiny_onnx_export), "-p", "8", "-n", "4", "-r", "1",
                   "-o", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["backend"] == "onnx" and row["environment"]["engine_build"]["loop"] == "greedy"
    assert [len(rep["token_ns"]) for rep in row["rep_timings"]] == [4]
    not_a_model = run_cli(tmp_path, "bench", str(tmp_path))
    assert not_a_model.returncode == 1 and "neither an ONNX model folder" in not_a_model.stderr
