"""When a donated machine may benchmark (`agent run --only-when`, repeatable): its owner's
terms, checked before the agent asks for work. All must hold.

- `idle`: the machine's CPUs were less than 25% busy since the last check (the agent is
  idle then, so the use is someone else's);
- `ac`: on mains power (no battery, or a power supply online, or a battery charging);
- `temp<60C`: the hottest thermal zone is below 60 °C (no readable zone: it does not
  hold, since the owner asked for a bound);
- `hours=22-07`: the local hour is within the window (it may wrap past midnight).

A work request already sent is honoured even if a condition stops holding before the
coordinator answers it: the run then goes on to its end.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil

IDLE_BELOW_PCT = 25.0
_TEMP = re.compile(r"^temp<(\d{1,3}(?:\.\d+)?)c$")
_HOURS = re.compile(r"^hours=(\d{1,2})-(\d{1,2})$")
HELP = "idle, ac, temp<60C or hours=22-07"


@dataclass(frozen=True)
class Condition:
    text: str  # as the owner wrote it
    kind: str  # idle, ac, temp, hours
    limit_c: float = 0.0
    hours: tuple[int, int] = (0, 0)


def parse(text: str) -> Condition:
    """One `--only-when` value; ValueError with the accepted forms otherwise."""
    given = text.strip().lower()
    if given in ("idle", "ac"):
        return Condition(text, given)
    if found := _TEMP.match(given):
        return Condition(text, "temp", limit_c=float(found[1]))
    if (found := _HOURS.match(given)) and int(found[1]) < 24 and int(found[2]) < 24:
        return Condition(text, "hours", hours=(int(found[1]), int(found[2])))
    raise ValueError(f"{text!r} is not a condition; one of: {HELP}")


@dataclass
class Conditions:
    """The owner's terms and where to read the machine's state."""

    rules: list[Condition]
    sysfs: Path = Path("/sys")
    clock: Callable[[], datetime] = datetime.now
    _cpu_primed: bool = field(default=False, repr=False)

    def why_not(self) -> str | None:
        """Which term does not hold now, in words, or None when all hold."""
        for rule in self.rules:
            problem = self._check(rule)
            if problem:
                return f"{problem} (--only-when {rule.text})"
        return None

    def _check(self, rule: Condition) -> str | None:
        if rule.kind == "idle":
            return self._busy()
        if rule.kind == "ac":
            return None if on_mains(self.sysfs) else "on battery"
        if rule.kind == "temp":
            hottest = hottest_c(self.sysfs)
            if hottest is None:
                return "no thermal zone to read"
            return None if hottest < rule.limit_c else f"at {hottest:.0f} °C"
        start, end = rule.hours
        hour = self.clock().hour
        inside = start <= hour < end if start <= end else hour >= start or hour < end
        return None if inside else f"outside hours {start:02d}-{end:02d} (now {hour:02d}h)"

    def _busy(self) -> str | None:
        used = psutil.cpu_percent(interval=None)  # since the previous call
        if not self._cpu_primed:  # the first call has nothing to compare with
            self._cpu_primed = True
            return "measuring the CPUs' use"
        return None if used < IDLE_BELOW_PCT else f"CPUs {used:.0f}% busy"


def on_mains(sysfs: Path) -> bool:
    """No battery, a mains or USB supply online, or a battery not discharging."""
    supplies = list((sysfs / "class/power_supply").glob("*"))
    batteries = [s for s in supplies if _read(s / "type") == "Battery"]
    if not batteries:
        return True
    if any(_read(s / "online") == "1" for s in supplies if _read(s / "type") != "Battery"):
        return True
    return any(_read(b / "status") in ("Charging", "Full", "Not charging") for b in batteries)


def hottest_c(sysfs: Path) -> float | None:
    temps = []
    for zone in (sysfs / "class/thermal").glob("thermal_zone*"):
        text = _read(zone / "temp")
        if text.lstrip("-").isdigit():
            temps.append(int(text) / 1000)
    return max(temps) if temps else None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
