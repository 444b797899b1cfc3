"""The `policy:` section: what a denied agent is told, shadow policies, the watcher, working hours."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.settings.durations import UNITS, duration_s
from gateway.settings.errors import ConfigError
from gateway.settings.fields import check_keys, resolve_path

DEFAULT_RECORD_RETENTION_S = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class PolicySettings:
    # What a denied agent is told: the policy's @reason text ("annotation") or only "denied by policy".
    agent_reasons: str = "annotation"
    # A candidate policy directory evaluated beside the live one, log-only (shadow mode).
    shadow: Path | None = None
    # How often the policy directory is checked for changes; 0 turns the watcher off.
    watch_interval_s: float = 2.0
    # The raw `working_hours` mapping, read by gateway.policy.
    working_hours: dict[str, Any] = field(default_factory=dict)
    # How long each decision's inputs are kept (encrypted) for what-if replay; 0 records nothing.
    record_retention_s: float = DEFAULT_RECORD_RETENTION_S


def policy_settings(raw: object, base_dir: Path) -> PolicySettings:
    if not isinstance(raw, dict):
        raise ConfigError("policy must be a mapping")
    check_keys(raw, frozenset({"agent_reasons", "shadow", "watch_interval_s", "working_hours",
                                "record_retention"}), "policy")
    reasons = raw.get("agent_reasons", "annotation")
    if reasons not in ("annotation", "generic"):
        raise ConfigError("policy.agent_reasons must be 'annotation' or 'generic'")
    interval = raw.get("watch_interval_s", 2.0)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
        raise ConfigError("policy.watch_interval_s must be a number >= 0")
    hours = raw.get("working_hours") or {}
    if not isinstance(hours, dict):
        raise ConfigError("policy.working_hours must be a mapping")
    return PolicySettings(
        agent_reasons=reasons,
        shadow=resolve_path(raw["shadow"], base_dir) if raw.get("shadow") else None,
        watch_interval_s=float(interval),
        working_hours=hours,
        record_retention_s=_retention(raw.get("record_retention", DEFAULT_RECORD_RETENTION_S)),
    )


def _retention(value: object) -> float:
    """A duration, or zero in any spelling (0, "0", "0s", "0h", ...): recording off."""
    return 0.0 if _is_zero(value) else duration_s(value, "policy.record_retention")


def _is_zero(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value == 0
    text = str(value).strip().lower()
    try:
        return float(text[:-1] if text[-1:] in UNITS else text) == 0
    except ValueError:
        return False
