"""The verified-token cache: tokens already verified, by the SHA-256 of the token, until their expiry."""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable

V = TypeVar("V")


@runtime_checkable
class TokenCache(Protocol[V]):
    """What `get` returns was verified before and has not expired; None means "verify it again".

    Per process even in a fleet: a miss costs one signature check, never a wrong answer, so a shared
    implementation is optional; if there is one, it must never return an entry past its expiry, and
    when it is unreachable `get` answers None (verify locally) rather than fail the request.
    """

    def get(self, digest: bytes) -> V | None: ...

    def put(self, digest: bytes, value: V) -> None: ...

    def clear(self) -> None: ...

    def __len__(self) -> int: ...
