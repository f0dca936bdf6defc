"""The pieces pages are drawn from: parameter counts from model headers (and hostile
files), the hardware class, SVG charts (escaped, never empty), the compare table's
difference rule."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path
from typing import Any

import pytest

from edgebench.dashboard import charts, views
from edgebench.dashboard.charts import Bar, Point, Series
from edgebench.dashboard.models import ResultSummary
from edgebench.device import DeviceIdentity, hardware_class
from edgebench.modelparams import parameter_count, size_bucket
from tests.storefill import HOSTILE


def test_parameters_are_counted_from_a_gguf_header(tiny_model: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(str(tiny_model), "r")
    expected = sum(int(t.n_elements) for t in reader.tensors)
    assert parameter_count(tiny_model, "gguf") == expected > 0


def _safetensors(shapes: dict[str, list[int]]) -> bytes:
    header = json.dumps({n: {"dtype": "F16", "shape": s, "data_offsets": [0, 0]}
                         for n, s in shapes.items()} | {"__metadata__": {}}).encode()  # fmt: skip
    return struct.pack("<Q", len(header)) + header


def test_parameters_are_counted_from_safetensors_headers_in_a_folder_tar(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("a.safetensors", _safetensors({"w": [4, 8], "b": [8]})),
                           ("b.safetensors", _safetensors({"e": [10, 3]})),
                           ("config.json", b"{}")):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert parameter_count(archive, "hf") == 32 + 8 + 30


ONE_KEY = struct.pack("<Q", 1) + b"k"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"GGUF",
        b"GGUF" + struct.pack("<IQQ", 3, 1, 0),  # one tensor announced, none there
        b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 0),  # absurd counts
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40),  # huge key
        b"GGUF"
        + struct.pack("<IQQ", 3, 0, 1)
        + struct.pack("<Q", 1)
        + b"k"
        + struct.pack("<I", 99),
        b"not a model at all",
    ],
)
def test_a_hostile_model_file_has_unknown_parameters(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    assert parameter_count(path, "gguf") is None
    assert parameter_count(path, "hf") is None
    assert parameter_count(path, "onnx") is None


def test_size_buckets() -> None:
    counts = (None, 135_000_000, 500_000_000, 1_100_000_000, 3_800_000_000, 7_000_000_000)
    buckets = ["unknown", "<0.5B", "0.5-1.5B", "0.5-1.5B", "1.5-4B", ">4B"]
    assert [size_bucket(n) for n in counts] == buckets


def test_the_hardware_class_names_chip_cores_and_memory_rounded() -> None:
    pi = DeviceIdentity(cpu_model="Cortex-A76", cpu_cores_physical=4, ram_bytes=int(7.8 * 2**30))
    assert hardware_class(pi) == "Cortex-A76 · 4 cores · 8 GiB"
    orin = DeviceIdentity(cpu_model="ARMv8", cpu_cores_logical=6, ram_bytes=int(15.3 * 2**30),
                          accelerator="cuda")  # fmt: skip
    assert hardware_class(orin) == "ARMv8 + cuda · 6 cores · 16 GiB"
    assert hardware_class(DeviceIdentity()) == "unknown CPU · 0 cores · <0.5 GiB"


def test_charts_escape_every_text_and_link() -> None:
    drawn = [
        charts.scatter([Point(1, 2, HOSTILE, f"/results/{HOSTILE}")], HOSTILE, HOSTILE, "y"),
        charts.lines([Series(HOSTILE, [(0, 1), (1, 2)])], "t", "x", "y", markers=[(0.5, HOSTILE)]),
        charts.bars([Bar(HOSTILE, 1.0, 0.1, 0, "/x")], "t", "y", series_names=[HOSTILE]),
        charts.histogram([1.0, 2.0, float("nan")], HOSTILE, "ms"),
    ]
    for svg in drawn:
        assert "<img" not in svg and "<script" not in svg and svg.startswith("<svg")
        assert "&lt;img src=x" in svg


def test_a_chart_with_nothing_to_draw_says_so() -> None:
    empty = charts.bars([Bar("a", None), Bar("b", None)], "Energy", "J", empty="no power sensor")
    assert "no power sensor" in empty
    assert "no data to draw" in charts.lines([], "t", "x", "y")
    assert "no data to draw" in charts.scatter([Point(float("nan"), 1)], "t", "x", "y")


def _summary(**fields: Any) -> ResultSummary:
    base = {"prefill_tps": 100.0, "prefill_tps_ci95": 5.0, "decode_tps": 10.0,
            "decode_tps_ci95": 1.0, "variant": "Q4_0", "noisy": False, "ttft_ms": 50.0}  # fmt: skip
    return ResultSummary.model_construct(fields={**base, **fields})  # type: ignore[call-arg]


def test_compare_marks_a_difference_only_beyond_both_intervals() -> None:
    first = _summary()
    within = _summary(decode_tps=11.4)  # |1.4| < sqrt(1 + 1)
    beyond = _summary(decode_tps=11.5, ttft_ms=100.0)  # |1.5| > 1.414...
    lines = {line.name: line for line in views.compare_table([first, within, beyond])}
    decode = lines["decode_tps"].cells
    assert [c.differs for c in decode] == [False, False, True]
    assert decode[2].ratio == pytest.approx(1.15)
    ttft = lines["ttft_ms"].cells  # no interval: a ratio, no mark
    assert ttft[2].differs is None and ttft[2].ratio == 2.0
    assert lines["noisy"].cells[1].ratio is None and lines["variant"].cells[1].ratio is None
