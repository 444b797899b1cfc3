"""What Vault leases (gateway.credentials.leases) need of tasks: how long one may hold a lease, and if it is active."""

from __future__ import annotations

from gateway.tasks.model import Task, TaskEnded
from gateway.tasks.service import TaskService


class TaskTimes:
    def __init__(self, tasks: TaskService) -> None:
        self.tasks = tasks

    def deadline_of(self, task_id: str) -> float | None:
        """The task's deadline, or the soonest expiry of an agent in its chain if sooner, while the task may be
        used (active, its ancestors active, its agent effectively active); None otherwise. An agent's expiry
        passing fires no event, so this limit is what ends a lease then."""
        try:
            task = self.tasks.check(task_id)
        except TaskEnded:
            return None
        return min([task.deadline, *self.expiries(task)])

    def expiries(self, task: Task) -> list[float]:
        records = (self.tasks.registry.get(agent_id) for agent_id in task.chain_agents)
        return [agent.expires_at for agent in records if agent is not None and agent.expires_at is not None]

    async def still_active(self, task_id: str) -> bool:
        if self.tasks.get(task_id) is None:  # started on another replica after this one loaded its tasks
            await self.tasks.refresh(task_id)
        return self.deadline_of(task_id) is not None
