"""Working hours: the example time-bounded rule's notion of "inside office hours"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class LocalTime:
    """What the request facts need from a clock reading: local hour, ISO weekday, in-hours flag."""

    hour: int
    weekday: int  # 1 = Monday .. 7 = Sunday
    working_hours: bool


@dataclass(frozen=True, slots=True)
class WorkingHours:
    start: str = "08:00"
    end: str = "18:00"
    days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    timezone: str = "UTC"
    # Parsed once here, read on every decision.
    _start: time = field(init=False, repr=False, compare=False)
    _end: time = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Fail at configuration time, not on the first request after hours.
        object.__setattr__(self, "_start", _parse_clock(self.start, "start"))
        object.__setattr__(self, "_end", _parse_clock(self.end, "end"))
        for day in self.days:
            if day not in DAY_NAMES:
                raise ValueError(f"working_hours.days: {day!r} is not one of {', '.join(DAY_NAMES)}")
        object.__setattr__(self, "_zone", _zone(self.timezone))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> WorkingHours:
        """Build from the `policy.working_hours` config mapping; raises ValueError on a bad value."""
        raw = raw or {}
        unknown = set(raw) - {"start", "end", "days", "timezone"}
        if unknown:
            raise ValueError(f"working_hours: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        defaults = cls()
        days = raw.get("days", defaults.days)
        if isinstance(days, str) or not all(isinstance(d, str) for d in days):
            raise ValueError("working_hours.days must be a list like [mon, tue, wed, thu, fri]")
        return cls(
            start=str(raw.get("start", defaults.start)),
            end=str(raw.get("end", defaults.end)),
            days=tuple(d.lower()[:3] for d in days),
            timezone=str(raw.get("timezone", defaults.timezone)),
        )

    def local(self, now: float) -> LocalTime:
        moment = datetime.fromtimestamp(now, self._zone)
        weekday = moment.isoweekday()
        clock = moment.time().replace(tzinfo=None)
        inside = DAY_NAMES[weekday - 1] in self.days and self._start <= clock < self._end
        return LocalTime(hour=moment.hour, weekday=weekday, working_hours=inside)


def _parse_clock(value: str, name: str) -> time:
    try:
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"working_hours.{name} must be HH:MM, got {value!r}") from None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"working_hours.timezone: unknown time zone {name!r}") from None
