"""Policy-as-code: Cedar decides every tools/call, prompts/get and resources/read."""

from gateway.policy.canonical import CanonicalizationError, canonicalize
from gateway.policy.engine import (
    Decision,
    PolicyEngine,
    PolicyLoadError,
    ReloadOutcome,
    RequestFacts,
)
from gateway.policy.hours import WorkingHours

__all__ = [
    "CanonicalizationError",
    "Decision",
    "PolicyEngine",
    "PolicyLoadError",
    "ReloadOutcome",
    "RequestFacts",
    "WorkingHours",
    "canonicalize",
]
