"""burst: more than burst.calls decided calls by this agent in burst.per_s, counting this call.

Fires once per onset and re-arms once burst.per_s has passed since it fired.
"""

from __future__ import annotations

from gateway.chain.detectors.base import Detection
from gateway.chain.signals import DecidedCall, reached
from gateway.settings.monitoring import MonitoringSettings, RateLimit


class Burst:
    def __init__(self, settings: MonitoringSettings) -> None:
        self._rule = settings.burst

    def judge(self, call: DecidedCall) -> Detection | None:
        rule, agent, now = self._rule, call.agent, call.now
        if agent.burst_at is not None and now - agent.burst_at >= rule.per_s:
            agent.burst_at = None
        if agent.burst_at is not None or not reached(agent.calls, rule.calls + 1, now - rule.per_s):
            return None
        agent.burst_at = now
        return burst_detection(rule, call.agent_id, call.task_id, call.tool.exposed_name)


def burst_detection(rule: RateLimit, agent_id: str, task_id: str | None, tool: str) -> Detection:
    return Detection("burst", "high", agent_id, task_id, tool, f"more than {rule.calls} calls in {rule.per_s:g} s")
