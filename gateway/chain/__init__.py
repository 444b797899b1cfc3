"""Tool-chain monitoring: signals for policy (Cedar `context.chain`), rate limits and detectors."""

from gateway.chain.detectors import Detection
from gateway.chain.tracker import ChainTracker, RateLimited
from gateway.settings.monitoring import (
    MonitoringSettings,
    RateLimit,
    monitoring_settings_from_mapping,
    triggers_kill_switch,
)

__all__ = [
    "ChainTracker",
    "Detection",
    "MonitoringSettings",
    "RateLimit",
    "RateLimited",
    "monitoring_settings_from_mapping",
    "triggers_kill_switch",
]
