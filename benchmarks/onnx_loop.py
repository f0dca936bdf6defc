"""Our greedy ONNX Runtime loop against onnxruntime-genai's, on the same model.onnx.

Generates a transformers Llama of about 30M parameters, turns it into an onnxruntime-genai
folder with genai's builder, and lays the same model.onnx out as a plain export (no
genai_config.json, so the onnx backend runs our own loop: one run per token through an
IOBinding, the present tensors fed back as the past, argmax in numpy). genai runs twice:
as its builder configured it (past and present share one buffer per layer, which its
GroupQueryAttention updates in place) and with `past_present_share_buffer` off (a new
present each step, as any exporter's graph and our loop do). All three are loaded in one
process and alternated repetition by repetition; each round gives paired ratios of
prefill and decode tok/s against genai, printed as medians with their distribution-free
95% intervals.

Usage: .venv/bin/python -m benchmarks.onnx_loop [--rounds 30] [--threads 2] [-p 64] [-n 64]
       [--tiny]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from benchmarks.reference import DATA
from edgebench.agent.backends.base import EngineSettings
from edgebench.agent.backends.onnx import OnnxBackend
from edgebench.measure.record import RepTiming
from edgebench.measure.stats import median_ci95
from edgebench.modelgen import TinyHfSpec, cached_tiny_onnx, cached_tiny_onnx_export

# 512 wide, 8 layers, 1536 feed-forward: about 30M parameters, like the reference check's.
MODEL = TinyHfSpec(
    hidden_size=512,
    intermediate_size=1536,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=8,
)


def _rates(rep: RepTiming, n_prompt: int) -> tuple[float, float]:
    decode_s = (rep.token_ns[-1] - rep.token_ns[0]) / 1e9
    return n_prompt / (rep.prefill_ns / 1e9), (len(rep.token_ns) - 1) / decode_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="at least 6")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-p", "--n-prompt", type=int, default=64)
    parser.add_argument("-n", "--n-gen", type=int, default=64)
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the tests' 2-layer model instead (per-step fixed costs dominate)",
    )
    args = parser.parse_args()
    spec = TinyHfSpec() if args.tiny else MODEL
    if args.rounds < 6:
        parser.error("--rounds must be at least 6 for a 95% interval of the median ratio")
    genai = cached_tiny_onnx(DATA / "models", spec)
    folders = {
        "ours": cached_tiny_onnx_export(DATA / "models", spec),
        "genai": genai,
        "genai, no shared buffer": _without_shared_buffer(genai),
    }
    settings = EngineSettings(threads=args.threads, n_ctx=args.n_prompt + args.n_gen)
    loops = {}
    for name, folder in folders.items():
        loops[name] = OnnxBackend()
        loops[name].load(folder, settings)
    prompt = list(range(5, 5 + args.n_prompt))
    for backend in loops.values():
        backend.generate([], prompt, args.n_gen)  # warm-up
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in loops}
    for round_number in range(args.rounds):
        order = list(loops) if round_number % 2 == 0 else list(reversed(loops))
        for name in order:
            rates[name].append(_rates(loops[name].generate([], prompt, args.n_gen), len(prompt)))
    model = "the tests' tiny Llama" if args.tiny else "~30M-parameter Llama"
    print(f"{model}, {args.threads} threads, pp{args.n_prompt}+tg{args.n_gen}, "
          f"{args.rounds} alternating rounds\n")  # fmt: skip
    print("| metric | loop | tok/s (median) | ours / this, paired (median) | 95% interval |")
    print("|---|---|---|---|---|")
    for index, metric in enumerate(("prefill", "decode")):
        mine = [r[index] for r in rates["ours"]]
        for name, values in rates.items():
            theirs = [r[index] for r in values]
            ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
            low, high = median_ci95(ratios)
            print(f"| {metric} | {name} | {statistics.median(theirs):.1f} "
                  f"| {statistics.median(ratios):.3f} | {low:.3f}-{high:.3f} |")  # fmt: skip


def _without_shared_buffer(genai: Path) -> Path:
    """A copy of the genai folder whose config turns the shared past/present buffer off."""
    folder = genai.with_name(genai.name + "-no-shared-buffer")
    if not folder.is_dir():
        shutil.copytree(genai, folder)
        config_path = folder / "genai_config.json"
        config = json.loads(config_path.read_text())
        config["search"]["past_present_share_buffer"] = False
        config_path.write_text(json.dumps(config, indent=4))
    return folder


if __name__ == "__main__":
    main()
