"""Console sign-ins kept in memory: who is signed in, since when, and the CSRF token of each session.

A session id is 32 random bytes (URL-safe base64) handed to the browser in an HttpOnly cookie; the
server keeps only the Approver it stands for, never the credential that was pasted to sign in. A
session ends at the first of: its absolute lifetime, `idle_s` without a request, the credential's
own expiry (for an OIDC token), or logout. Sessions do not survive a restart: people sign in again.
(In a fleet, gateway.cluster.console keeps them in Redis instead: any replica serves them.)

Failed sign-ins are throttled per client address (`LoginThrottle`), so a console reachable by many
cannot be used to guess credentials.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.approvals.model import Approver

Clock = Callable[[], float]
MAX_SESSIONS = 10_000  # a flood of sign-ins cannot grow memory without bound
MAX_FLASHES = 5
MAX_TRACKED_ADDRESSES = 10_000


@dataclass(slots=True)
class ConsoleSession:
    id: str
    person: Approver
    csrf: str  # every POST form carries it (checked with gateway.console.security.tokens_match)
    expires_at: float  # absolute: created + TTL, or the credential's expiry when sooner
    last_seen: float
    flashes: list[str] = field(default_factory=list)  # one-shot messages for the next page

    def flash(self, message: str) -> None:
        self.flashes = [*self.flashes, message][-MAX_FLASHES:]

    def take_flashes(self) -> list[str]:
        taken, self.flashes = self.flashes, []
        return taken


class SessionStore:
    def __init__(self, ttl_s: float, idle_s: float, clock: Clock = time.time) -> None:
        self.ttl_s = ttl_s
        self.idle_s = idle_s
        self.clock = clock
        self._sessions: dict[str, ConsoleSession] = {}

    async def create(self, person: Approver, credential_expires_at: float | None = None) -> ConsoleSession:
        now = self.clock()
        self._prune(now)
        expires = now + self.ttl_s
        if credential_expires_at is not None:
            expires = min(expires, credential_expires_at)  # a session never outlives its credential
        session = ConsoleSession(id=secrets.token_urlsafe(32), person=person, csrf=secrets.token_urlsafe(32),
                                 expires_at=expires, last_seen=now)
        self._sessions[session.id] = session
        return session

    async def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session with this id (and mark it used now); None if unknown, expired or idle."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if not self._alive(session, now):
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    async def keep_flashes(self, session_id: str, flashes: list[str]) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.flashes = list(flashes)

    async def delete(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def _alive(self, session: ConsoleSession, now: float) -> bool:
        return now < session.expires_at and now - session.last_seen < self.idle_s

    def _prune(self, now: float) -> None:
        for session_id in [s.id for s in self._sessions.values() if not self._alive(s, now)]:
            del self._sessions[session_id]
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.id]


class LoginThrottle:
    """At most `limit` sign-in attempts per address in any `window_s` that did not succeed; an
    attempt counts from the moment it is admitted (see state.console.LoginFailures)."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[tuple[float, str]]] = {}
        self._tickets = itertools.count()

    async def attempt(self, address: str) -> str | None:
        if len(self._recent(address)) >= self.limit:
            return None
        if address not in self._failures and len(self._failures) >= MAX_TRACKED_ADDRESSES:
            self._forget_quiet()
        ticket = str(next(self._tickets))
        self._failures.setdefault(address, deque()).append((self.clock(), ticket))
        return ticket

    async def succeeded(self, address: str, ticket: str) -> None:
        failures = self._failures.get(address)
        if failures is not None:
            kept = [entry for entry in failures if entry[1] != ticket]
            failures.clear()
            failures.extend(kept)

    async def retry_after_s(self, address: str) -> int:
        recent = self._recent(address)
        if not recent:
            return 0
        return max(1, int(recent[0][0] + self.window_s - self.clock()) + 1)

    def _recent(self, address: str) -> deque[tuple[float, str]]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()  # checking an address that never failed must not start tracking it
        cutoff = self.clock() - self.window_s
        while failures and failures[0][0] <= cutoff:
            failures.popleft()
        return failures

    def _forget_quiet(self) -> None:
        cutoff = self.clock() - self.window_s
        for address in [a for a, f in self._failures.items() if not f or f[-1][0] <= cutoff]:
            del self._failures[address]
        if len(self._failures) >= MAX_TRACKED_ADDRESSES:
            # Still full of recent failures: drop the oldest address rather than grow without bound.
            del self._failures[min(self._failures, key=lambda a: self._failures[a][-1][0])]
