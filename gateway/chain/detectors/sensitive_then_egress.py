"""sensitive_then_egress: an egress call after a sensitive read by this task (any time in its life) or by
this agent in any of its tasks within `window_s`: a new task does not shed the agent's reads.

Fires once per sensitive read, whichever task the egress comes from. Egress: the catalog's `egress` flag,
or the configured servers / tools. Critical when the call went through without a person's approval (data
may have left); high when policy held it or a person approved it. Judged on what was read before this call.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gateway.chain.detectors.base import Detection
from gateway.chain.signals import DecidedCall, is_person_scope, own_sensitive_at
from gateway.settings.monitoring import MonitoringSettings

if TYPE_CHECKING:
    from gateway.catalog.model import ToolEntry


class SensitiveThenEgress:
    def __init__(self, settings: MonitoringSettings) -> None:
        self._window_s = settings.window_s
        self._egress_servers = frozenset(settings.egress_servers)
        self._egress_tools = frozenset(settings.egress_tools)

    def judge(self, call: DecidedCall) -> Detection | None:
        tool = call.tool
        name = tool.exposed_name
        if not self.is_egress(tool):
            return None
        agent, task, now = call.agent, call.task, call.now
        own = own_sensitive_at(task, call.task_id, now, self._window_s) if task is not None else None
        in_task = own if own is not None else -math.inf
        # A person's record (person_scope) is theirs alone: another person's read through the same client is not
        # theirs to answer, so only their own reads count (within window_s; a new record starts with the client's
        # read in the window, signals.inherited_sensitive_at), answered on their own record.
        person = task if task is not None and is_person_scope(call.task_id) else None
        by_agent = agent.sensitive_at if person is None else None
        recent = by_agent if by_agent is not None and by_agent > now - self._window_s else -math.inf
        onset = max(in_task, recent)
        answered = agent if person is None else person
        if onset <= answered.egress_answered:
            return None  # nothing read, or this read was already answered
        answered.egress_answered = onset
        return self.detection(call.agent_id, call.task_id, name, call.outcome, in_task=onset == in_task)

    def is_egress(self, tool: ToolEntry) -> bool:
        return tool.egress or tool.server_id in self._egress_servers or tool.exposed_name in self._egress_tools

    def detection(self, agent_id: str, task_id: str | None, name: str, outcome: str, *, in_task: bool) -> Detection:
        """`in_task`: the read being answered was this task's own (else the agent's, within window_s)."""
        # A person who approved this very call saw why it asked: contained, like a held attempt.
        severity = "critical" if outcome == "allow" else "high"
        where = ("in this task" if in_task
                 else f"by this agent within {self._window_s:g} s" + (", outside this task" if task_id else ""))
        return Detection("sensitive_then_egress", severity, agent_id, task_id, name,
                         f"egress tool {name} called ({outcome}) after sensitive data was read {where}")
