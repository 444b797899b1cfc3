"""The `discovery:` section of the config: re-sync backstop and the review webhook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.settings.durations import duration_s
from gateway.settings.errors import ConfigError
from gateway.settings.fields import check_keys, webhook_url


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    resync_interval_s: float = 300.0  # every upstream is listed again this often, notified or not
    webhook_url: str | None = None  # POSTed for every tool, resource and template that enters quarantine
    webhook_secret_env: str | None = None


KEYS = frozenset({"resync_interval", "webhook_url", "webhook_secret_env"})


def discovery_settings(raw: Any) -> DiscoverySettings:
    if raw is None:
        return DiscoverySettings()
    if not isinstance(raw, dict):
        raise ConfigError("discovery must be a mapping")
    check_keys(raw, KEYS, "discovery")
    return DiscoverySettings(
        resync_interval_s=duration_s(raw.get("resync_interval", DiscoverySettings().resync_interval_s),
                                     "discovery.resync_interval"),
        webhook_url=webhook_url(raw.get("webhook_url"), "discovery.webhook_url"),
        webhook_secret_env=raw.get("webhook_secret_env") or None,
    )
