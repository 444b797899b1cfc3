"""The `discovery:` section of the config: re-sync backstop, the review webhook, and the bounds on
undecided reviews an upstream can make the gateway keep."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings.durations import duration_s
from gateway.settings.errors import ConfigError
from gateway.settings.fields import check_keys, webhook_url, whole_number


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    resync_interval_s: float = 300.0  # every upstream is listed again this often, notified or not
    webhook_url: str | None = None  # POSTed for every tool, resource and template that enters quarantine
    webhook_secret_env: str | None = None
    # New tool names an upstream may have waiting for review at once; more are refused (never listed).
    max_pending_reviews_per_server: int = 500
    # A never-approved quarantined tool its upstream stopped listing is dropped from memory after this.
    forget_unlisted_after_s: float = 86_400.0


KEYS = frozenset({"resync_interval", "webhook_url", "webhook_secret_env", "max_pending_reviews_per_server",
                  "forget_unlisted_after"})


def discovery_settings(raw: object) -> DiscoverySettings:
    if raw is None:
        return DiscoverySettings()
    if not isinstance(raw, dict):
        raise ConfigError("discovery must be a mapping")
    check_keys(raw, KEYS, "discovery")
    defaults = DiscoverySettings()
    return DiscoverySettings(
        resync_interval_s=duration_s(raw.get("resync_interval", DiscoverySettings().resync_interval_s),
                                     "discovery.resync_interval"),
        webhook_url=webhook_url(raw.get("webhook_url"), "discovery.webhook_url"),
        webhook_secret_env=raw.get("webhook_secret_env") or None,
        max_pending_reviews_per_server=whole_number(
            raw.get("max_pending_reviews_per_server", defaults.max_pending_reviews_per_server),
            "discovery.max_pending_reviews_per_server"),
        forget_unlisted_after_s=duration_s(raw.get("forget_unlisted_after", defaults.forget_unlisted_after_s),
                                           "discovery.forget_unlisted_after"),
    )
