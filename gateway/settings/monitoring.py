"""The `monitoring:` section (chain monitoring): rate limits, sensitive and egress names, detector thresholds.

Parsed from the `monitoring` mapping of the gateway config by `monitoring_settings_from_mapping`.
A rate limit is `{calls: 30, per_s: 60}`; `per_agent`, `per_task` and `per_tool` also take `null`
or `false` to turn that limit off. Detector thresholds (`burst`, `repeated_denials`, `probing`)
use the same shape and are always on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from gateway.settings.errors import ConfigError

SEVERITIES = ("low", "medium", "high", "critical")
KILL_SWITCH_SEVERITIES = ("off", "high", "critical")
# Upper bounds that keep the per-agent memory bounds documented in gateway.chain.tracker true.
MAX_LIMIT_CALLS = 10_000
MAX_DETECTOR_CALLS = 1_000
MAX_HISTORY = 1_024
SETTINGS_KEYS = frozenset({
    "per_agent", "per_task", "per_tool", "sensitive_classes", "egress_servers", "egress_tools", "burst",
    "repeated_denials", "probing", "novel_sequence", "kill_switch_severity", "alert_severity", "window_s",
    "max_history",
})


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `calls` in any `per_s` seconds (sliding window)."""

    calls: int
    per_s: float


@dataclass(frozen=True, slots=True)
class MonitoringSettings:
    per_agent: RateLimit | None = RateLimit(120, 60.0)
    per_task: RateLimit | None = RateLimit(60, 60.0)
    per_tool: RateLimit | None = None  # per (agent, tool)
    sensitive_classes: tuple[str, ...] = ("secrets", "pii", "credentials", "financial")
    egress_servers: tuple[str, ...] = ()  # server ids whose tools send data out (external egress)
    egress_tools: tuple[str, ...] = ()  # or exposed tool names
    burst: RateLimit = RateLimit(20, 10.0)  # detector: more than 20 calls in 10 s
    repeated_denials: RateLimit = RateLimit(5, 60.0)  # detector: 5 denials in 60 s
    probing: RateLimit = RateLimit(3, 60.0)  # detector: 3 calls to unknown/unlisted tools in 60 s
    novel_sequence: bool = True  # detector: a (previous tool -> tool) pair never seen for this agent
    kill_switch_severity: str = "critical"  # "off" | "high" | "critical"
    # Detections below this are only audited and counted: no WARNING log line, no webhook.
    alert_severity: str = "medium"
    # How long an agent's data classes (and sensitive reads) count, across all its tasks.
    window_s: float = 3600.0
    max_history: int = 64  # tools kept per task / agent


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def worth_alerting(settings: MonitoringSettings, severity: str) -> bool:
    """True when a detection of this severity is logged at WARNING and sent to the webhook."""
    return severity_rank(severity) >= severity_rank(settings.alert_severity)


def triggers_kill_switch(settings: MonitoringSettings, severity: str) -> bool:
    """True when a detection of this severity should suspend the agent."""
    if settings.kill_switch_severity == "off":
        return False
    return severity_rank(severity) >= severity_rank(settings.kill_switch_severity)


def monitoring_settings_from_mapping(raw: Mapping[str, Any]) -> MonitoringSettings:
    """Parse the `monitoring` config section; raises ConfigError naming the key."""
    if not isinstance(raw, Mapping):
        _fail("monitoring must be a mapping")
    unknown = sorted(set(raw) - SETTINGS_KEYS)
    if unknown:
        _fail(f"unknown monitoring key(s): {', '.join(unknown)}")
    d = MonitoringSettings()
    severity = raw.get("kill_switch_severity", d.kill_switch_severity)
    if severity not in KILL_SWITCH_SEVERITIES:
        _fail(f"monitoring.kill_switch_severity must be one of {', '.join(KILL_SWITCH_SEVERITIES)}, got {severity!r}")
    alert = raw.get("alert_severity", d.alert_severity)
    if alert not in SEVERITIES:
        _fail(f"monitoring.alert_severity must be one of {', '.join(SEVERITIES)}, got {alert!r}")
    novel = raw.get("novel_sequence", d.novel_sequence)
    if not isinstance(novel, bool):
        _fail(f"monitoring.novel_sequence must be true or false, got {novel!r}")
    return MonitoringSettings(
        per_agent=_optional_limit(raw, "per_agent", d.per_agent),
        per_task=_optional_limit(raw, "per_task", d.per_task),
        per_tool=_optional_limit(raw, "per_tool", d.per_tool),
        sensitive_classes=_names(raw, "sensitive_classes", d.sensitive_classes),
        egress_servers=_names(raw, "egress_servers", d.egress_servers),
        egress_tools=_names(raw, "egress_tools", d.egress_tools),
        burst=_limit(raw.get("burst", d.burst), "burst", MAX_DETECTOR_CALLS),
        repeated_denials=_limit(raw.get("repeated_denials", d.repeated_denials), "repeated_denials",
                                MAX_DETECTOR_CALLS),
        probing=_limit(raw.get("probing", d.probing), "probing", MAX_DETECTOR_CALLS // 2),
        novel_sequence=novel,
        kill_switch_severity=severity,
        alert_severity=alert,
        window_s=_seconds(raw.get("window_s", d.window_s), "window_s"),
        max_history=_count(raw.get("max_history", d.max_history), "max_history", MAX_HISTORY),
    )


def _fail(message: str) -> NoReturn:
    raise ConfigError(message)


def _optional_limit(raw: Mapping[str, Any], key: str, default: RateLimit | None) -> RateLimit | None:
    if key not in raw:
        return default
    value = raw[key]
    if value is None or value is False:
        return None
    return _limit(value, key, MAX_LIMIT_CALLS)


def _limit(value: object, key: str, max_calls: int) -> RateLimit:
    if isinstance(value, RateLimit):
        return value
    where = f"monitoring.{key}"
    if not isinstance(value, Mapping):
        _fail(f"{where} must be a mapping {{calls, per_s}}, got {value!r}")
    unknown = sorted(set(value) - {"calls", "per_s"})
    if unknown:
        _fail(f"unknown {where} key(s): {', '.join(unknown)}")
    if "calls" not in value or "per_s" not in value:
        _fail(f"{where} needs calls and per_s")
    return RateLimit(calls=_count(value["calls"], f"{key}.calls", max_calls),
                     per_s=_seconds(value["per_s"], f"{key}.per_s"))


def _count(value: object, key: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"monitoring.{key} must be a whole number, got {value!r}")
    if not 1 <= value <= maximum:
        _fail(f"monitoring.{key} must be between 1 and {maximum}, got {value}")
    return value


def _seconds(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"monitoring.{key} must be a number of seconds, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        _fail(f"monitoring.{key} must be a positive number of seconds, got {value!r}")
    return number


def _names(raw: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return default if key not in raw else ()
    if isinstance(value, str) or not isinstance(value, list | tuple):
        _fail(f"monitoring.{key} must be a list of names, got {value!r}")
    names = []
    for item in value:
        if not isinstance(item, str) or not item:
            _fail(f"monitoring.{key} entries must be non-empty strings, got {item!r}")
        if item not in names:
            names.append(item)
    return tuple(names)
