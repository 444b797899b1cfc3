"""The upstream-token deny list: tasks and token ids whose per-call upstream tokens are refused."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class RevocationListUnavailable(Exception):
    """`snapshot` of a shared list whose local replica is not known to be current (GET /oauth/revocations: 503)."""


@runtime_checkable
class RevocationList(Protocol):
    """Entries live until `until` (epoch seconds), the moment every token they cover has expired anyway.

    Upstreams poll `snapshot` (GET /oauth/revocations); `is_revoked` answers for one token. Both stay
    synchronous: a shared implementation keeps a local replica (loaded whole, then kept current by
    change events; the list holds only the last minute's entries) and, while that replica is not known
    to be current, answers `is_revoked` with True and `snapshot` with an error rather than a list that
    may miss entries (fail closed). `revoke_*` apply locally at once; a shared implementation writes
    through in the background and retries until the write is acknowledged.
    """

    def revoke_task(self, task_id: str, until: float) -> None: ...

    def revoke_jti(self, jti: str, until: float) -> None: ...

    def is_revoked(self, task_id: str | None, jti: str | None = None) -> bool: ...

    def snapshot(self) -> dict[str, Any]:
        """The body of GET /oauth/revocations: {"tasks": [...], "jtis": [...], "generated_at": t};
        RevocationListUnavailable when it may miss entries."""
        ...

    def __len__(self) -> int: ...
