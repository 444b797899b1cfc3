"""The `limits:` section: request size and depth, 2025-11-25 sessions, upstream reply size."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings.errors import ConfigError
from gateway.settings.fields import check_keys, positive_float, whole_number

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_UPSTREAM_REPLY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_depth: int = 64
    # How long a 2025-11-25 session may sit idle before the gateway forgets it.
    session_idle_s: float = 3600.0
    # Open 2025-11-25 sessions: at most this many per agent, and in all (a new one beyond is refused).
    # Through a person's client, `max_sessions_per_agent` counts per person and this caps all its people together.
    max_sessions_per_agent: int = 64
    max_sessions_per_client: int = 1024
    max_sessions: int = 10_000
    # Largest single message read from an upstream (a reply, an SSE event, a stdio line).
    max_upstream_reply_bytes: int = DEFAULT_MAX_UPSTREAM_REPLY_BYTES


def limit_settings(raw: object) -> LimitSettings:
    if not isinstance(raw, dict):
        raise ConfigError("limits must be a mapping")
    check_keys(raw, frozenset({"max_body_bytes", "max_json_depth", "session_idle_s", "max_sessions_per_agent",
                               "max_sessions_per_client", "max_sessions", "max_upstream_reply_bytes"}), "limits")
    defaults = LimitSettings()
    return LimitSettings(
        max_body_bytes=int(positive_float(raw.get("max_body_bytes", defaults.max_body_bytes), "max_body_bytes")),
        max_json_depth=int(positive_float(raw.get("max_json_depth", defaults.max_json_depth), "max_json_depth")),
        session_idle_s=positive_float(raw.get("session_idle_s", defaults.session_idle_s), "session_idle_s"),
        max_sessions_per_agent=_whole_number(raw.get("max_sessions_per_agent", defaults.max_sessions_per_agent),
                                             "limits.max_sessions_per_agent"),
        max_sessions_per_client=_whole_number(
            raw.get("max_sessions_per_client", defaults.max_sessions_per_client), "limits.max_sessions_per_client"),
        max_sessions=_whole_number(raw.get("max_sessions", defaults.max_sessions), "limits.max_sessions"),
        max_upstream_reply_bytes=int(positive_float(
            raw.get("max_upstream_reply_bytes", defaults.max_upstream_reply_bytes), "max_upstream_reply_bytes")),
    )


_whole_number = whole_number
