"""Checks more than one config section uses: unknown keys, numbers, webhook URLs, relative paths."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.json_values import JsonValue
from gateway.settings.errors import ConfigError


def check_keys(raw: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"unknown {where} key(s): {', '.join(unknown)}")


def webhook_url(value: object, key: str) -> str | None:
    """An optional http(s) URL to POST signed webhooks to."""
    if value in (None, ""):
        return None
    text = str(value)
    if not text.startswith(("http://", "https://")):
        raise ConfigError(f"{key} must be an http(s) URL")
    return text


def whole_number(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a whole number of at least 1, got {value!r}")
    return value


def positive_float(value: JsonValue, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} must be a number, got {value!r}") from exc
    if number <= 0:
        raise ConfigError(f"{key} must be positive, got {number}")
    return number


def resolve_path(value: object, base_dir: Path) -> Path:
    """A configured path; a relative one is taken from the config file's directory."""
    path = Path(str(value))
    return path if path.is_absolute() else (base_dir / path).resolve()
