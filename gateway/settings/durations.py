"""Durations in config and policy annotations: a number of seconds, or "90s", "15m", "1h", "1d"."""

from __future__ import annotations

from gateway.settings.errors import ConfigError

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like "90", "90s", "15m", "1h"; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        unit = UNITS.get(text[-1:]) if text else None
        seconds = float(text[:-1]) * unit if unit is not None else float(text)
    if not 0 < seconds < 366 * 86400:
        raise ValueError(f"a duration must be positive and under a year, got {value!r}")
    return seconds


def duration_s(value: object, key: str) -> float:
    try:
        return parse_duration(value)
    except ValueError:
        raise ConfigError(f"{key} must be a duration (seconds, or like 90s, 15m, 1h), got {value!r}") from None
