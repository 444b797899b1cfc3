"""repeated_denials: repeated_denials.calls denials for this agent in repeated_denials.per_s, counting
this call; judged on denied calls only.

Fires once per onset and re-arms once the window has passed since it fired.
"""

from __future__ import annotations

from gateway.chain.detectors.base import Detection
from gateway.chain.signals import NO_TIMES, DecidedCall, reached
from gateway.settings.monitoring import MonitoringSettings, RateLimit


class RepeatedDenials:
    def __init__(self, settings: MonitoringSettings) -> None:
        self._rule = settings.repeated_denials

    def judge(self, call: DecidedCall) -> Detection | None:
        if call.outcome != "deny":
            return None
        rule, agent, now = self._rule, call.agent, call.now
        if agent.denials_at is not None and now - agent.denials_at >= rule.per_s:
            agent.denials_at = None
        if agent.denials_at is not None or not reached(agent.denials or NO_TIMES, rule.calls, now - rule.per_s):
            return None
        agent.denials_at = now
        return denials_detection(rule, call.agent_id, call.task_id, call.tool.exposed_name)


def denials_detection(rule: RateLimit, agent_id: str, task_id: str | None, tool: str) -> Detection:
    return Detection("repeated_denials", "high", agent_id, task_id, tool,
                     f"{rule.calls} or more denials in {rule.per_s:g} s")
