"""Working hours: the example time-bounded rule's notion of "inside office hours"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULTS = {"start": "08:00", "end": "18:00", "days": DAY_NAMES[:5], "timezone": "UTC"}


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

    def __post_init__(self) -> None:
        # Fail at configuration time, not on the first request after hours.
        _parse_clock(self.start, "start")
        _parse_clock(self.end, "end")
        for day in self.days:
            if day not in DAY_NAMES:
                raise ValueError(f"working_hours.days: {day!r} is not one of {', '.join(DAY_NAMES)}")
        _zone(self.timezone)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> WorkingHours:
        """Build from the `policy.working_hours` config mapping; raises ValueError on a bad value."""
        raw = raw or {}
        unknown = set(raw) - {"start", "end", "days", "timezone"}
        if unknown:
            raise ValueError(f"working_hours: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        days = raw.get("days", DEFAULTS["days"])
        if isinstance(days, str) or not all(isinstance(d, str) for d in days):
            raise ValueError("working_hours.days must be a list like [mon, tue, wed, thu, fri]")
        return cls(
            start=str(raw.get("start", DEFAULTS["start"])),
            end=str(raw.get("end", DEFAULTS["end"])),
            days=tuple(d.lower()[:3] for d in days),
            timezone=str(raw.get("timezone", DEFAULTS["timezone"])),
        )

    def local(self, now: float) -> LocalTime:
        moment = datetime.fromtimestamp(now, _zone(self.timezone))
        weekday = moment.isoweekday()
        start, end = _parse_clock(self.start, "start"), _parse_clock(self.end, "end")
        clock = moment.time().replace(tzinfo=None)
        inside = DAY_NAMES[weekday - 1] in self.days and start <= clock < end
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
