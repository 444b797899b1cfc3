"""Tool-chain monitoring: signals for policy (Cedar `context.chain`), rate limits and detectors."""

from gateway.chain.detectors import Detection
from gateway.chain.settings import (
    MonitoringSettings,
    RateLimit,
    monitoring_settings_from_mapping,
    triggers_kill_switch,
)
from gateway.chain.tracker import ChainTracker, RateLimited

__all__ = [
    "ChainTracker",
    "Detection",
    "MonitoringSettings",
    "RateLimit",
    "RateLimited",
    "monitoring_settings_from_mapping",
    "triggers_kill_switch",
]
