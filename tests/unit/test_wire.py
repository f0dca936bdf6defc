"""The coordinator's checks of what agents send (coordinator/wire.py)."""

from __future__ import annotations

import pytest

from edgebench.agent.wire import metrics_message
from edgebench.coordinator.wire import WireError, checked_result, result_values
from edgebench.measure.record import RepTiming, summarize
from edgebench.proto.v1 import agent_pb2 as pb


def _metrics(*reps: tuple[int, list[int]]) -> pb.Metrics:
    """A result's message as an agent makes it; figures from the timestamps where they
    make a result (bad ones are for the checks to find)."""
    timings = [RepTiming(prefill_ns=p, token_ns=tuple(t)) for p, t in reps]
    try:
        made = summarize(timings, backend="llama_cpp", variant="F32", model_sha256="a" * 64,
                         threads=4, n_prompt=8, load_ms=1.0, peak_rss_mb=1.0)  # fmt: skip
        metrics = metrics_message(made)
    except (ValueError, ZeroDivisionError):
        metrics = pb.Metrics(backend="llama_cpp", variant="F32", model_sha256="a" * 64,
                             n_gen=len(reps[0][1]), reps=len(reps))  # fmt: skip
        for prefill_ns, token_ns in reps:
            metrics.rep_timings.add(prefill_ns=prefill_ns, token_ns=token_ns)
    return metrics


def test_raw_timings_are_kept_as_sent() -> None:
    _, timings = result_values(_metrics((100, [200, 300, 300, 450]), (90, [150, 160, 170, 180])))
    assert [t.token_ns for t in timings] == [(200, 300, 300, 450), (150, 160, 170, 180)]
    assert [t.prefill_ns for t in timings] == [100, 90]


@pytest.mark.parametrize(
    ("reps", "message"),
    [
        ([(100, [200, 300, 250, 450])], "increasing"),  # a timestamp goes back
        ([(100, [200, 300, 450, 449])], "increasing"),  # the last one does
        ([(0, [200, 300, 400, 450])], "positive"),
        ([(100, [0, 300, 400, 450])], "positive"),
        ([(100, [200, 300, 400, 450]), (100, [200, 300])], "exactly n_gen"),
    ],
)
def test_bad_timings_are_refused(reps: list[tuple[int, list[int]]], message: str) -> None:
    with pytest.raises(WireError, match=message):
        result_values(_metrics(*reps))


def test_a_repetition_without_tokens_is_refused() -> None:
    metrics = _metrics((100, [200]))
    metrics.n_gen = 0
    del metrics.rep_timings[0].token_ns[:]
    with pytest.raises(WireError, match="at least one token"):
        result_values(metrics)


def test_result_without_every_reps_timings_is_refused() -> None:
    metrics = _metrics((100, [200, 300]))
    metrics.reps = 2
    with pytest.raises(WireError, match="every repetition"):
        result_values(metrics)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ('{"a": NaN}', "NaN is not a number JSON allows"),
        ('{"a": [1, -Infinity]}', "-Infinity is not a number JSON allows"),
        ('{"a":' * 17 + "1" + "}" * 17, "nests deeper than 16 levels"),
        ('{"a":' * 900 + "1" + "}" * 900, "nests deeper than 16 levels"),
        ("[" * 60_000, "not JSON of at most 16 levels"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_free_form_json_is_bounded_and_finite(environment: str, message: str) -> None:
    metrics = _metrics((100, [200, 300]))
    metrics.environment_json = environment
    with pytest.raises(WireError, match=message):
        result_values(metrics)
    metrics.environment_json = "{}"
    metrics.sensors_json = environment
    with pytest.raises(WireError, match=message):
        result_values(metrics)


def test_json_sixteen_levels_deep_is_taken() -> None:
    metrics = _metrics((100, [200, 300]))
    metrics.environment_json = '{"a":' * 15 + "[1]" + "}" * 15
    values, _ = result_values(metrics)
    assert values["environment_json"] == metrics.environment_json


@pytest.mark.parametrize("window", [float("inf"), float("nan"), 0.0, -1.0])
def test_a_window_that_is_not_a_finite_positive_time_is_refused(window: float) -> None:
    metrics = _metrics((100, [200, 300]))
    metrics.window_s = window
    with pytest.raises(WireError, match="window_s"):
        result_values(metrics)


@pytest.mark.parametrize(
    ("field", "value"),
    [("decode_tps", 1e308), ("decode_tps", 0.5), ("ttft_ms", 0.001), ("itl_p99_ms", 1.0),
     ("prefill_tps", 9e9), ("decode_tps_per_core", 1e6)],
)  # fmt: skip
def test_figures_the_timestamps_contradict_are_refused(field: str, value: float) -> None:
    metrics = _metrics((1_000_000, [2_000_000, 3_000_000, 4_500_000]))
    result_values(metrics)  # as made: taken
    setattr(metrics, field, value)
    with pytest.raises(WireError, match=f"{field} .* disagrees with the raw timestamps"):
        result_values(metrics)


def test_a_decode_that_takes_no_time_is_refused() -> None:
    metrics = _metrics((100, [200, 200, 200]))
    with pytest.raises(WireError, match="decode must take time"):
        result_values(metrics)


def test_more_threads_than_the_device_has_cpus_is_refused() -> None:
    metrics = _metrics((1_000_000, [2_000_000, 3_000_000, 4_500_000]))  # threads 4
    checked_result(metrics, logical_cpus=4)
    checked_result(metrics, logical_cpus=0)  # unknown: nothing to compare with
    with pytest.raises(WireError, match="threads 4 is more than the device's 2 logical CPUs"):
        checked_result(metrics, logical_cpus=2)
