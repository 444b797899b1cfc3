"""probing: calls to tools that are unknown or not listed for the agent (refused before policy).

High at probing.calls in probing.per_s, then critical at twice the count; re-arms once the window has
passed since it last fired.
"""

from __future__ import annotations

from collections import deque

from gateway.chain.detectors.base import Detection
from gateway.chain.signals import AgentSignals, reached
from gateway.settings.monitoring import MonitoringSettings, RateLimit


class Probing:
    def __init__(self, settings: MonitoringSettings) -> None:
        self._rule = settings.probing

    def judge(self, agent: AgentSignals, agent_id: str, task_id: str | None, tool_name: str,
                 now: float) -> Detection | None:
        rule = self._rule
        probes = agent.probes
        if probes is None:
            probes = agent.probes = deque(maxlen=2 * rule.calls)
        probes.append(now)
        if agent.probe_at is not None and now - agent.probe_at >= rule.per_s:
            agent.probe_at = None
            agent.probe_level = 0
        cutoff = now - rule.per_s
        level = 2 if reached(probes, 2 * rule.calls, cutoff) else 1 if reached(probes, rule.calls, cutoff) else 0
        if level <= agent.probe_level:
            return None
        agent.probe_level = level
        agent.probe_at = now
        return probing_detection(rule, level, agent_id, task_id, tool_name)


def probing_detection(rule: RateLimit, level: int, agent_id: str, task_id: str | None, tool_name: str) -> Detection:
    """Level 1 (probing.calls in the window): high; level 2 (twice that): critical."""
    return Detection("probing", "critical" if level == 2 else "high", agent_id, task_id, tool_name,
                     f"{rule.calls * level} or more calls to unknown or unlisted tools in {rule.per_s:g} s")
