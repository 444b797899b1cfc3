"""The admit stage: the task gate. A tool outside the caller's task (or any tool, for an agent that
needs a task and came without one) stops here, before policy; asking for it is a probing signal."""

from __future__ import annotations

from gateway.calls.call import ToolCall
from gateway.chain.monitor import ChainMonitor
from gateway.protocol.errors import RpcError
from gateway.tasks.gate import TaskGate
from gateway.tasks.model import Task


class Admit:
    def __init__(self, tasks: TaskGate, monitor: ChainMonitor) -> None:
        self.tasks = tasks
        self.monitor = monitor

    async def __call__(self, call: ToolCall) -> Task | None:
        """The caller's task (None without one), once the tool is part of its grant."""
        try:
            return self.tasks.admit(call.principal, call.name)
        except RpcError:
            if call.principal.task_id is not None:
                await self.monitor.probe(call.principal, call.name)  # a tool outside the task
            raise

    async def consume(self, call: ToolCall) -> None:
        """After the decision let it through: the call counts against its task's budget."""
        await self.tasks.consume(call.principal)
