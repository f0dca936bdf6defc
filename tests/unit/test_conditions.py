"""`agent run --only-when`: the owner's terms, read from fixture sysfs trees."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from edgebench.agent.conditions import Conditions, hottest_c, on_mains, parse


def _supply(root: Path, name: str, **files: str) -> None:
    folder = root / "class/power_supply" / name
    folder.mkdir(parents=True)
    for file, text in files.items():
        (folder / file).write_text(text + "\n")


def _zone(root: Path, index: int, millidegrees: str) -> None:
    folder = root / f"class/thermal/thermal_zone{index}"
    folder.mkdir(parents=True)
    (folder / "temp").write_text(millidegrees + "\n")


def test_terms_parse_or_say_what_is_accepted() -> None:
    assert parse("AC").kind == "ac" and parse("idle").kind == "idle"
    assert parse("temp<60C").limit_c == 60.0
    assert parse("hours=22-07").hours == (22, 7)
    for bad in ("battery", "temp>60C", "hours=25-07", "hours=9", ""):
        with pytest.raises(ValueError, match="one of: idle, ac, temp<60C or hours=22-07"):
            parse(bad)


def test_mains_power_is_read_from_the_power_supplies(tmp_path: Path) -> None:
    assert on_mains(tmp_path)  # no battery at all: a desktop or a Pi
    _supply(tmp_path, "BAT0", type="Battery", status="Discharging")
    _supply(tmp_path, "AC", type="Mains", online="0")
    assert not on_mains(tmp_path)
    (tmp_path / "class/power_supply/AC/online").write_text("1\n")
    assert on_mains(tmp_path)
    (tmp_path / "class/power_supply/AC/online").write_text("0\n")
    (tmp_path / "class/power_supply/BAT0/status").write_text("Charging\n")
    assert on_mains(tmp_path)


def test_every_term_must_hold_and_the_first_that_does_not_is_named(tmp_path: Path) -> None:
    _supply(tmp_path, "BAT0", type="Battery", status="Discharging")
    at = datetime(2026, 12, 3, 23, 30)
    terms = Conditions([parse("hours=22-07"), parse("temp<60C"), parse("ac")],
                       sysfs=tmp_path, clock=lambda: at)  # fmt: skip
    assert terms.why_not() == "no thermal zone to read (--only-when temp<60C)"
    _zone(tmp_path, 0, "45000")
    _zone(tmp_path, 1, "71500")
    assert hottest_c(tmp_path) == 71.5
    assert terms.why_not() == "at 72 °C (--only-when temp<60C)"
    (tmp_path / "class/thermal/thermal_zone1/temp").write_text("50000\n")
    assert terms.why_not() == "on battery (--only-when ac)"
    (tmp_path / "class/power_supply/BAT0/status").write_text("Full\n")
    assert terms.why_not() is None
    at = datetime(2026, 12, 3, 12, 0)
    assert terms.why_not() == "outside hours 22-07 (now 12h) (--only-when hours=22-07)"


def test_idle_first_measures_then_judges_the_cpus_use() -> None:
    terms = Conditions([parse("idle")])
    assert terms.why_not() == "measuring the CPUs' use (--only-when idle)"
    later = terms.why_not()
    assert later is None or "busy" in later
