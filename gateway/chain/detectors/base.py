"""What every chain detector shares: the Detection it reports and the shape of a detector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.chain.signals import DecidedCall


@dataclass(frozen=True, slots=True)
class Detection:
    detector: str  # "sensitive_then_egress" | "burst" | "repeated_denials" | "probing" | "novel_sequence"
    severity: str  # "low" | "medium" | "high" | "critical"
    agent_id: str
    task_id: str | None
    tool: str | None
    message: str  # never argument values
    user: str | None = None  # the person's `sub` when the call was a person's (through a client agent)
    user_issuer: str | None = None


class Detector(Protocol):
    """Judges one decided tools/call; may update its own firing state on the agent's record."""

    def judge(self, call: DecidedCall) -> Detection | None: ...
