"""MCP logging levels and which `notifications/message` lines pass a threshold."""

from __future__ import annotations

from typing import Any

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def log_allowed(message: dict[str, Any], threshold: str | None, when_unset: bool) -> bool:
    """Whether a notification passes a logging threshold (other notifications always pass).

    2025-11-25 agents get every log line until they call logging/setLevel (when_unset=True);
    2026-07-28 agents only when their request's `_meta` asks for a level (when_unset=False).
    """
    if message.get("method") != "notifications/message":
        return True
    if threshold not in LOG_LEVELS:
        return when_unset
    level = (message.get("params") or {}).get("level")
    return level not in LOG_LEVELS or LOG_LEVELS.index(level) >= LOG_LEVELS.index(threshold)
