"""The fair-share ranking on plain data: priority, then the submitter with the fewest runs
in flight (this round's grants count), then age; only runs the device may take."""

from __future__ import annotations

from datetime import datetime, timedelta

from edgebench.coordinator.fairshare import Queued, ranked, take

T0 = datetime(2026, 12, 3)


def _run(run_id: str, minutes: int = 0, priority: int = 0, backend: str = "llama_cpp") -> Queued:
    return Queued(priority, run_id, T0 + timedelta(minutes=minutes), None, "{}", backend)


def test_priority_then_fewest_in_flight_then_oldest() -> None:
    pools = {"alice": [_run("a1", 0), _run("a2", 1)], "bob": [_run("b1", 5)]}
    assert [row.run_id for _, row in ranked(pools, {}, lambda r: True)] == ["a1", "b1"]
    assert ranked(pools, {"alice": 3}, lambda r: True)[0][1].run_id == "b1"  # bob has fewer
    pools["carol"] = [_run("c1", 9, priority=5)]
    assert ranked(pools, {"alice": 3}, lambda r: True)[0][1].run_id == "c1"  # priority first


def test_a_round_shares_as_it_grants() -> None:
    pools = {"alice": [_run(f"a{i}", i) for i in range(5)], "bob": [_run("b0", 10)]}
    in_flight: dict[str, int] = {}
    taken = [take(pools, in_flight, lambda r: True) for _ in range(3)]
    assert [row.run_id for row in taken if row] == ["a0", "b0", "a1"]
    assert in_flight == {"alice": 2, "bob": 1}


def test_only_runs_the_device_may_take() -> None:
    pools = {"alice": [_run("onnx", 0, backend="onnx"), _run("gguf", 1)]}
    row = take(pools, {}, lambda r: r.backend == "llama_cpp")
    assert row is not None and row.run_id == "gguf"
    assert [r.run_id for r in pools["alice"]] == ["onnx"]
    assert take(pools, {}, lambda r: r.backend == "llama_cpp") is None
