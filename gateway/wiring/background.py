"""Work an event handler starts and does not wait for; the stop waits for all of it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine


class Background:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def run(self, work: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def finish(self) -> None:
        """Wait for everything started so far (failures were logged where they happened)."""
        await asyncio.gather(*self.tasks, return_exceptions=True)
