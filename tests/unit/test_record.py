import pytest

from edgebench.measure.packing import pack_reps, unpack_reps
from edgebench.measure.record import (
    FIELD_NAMES,
    BenchResult,
    RepTiming,
    implausibility,
    summarize,
)

MS = 1_000_000


def _result() -> BenchResult:
    # Rep 1: prefill 8 ms, tokens at 10, 12, 15 ms. Rep 2: prefill 6 ms, tokens at 8, 9, 11 ms.
    reps = [
        RepTiming(prefill_ns=8 * MS, token_ns=(10 * MS, 12 * MS, 15 * MS)),
        RepTiming(prefill_ns=6 * MS, token_ns=(8 * MS, 9 * MS, 11 * MS)),
    ]
    return summarize(
        reps,
        backend="llama_cpp",
        variant="F32",
        model_sha256="a" * 64,
        threads=2,
        n_prompt=16,
        load_ms=5.0,
        peak_rss_mb=100.0,
    )


def test_summary_by_hand() -> None:
    r = _result()
    assert (r.n_gen, r.reps) == (3, 2)
    assert r.ttft_ms == pytest.approx(9.0)  # mean of 10 and 8
    assert r.prefill_tps == pytest.approx((16 / 0.008 + 16 / 0.006) / 2)
    assert r.decode_tps == pytest.approx((2 / 0.005 + 2 / 0.003) / 2)  # gaps after the first token
    # gaps over all reps: 2, 3, 1, 2 ms
    assert r.itl_p50_ms == pytest.approx(2.0)
    assert r.itl_max_ms == pytest.approx(3.0)
    assert r.e2e_ms == pytest.approx(13.0)
    assert list(r.fields()) == list(FIELD_NAMES)
    assert implausibility(r.fields()) is None


def test_summary_refuses_ragged_or_short_reps() -> None:
    with pytest.raises(ValueError):
        summarize(
            [RepTiming(1, (1, 2)), RepTiming(1, (1, 2, 3))],
            backend="x",
            variant="x",
            model_sha256="",
            threads=1,
            n_prompt=1,
            load_ms=0,
            peak_rss_mb=0,
        )
    with pytest.raises(ValueError):
        summarize(
            [RepTiming(1, (1,))],
            backend="x",
            variant="x",
            model_sha256="",
            threads=1,
            n_prompt=1,
            load_ms=0,
            peak_rss_mb=0,
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("decode_tps", -1.0),
        ("ttft_ms", float("nan")),
        ("peak_rss_mb", float("inf")),
        ("decode_tps", 0.0),
        ("n_gen", 1),
        ("reps", "3"),
    ],
)
def test_implausible_figures_are_named(field: str, value: object) -> None:
    values = _result().fields()
    values[field] = value
    problem = implausibility(values)
    assert problem is not None
    assert field in problem or "at least" in problem


def test_timings_pack_round_trip_and_refuse_damage() -> None:
    reps = _result().rep_timings
    blob = pack_reps(reps)
    assert len(blob) == 8 + 2 * (3 + 3) * 8
    assert unpack_reps(blob) == reps
    with pytest.raises(ValueError):
        unpack_reps(blob[:-1])
    with pytest.raises(ValueError):
        unpack_reps(b"\x00")
