"""The reference check against a stand-in llama-bench put first on PATH: the arguments
each of its three tests gets, the figures read from its JSON, and its failures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edgebench.agent.reference import find_llama_bench, request_tps, run_llama_bench
from edgebench.errors import EdgebenchError
from edgebench.measure.record import BenchResult, RepTiming, summarize
from edgebench.workload import RunSpec
from tests.conftest import run_cli

# Answers like llama-bench 0.3.36 with -o json: one object per test, samples_ts its rate
# per repetition; the first repetition slow, as the real one's often is.
STAND_IN = """#!{python}
import json, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
mode = {mode!r}
if mode == "fail":
    sys.stderr.write("error: failed to load model\\n")
    sys.exit(1)
if mode == "garbage":
    print("not json")
    sys.exit(0)
if mode == "no-figure":
    print(json.dumps([{{"n_prompt": 1, "avg_ts": 5.0}}]))
    sys.exit(0)
value = lambda flag: args[args.index(flag) + 1]
if "-pg" in args:
    figure = 300.0
elif value("-n") == "0":
    figure = 1000.0
else:
    figure = 100.0
reps = int(value("-r")) - (mode == "short")
samples = [figure / 2] + [figure * (0.9 if i % 2 else 1.1) for i in range(reps - 1)]
if mode == "zero":
    samples[-1] = 0.0
if mode == "nan":
    samples[-1] = float("nan")
average = sum(samples) / len(samples)
print(json.dumps([{{"avg_ts": average, "samples_ts": samples, "n_depth": int(value("-d"))}}]))
"""


def _stand_in(tmp_path: Path, mode: str = "ok") -> tuple[Path, Path]:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    log = tmp_path / "calls.jsonl"
    tool = folder / "llama-bench"
    tool.write_text(STAND_IN.format(python=sys.executable, log=str(log), mode=mode))
    tool.chmod(0o755)
    return tool, log


def _result(n_prompt: int = 8, n_depth: int = 16) -> BenchResult:
    reps = [
        RepTiming(prefill_ns=1_000_000, token_ns=(2_000_000, 3_000_000, 4_500_000)),
        RepTiming(prefill_ns=1_000_000, token_ns=(2_000_000, 4_000_000, 6_000_000)),
    ]
    return summarize(reps, backend="llama_cpp", variant="Q4_K_M", model_sha256="ab" * 32,
                     threads=2, n_prompt=n_prompt, n_depth=n_depth, load_ms=1.0,
                     peak_rss_mb=10.0)  # fmt: skip


def _spec() -> RunSpec:
    return RunSpec.of(
        n_prompt=(8,), n_gen=(3,), n_depth=(16,), reps=2, threads=2, n_batch=256, n_ubatch=128
    )


def test_request_rate_is_the_mean_of_per_rep_rates() -> None:
    # rep 1: 8 prompt tokens + 2 decoded in 4.5 ms; rep 2: the same in 6 ms
    expected = ((8 + 2) / 0.0045 + (8 + 2) / 0.006) / 2
    assert request_tps(_result()) == pytest.approx(expected)


def test_each_llama_bench_test_gets_our_threads_lengths_and_depths(tmp_path: Path) -> None:
    tool, log = _stand_in(tmp_path)
    figures = run_llama_bench(tool, tmp_path / "m.gguf", _result(), _spec(), repack=False)
    # the mean of the repetitions after llama-bench's first, the slow one it warms up with
    assert figures.prefill_tps == pytest.approx(1000)
    assert figures.decode_tps == pytest.approx(100)
    assert figures.request_tps == pytest.approx(300)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 3

    def options(call: list[str]) -> dict[str, str]:
        return dict(zip(call[::2], call[1::2], strict=True))

    prefill, decode, request = (options(call) for call in calls)
    for each in (prefill, decode, request):
        # one repetition more than ours: its first stands for our discarded warm-up rep
        assert each["-t"] == "2" and each["-r"] == "3" and each["--repack"] == "0"
        assert each["-b"] == "256" and each["-ub"] == "128" and each["-o"] == "json"
    assert (prefill["-p"], prefill["-n"], prefill["-d"]) == ("8", "0", "16")
    # decode follows the prompt: tg at depth + prompt, the first token is the prefill's
    assert (decode["-p"], decode["-n"], decode["-d"]) == ("0", "2", "24")
    assert (request["-pg"], request["-d"]) == ("8,2", "16")


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("fail", "llama-bench failed: error: failed to load model"),
        ("garbage", "llama-bench did not print JSON"),
        ("no-figure", "llama-bench's JSON has no samples_ts figures"),
        ("short", "llama-bench reported 2 repetitions, not 3"),
        ("zero", "llama-bench reported a throughput of 0.0"),
        ("nan", "llama-bench reported a throughput of nan"),
    ],
)
def test_a_failing_llama_bench_is_a_clear_error(tmp_path: Path, mode: str, message: str) -> None:
    tool, _ = _stand_in(tmp_path, mode)
    with pytest.raises(EdgebenchError, match=message):
        run_llama_bench(tool, tmp_path / "m.gguf", _result(), _spec(), repack=True)


def test_llama_bench_missing_from_path_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EdgebenchError, match="llama-bench not found"):
        find_llama_bench(None)
    with pytest.raises(EdgebenchError, match="llama-bench not found"):
        find_llama_bench(tmp_path / "nowhere")


def test_bench_reference_prints_three_ratios_from_llama_bench_on_path(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The real engine on the generated model; llama-bench's side is the stand-in."""
    tool, log = _stand_in(tmp_path)
    done = run_cli(
        tmp_path / "home", "bench", str(tiny_model), "-p", "8", "-n", "4", "-r", "2",
        "--reference", PATH=f"{tool.parent}:/usr/bin:/bin",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "· llama_cpp F32 · " in done.stdout  # the results, as without --reference
    assert "edgebench vs llama-bench" in done.stderr  # the comparison goes with the progress
    for header in ("llama-bench pp", "llama-bench tg", "llama-bench pg"):
        assert header in done.stderr
    assert len(log.read_text().splitlines()) == 3
