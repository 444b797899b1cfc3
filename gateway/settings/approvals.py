"""The `approvals:` section of the config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.settings.durations import duration_s
from gateway.settings.errors import ConfigError
from gateway.settings.fields import check_keys, webhook_url

MODES = ("hold", "pending")
# approvals.default_mode may also be "auto": hold when the client can send a person to a URL, else pending.
DEFAULT_MODES = ("auto", *MODES)


@dataclass(frozen=True, slots=True)
class ApprovalSettings:
    ttl_s: float = 900.0  # how long a request (and a granted approval) stays good; @approval_ttl overrides
    hold_timeout_s: float = 900.0  # the longest a held call waits (capped by the request's expiry)
    # For `@step_up` with no value: "auto" holds clients that can send a person to a URL, answers others
    # at once (pending); "hold" or "pending" insist, like the same value in the policy.
    default_mode: str = "auto"
    forbid_self_approval: bool = False  # the agent's owner (or the task's starter) may not approve it
    admins_may_approve: bool = False  # admins decide only as owners / group members unless this is set
    keepalive_s: float = 15.0  # SSE comment frames keep a held call's stream open through proxies
    webhook_url: str | None = None  # POSTed on every new request
    webhook_secret_env: str | None = None  # env var with the HMAC secret for the webhook
    console_session_ttl_s: float = 8 * 3600.0
    console_idle_s: float = 30 * 60.0


KEYS = frozenset({"ttl", "hold_timeout", "default_mode", "forbid_self_approval", "admins_may_approve",
                  "keepalive", "webhook_url", "webhook_secret_env", "console_session_ttl", "console_idle"})


def approval_settings(raw: object) -> ApprovalSettings:
    if raw is None:
        return ApprovalSettings()
    if not isinstance(raw, dict):
        raise ConfigError("approvals must be a mapping")
    check_keys(raw, KEYS, "approvals")
    defaults = ApprovalSettings()
    mode = str(raw.get("default_mode", defaults.default_mode))
    if mode not in DEFAULT_MODES:
        raise ConfigError(f"approvals.default_mode must be one of {', '.join(DEFAULT_MODES)}")
    settings = ApprovalSettings(
        ttl_s=duration_s(raw.get("ttl", defaults.ttl_s), "approvals.ttl"),
        hold_timeout_s=duration_s(raw.get("hold_timeout", defaults.hold_timeout_s), "approvals.hold_timeout"),
        default_mode=mode,
        forbid_self_approval=_flag(raw, "forbid_self_approval", defaults.forbid_self_approval),
        admins_may_approve=_flag(raw, "admins_may_approve", defaults.admins_may_approve),
        keepalive_s=duration_s(raw.get("keepalive", defaults.keepalive_s), "approvals.keepalive"),
        webhook_url=webhook_url(raw.get("webhook_url"), "approvals.webhook_url"),
        webhook_secret_env=raw.get("webhook_secret_env") or None,
        console_session_ttl_s=duration_s(raw.get("console_session_ttl", defaults.console_session_ttl_s),
                                         "approvals.console_session_ttl"),
        console_idle_s=duration_s(raw.get("console_idle", defaults.console_idle_s), "approvals.console_idle"),
    )
    return settings


def _flag(raw: dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"approvals.{key} must be true or false")
    return value
