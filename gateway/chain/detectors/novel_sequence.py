"""novel_sequence: a (previous tool -> tool) pair this agent has never used, once it has some history.

Judged before this call is recorded (the previous tool is the last one in the task, or the agent's
without a task); a pair is learned the first time it is seen, flagged or not.
"""

from __future__ import annotations

from gateway.chain.detectors.base import Detection
from gateway.chain.signals import DecidedCall
from gateway.settings.monitoring import MonitoringSettings

MAX_PAIRS = 256
NOVELTY_MIN_HISTORY = 10  # calls an agent must have made before a new tool pair is flagged


class NovelSequence:
    def __init__(self, settings: MonitoringSettings) -> None:
        self._enabled = settings.novel_sequence

    def judge(self, call: DecidedCall) -> Detection | None:
        agent, task = call.agent, call.task
        history = task.tools if task is not None else agent.tools
        if not history:
            return None
        name = call.tool.exposed_name
        pair = (history[-1], name)
        pairs = agent.pairs
        if pair in pairs:
            return None
        pairs[pair] = None
        if len(pairs) > MAX_PAIRS:
            del pairs[next(iter(pairs))]
        if not (self._enabled and agent.total_calls >= NOVELTY_MIN_HISTORY):
            return None
        return novel_detection(call.agent_id, call.task_id, pair[0], name)


def novel_detection(agent_id: str, task_id: str | None, previous: str, name: str) -> Detection:
    return Detection("novel_sequence", "low", agent_id, task_id, name,
                     f"tool sequence {previous} -> {name} never seen for this agent")
