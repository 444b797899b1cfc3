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
    """Sign-in attempts per client address in a sliding window, counted BEFORE the credential is
    checked: `attempt` reserves one (counted as a failure unless `succeeded` takes it back) and
    answers None at the limit, so a burst of concurrent guesses can never pass the limit between a
    check and a count. A shared implementation does the check-and-reserve in one atomic round trip
    and answers None when unreachable (no credential is tried uncounted)."""

    async def attempt(self, address: str) -> str | None: ...

    async def succeeded(self, address: str, ticket: str) -> None: ...

    async def retry_after_s(self, address: str) -> int: ...
