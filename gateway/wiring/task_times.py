"""What Vault leases (gateway.credentials.leases) need of tasks: deadlines, and whether one is still active."""

from __future__ import annotations

from gateway.tasks.model import TaskState
from gateway.tasks.service import TaskService


class TaskTimes:
    def __init__(self, tasks: TaskService) -> None:
        self.tasks = tasks

    def deadline_of(self, task_id: str) -> float | None:
        task = self.tasks.get(task_id)
        return task.deadline if task is not None and task.state is TaskState.ACTIVE else None

    async def still_active(self, task_id: str) -> bool:
        if self.tasks.get(task_id) is None:  # started on another replica after this one loaded its tasks
            await self.tasks.refresh(task_id)
        return self.deadline_of(task_id) is not None
