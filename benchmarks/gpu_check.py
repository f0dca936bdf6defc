"""What edgebench sees on an NVIDIA GPU machine: the NVML sensors, and each engine's GPU
path next to its CPU path on the same generated models.

Runs whatever is installed: llama.cpp with all layers offloaded (needs a CUDA build of
llama-cpp-python), transformers on `cuda` (fp32 and bf16), ONNX Runtime with the CUDA
provider through onnxruntime-genai (needs onnxruntime-genai-cuda) and through our own
greedy loop on a plain export (needs onnxruntime-gpu; TensorRT too where it is there).
An engine that is missing or has no GPU support prints one line saying so instead of a
row. No GPU machine runs CI: run this by hand and record what it printed in
benchmarks/RESULTS.md.

It also checks that the greedy ONNX loop picks the same tokens on each GPU provider as on
the CPU (`--tokens`; the KV cache then lives on the device between steps).

Usage: python benchmarks/gpu_check.py [--data DIR] [-p 64] [-n 64] [-r 5] [--only onnx,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgebench.agent.backends.base import BackendError
from edgebench.agent.runner import run_benchmark
from edgebench.measure.record import BenchResult
from edgebench.modelgen import (
    TinyLlamaSpec,
    cached_tiny_hf,
    cached_tiny_llama,
    cached_tiny_onnx,
    cached_tiny_onnx_export,
)
from edgebench.workload import RunSpec

HERE = Path(__file__).resolve().parent
# The reference check's model: 512 wide, 8 layers, about 28M parameters.
LLAMA = TinyLlamaSpec(n_embd=512, n_layer=8, n_head=8, n_head_kv=8, n_ff=1536)


def probe() -> None:
    done = subprocess.run([sys.executable, "-m", "edgebench", "agent", "probe", "--json"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    report = json.loads(done.stdout)
    print(f"platform: {report['platform']}")
    for sensor in report["sensors"]:
        if sensor["source"] == "nvml":
            flags = sensor.get("flags") or {}
            on = ",".join(k for k, v in flags.items() if v)
            value = sensor["value"]
            print(f"  nvml {sensor['kind']:<11} {sensor['name']:<9} {sensor['scope']:<10} "
                  f"{value!s:>14} {sensor['unit']:<3} {sensor['status']} "
                  f"{sensor['reason'] or ''} {on}")  # fmt: skip


def row(label: str, result: BenchResult) -> str:
    sensors = result.sensors
    return (
        f"| {label} | {result.variant} | {result.prefill_tps:,.0f} | {result.decode_tps:,.0f} "
        f"| {result.itl_p99_ms:.3f} | {result.load_ms:,.0f} | {result.peak_rss_mb:,.0f} "
        f"| {_num(result.gpu_mem_mb)} | {_num(result.avg_power_w)} "
        f"| {_num(result.decode_j_per_token, '.4f')} | {sensors.get('energy_scope') or '-'} "
        f"| {_num(result.temp_max_c)} | {result.throttled} |"
    )


def _num(value: float | None, fmt: str = ".0f") -> str:
    return "-" if value is None else format(value, fmt)


def measure(label: str, model: Callable[[], Path], spec: RunSpec, cache: Path) -> None:
    try:
        result = run_benchmark(model(), spec, cache_dir=cache)[0]
    except (BackendError, ImportError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"| {label} | not run: {str(exc).splitlines()[0][:150]} |")
        return
    print(row(label, result))
    build = result.environment.get("engine_build", {})
    print(f"<!-- {label} build: {json.dumps(build)[:400]} -->")


def rows(data: Path, base: RunSpec) -> list[tuple[str, Callable[[], Path], RunSpec]]:
    models = data / "models"
    cpu: dict[str, Any] = {"threads": 4}
    gpu: dict[str, Any] = {"n_gpu_layers": -1, "provider": "cuda"}
    gguf = lambda: cached_tiny_llama(models, LLAMA)  # noqa: E731
    hf = lambda: cached_tiny_hf(models)  # noqa: E731
    onnx = lambda: cached_tiny_onnx(models)  # noqa: E731
    export = lambda: cached_tiny_onnx_export(models)  # noqa: E731
    tensorrt = {"provider": "tensorrt"}
    return [
        ("llama.cpp cpu", gguf, base.changed(variant="Q4_K_M", **cpu)),
        ("llama.cpp cuda -ngl -1", gguf, base.changed(variant="Q4_K_M", **gpu)),
        ("llama.cpp cuda -ngl -1 F16", gguf, base.changed(variant="F16", **gpu)),
        ("transformers cpu", hf, base.changed(backend="transformers", **cpu)),
        ("transformers cuda", hf, base.changed(backend="transformers", **gpu)),
        ("transformers cuda bf16", hf,
         base.changed(backend="transformers", variant="bf16", **gpu)),
        ("onnx cpu", onnx, base.changed(backend="onnx", **cpu)),
        ("onnx cuda", onnx, base.changed(backend="onnx", **gpu)),
        ("onnx export cpu", export, base.changed(backend="onnx", **cpu)),
        ("onnx export cuda", export, base.changed(backend="onnx", **gpu)),
        ("onnx export tensorrt", export, base.changed(backend="onnx", **tensorrt)),
    ]  # fmt: skip


def greedy_tokens(folder: Path, provider: str, prompt: str, n_gen: int) -> list[int]:
    """What the greedy loop generates, token by token, with `provider` holding the cache."""
    from edgebench.agent.backends.onnx import _GreedyDecoder

    decoder = _GreedyDecoder(folder, 4, provider)
    ids = decoder.tokenize(prompt)
    logits, past = decoder._step(ids, 0, decoder._empty_past())
    tokens = [int(logits.argmax())]
    for position in range(len(ids), len(ids) + n_gen - 1):
        logits, past = decoder._step([tokens[-1]], position, past)
        tokens.append(int(logits.argmax()))
    return tokens


def tokens_check(data: Path, n_gen: int) -> None:
    export = cached_tiny_onnx_export(data / "models")
    prompt = "the quick brown fox jumps over the lazy dog " * 4
    cpu = greedy_tokens(export, "cpu", prompt, n_gen)
    for provider in ("cuda", "tensorrt"):
        try:
            gpu = greedy_tokens(export, provider, prompt, n_gen)
        except BackendError as exc:
            print(f"greedy loop tokens {provider}: not run: {str(exc).splitlines()[0][:200]}")
            continue
        same = sum(a == b for a, b in zip(cpu, gpu, strict=True))
        print(f"greedy loop tokens {provider} vs cpu: {same}/{n_gen} the same; "
              f"first 8 cpu {cpu[:8]} {provider} {gpu[:8]}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE / ".data")
    parser.add_argument("-p", "--n-prompt", type=int, default=64)
    parser.add_argument("-n", "--n-gen", type=int, default=64)
    parser.add_argument("-r", "--reps", type=int, default=5)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated words: run the rows "
        "whose label holds one of them (e.g. onnx,transformers)",
    )
    parser.add_argument(
        "--tokens",
        action="store_true",
        help="only compare the greedy loop's tokens on each GPU provider with the CPU's",
    )
    parser.add_argument("--row", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tokens:
        tokens_check(args.data, args.n_gen)
        return
    base = RunSpec.of(n_prompt=(args.n_prompt,), n_gen=(args.n_gen,), reps=args.reps)
    table = rows(args.data, base)
    if args.row is not None:
        label, model, spec = table[args.row]
        measure(label, model, spec, args.data / "variants")
        return
    probe()
    print(f"\npp{args.n_prompt}+tg{args.n_gen}, {args.reps} reps, each row in its own process\n")
    print(
        "| run | variant | prefill tok/s | decode tok/s | itl p99 ms | load ms | RSS MiB "
        "| GPU MiB | avg W | decode J/tok | energy scope | temp max C | throttled |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    sys.stdout.flush()
    words = [word for word in args.only.split(",") if word]
    for index, (label, _, _) in enumerate(table):
        if words and not any(word in label for word in words):
            continue
        # One process per row: a CUDA build of llama.cpp and torch's CUDA libraries
        # crash when loaded into one process (NOTES.md, issue 3), as an agent's runs do not.
        done = subprocess.run([sys.executable, __file__, "--row", str(index), "--data",
                               str(args.data), "-p", str(args.n_prompt), "-n", str(args.n_gen),
                               "-r", str(args.reps)], check=False)  # fmt: skip
        if done.returncode != 0:
            print(f"| {label} | crashed: exit status {done.returncode} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
