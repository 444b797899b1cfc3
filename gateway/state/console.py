"""Console sign-ins and the failed-sign-in throttle."""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable

SessionT = TypeVar("SessionT", covariant=True)
PersonT = TypeVar("PersonT", contravariant=True)


@runtime_checkable
class ConsoleSessions(Protocol[PersonT, SessionT]):
    """Signed-in people by session id. `get` answers only a live session (not past its absolute
    lifetime, its idle limit or its credential's expiry) and marks it used; a shared implementation
    keeps each session under a TTL equal to the sooner of the two limits, refreshed by `get`, writes
    back the one-shot messages a page added or showed (`keep_flashes`), and answers None (sign in
    again) when unreachable. Session ids are bearer secrets: a shared implementation keys by their
    hash, and keeps the person, never the credential they signed in with."""

    async def create(self, person: PersonT, credential_expires_at: float | None = None) -> SessionT: ...

    async def get(self, session_id: str | None) -> SessionT | None: ...

    async def keep_flashes(self, session_id: str, flashes: list[str]) -> None: ...

    async def delete(self, session_id: str | None) -> None: ...


@runtime_checkable
class LoginFailures(Protocol):
    """Failed sign-ins per client address in a sliding window. A shared implementation counts
    atomically (one round trip per check) and reports `blocked` when unreachable."""

    async def blocked(self, address: str) -> bool: ...

    async def retry_after_s(self, address: str) -> int: ...

    async def failed(self, address: str) -> None: ...
