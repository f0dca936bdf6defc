from pathlib import Path

from edgebench.measure.record import DEFINITIONS_VERSION, RESULT_FIELDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_every_result_field_is_documented_with_its_unit() -> None:
    text = DOC.read_text()
    assert f"Definitions version: **{DEFINITIONS_VERSION}**" in text
    for name, unit, _ in RESULT_FIELDS:
        assert f"| `{name}` | {unit or '-'} |" in text, name
