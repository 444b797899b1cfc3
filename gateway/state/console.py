"""Console sign-ins and the failed-sign-in throttle."""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable

SessionT = TypeVar("SessionT", covariant=True)
PersonT = TypeVar("PersonT", contravariant=True)


@runtime_checkable
class ConsoleSessions(Protocol[PersonT, SessionT]):
    """Signed-in people by session id. `get` answers only a live session (not past its absolute
    lifetime, its idle limit or its credential's expiry) and marks it used; a shared implementation
    keeps each session under a TTL equal to the sooner of the two limits, refreshed by `get`, and
    answers None (sign in again) when unreachable."""

    def create(self, person: PersonT, credential_expires_at: float | None = None) -> SessionT: ...

    def get(self, session_id: str | None) -> SessionT | None: ...

    def delete(self, session_id: str | None) -> None: ...


@runtime_checkable
class LoginFailures(Protocol):
    """Failed sign-ins per client address in a sliding window. A shared implementation counts
    atomically (one round trip per check) and reports `blocked` when unreachable."""

    def blocked(self, address: str) -> bool: ...

    def retry_after_s(self, address: str) -> int: ...

    def failed(self, address: str) -> None: ...
