"""The revocation deny-list: tasks (and single tokens) whose upstream tokens must no longer be honoured.

Entries live only until `until`, the moment every token they cover has expired anyway (the end of
the task + the longest upstream token lifetime), so the list stays as small as the number of tasks
that ended in the last minute. Upstreams poll it (`GET /oauth/revocations`, see snapshot()) through
gateway.verifier; the gateway checks it itself before minting.

In memory and per process: one gateway replica is the embedded default; with several replicas the
Redis-backed variant pushes the same entries everywhere (later issue).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Revocations:
    """Not thread-safe by design: the gateway touches it from its one event loop only."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tasks: dict[str, float] = {}
        self._jtis: dict[str, float] = {}

    def revoke_task(self, task_id: str, until: float) -> None:
        """Deny every token of `task_id` until `until` (epoch seconds). A later `until` wins."""
        self._purge()
        self._tasks[task_id] = max(until, self._tasks.get(task_id, until))

    def revoke_jti(self, jti: str, until: float) -> None:
        """Deny one token until `until` (normally its exp)."""
        self._purge()
        self._jtis[jti] = max(until, self._jtis.get(jti, until))

    def is_revoked(self, task_id: str | None, jti: str | None = None) -> bool:
        """O(1), no purge: this runs per call. An entry past its `until` no longer counts."""
        now = self._clock()
        if task_id is not None and self._tasks.get(task_id, now) > now:
            return True
        return jti is not None and self._jtis.get(jti, now) > now

    def snapshot(self) -> dict[str, Any]:
        """The body of GET /oauth/revocations: live entries only, each with the time it may be forgotten."""
        self._purge()
        return {
            "tasks": [{"id": task_id, "until": until} for task_id, until in self._tasks.items()],
            "jtis": [{"id": jti, "until": until} for jti, until in self._jtis.items()],
            "generated_at": self._clock(),
        }

    def __len__(self) -> int:
        return len(self._tasks) + len(self._jtis)

    def _purge(self) -> None:
        # O(entries), run on revoke/snapshot only; entries leave within a minute, so it stays small.
        now = self._clock()
        for table in (self._tasks, self._jtis):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]
