"""What tool reviews and resource reviews share: records kept in memory and written in batches, who
may decide one, and how a person's decision is checked and stored."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import Field, replace
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from gateway.approvals.model import Approver
from gateway.audit import AuditLog
from gateway.discovery.model import APPROVED, QUARANTINED, DefinitionChanged, NotTheToolOwner, ReviewError
from gateway.events import AsyncObservers
from gateway.store.base import Store

Clock = Callable[[], float]
log = logging.getLogger("narrowgate.discovery")


class Reviewed(Protocol):
    """The fields every review record has (ToolReview, ResourceReview); read-only, as the records are frozen."""

    __dataclass_fields__: ClassVar[dict[str, Field[object]]]  # a dataclass, so `replace` works on it

    @property
    def status(self) -> str: ...

    @property
    def owner(self) -> str: ...

    @property
    def server_id(self) -> str: ...

    @property
    def comment(self) -> str | None: ...

    @property
    def current_hash(self) -> str: ...

    @property
    def current_definition(self) -> dict[str, Any]: ...

    @property
    def approved_by(self) -> str | None: ...


R = TypeVar("R", bound=Reviewed)
K = TypeVar("K", bound=Hashable)  # how a subclass keys its records


class ReviewRecords(ABC, Generic[K, R]):
    # Who reviews, in refusals: "the tool's owner", "the server's owner".
    owner_label = "the owner"
    # The audit actions of a decision: "<noun>_approved", "<noun>_rejected".
    audit_noun = "review"

    def __init__(self, store: Store, audit: AuditLog, clock: Clock = time.time) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock
        self.records: dict[K, R] = {}
        self.unsaved: dict[K, R] = {}
        # After every person's decision, from any surface (rebuild what agents see, tell them).
        self.on_decided: AsyncObservers[[]] = []

    # storage: subclasses say how a record is keyed, read and written

    @staticmethod
    @abstractmethod
    def key_of(review: R) -> K: ...

    @abstractmethod
    async def read(self) -> list[R]: ...

    @abstractmethod
    async def write(self, reviews: list[R]) -> None: ...

    # audit: subclasses say how a record is named and recorded

    @abstractmethod
    def describe(self, review: R) -> str: ...

    @abstractmethod
    def _record(self, review: R, action: str, actor: str, detail: dict[str, Any] | None = None) -> None: ...

    async def open(self) -> None:
        for review in await self.read():
            self.records[self.key_of(review)] = review

    async def reread(self) -> None:
        """The store's records over this replica's copies, except those changed here and not saved yet
        (saved next, they are this replica's newer view of an upstream's listing)."""
        for review in await self.read():
            key = self.key_of(review)
            if key not in self.unsaved:
                self.records[key] = review

    def _keep(self, review: R) -> None:
        self.records[self.key_of(review)] = review
        self.unsaved[self.key_of(review)] = review

    async def save(self) -> None:
        """Write records changed since the last save (reconcile runs where it cannot await)."""
        pending, self.unsaved = self.unsaved, {}
        if pending:
            try:
                await self.write(list(pending.values()))
            except Exception:
                self.unsaved = {**pending, **self.unsaved}
                raise

    def settle(self, review: R, by: str, reverted: bool) -> R:
        """`review` approved without a person (a pin, first sight, a revert) and kept. Back to a definition
        a person approved, it stays theirs (a pin then does not override it)."""
        settled = replace(review, status=APPROVED, approved_hash=review.current_hash,
                          approved_definition=review.current_definition, reviewed_by=by,
                          approved_by=review.approved_by if reverted else by,
                          reviewed_at=self.clock(), flags=())
        self._keep(settled)
        return settled

    # people's decisions

    def refusal(self, review: R, person: Approver) -> str | None:
        """The owner (by name or group) and admins review; nobody else."""
        if person.is_admin or person.name == review.owner or review.owner in person.groups:
            return None
        return f"only {self.owner_label} ({review.owner}) or an admin may review it"

    def decidable(self, review: R, person: Approver, expected_hash: str | None, what: str) -> R:
        """`review`, if this person may decide it now against the definition they saw; ReviewError if not."""
        refusal = self.refusal(review, person)
        if refusal is not None:
            raise NotTheToolOwner(refusal)
        if review.status != QUARANTINED:
            raise ReviewError(f"{what} is {review.status}, not waiting for review")
        if expected_hash is not None and expected_hash != review.current_hash:
            raise DefinitionChanged(f"{what} changed again since you looked (now {review.current_hash}); "
                                    "review the new definition")
        return review

    async def store_decision(self, review: R, status: str, person: Approver, comment: str) -> R:
        """The decided record, written at once (an older, unsaved state of it must not overwrite it)."""
        now = self.clock()
        decided = replace(review, status=status, reviewed_by=person.actor, reviewed_at=now,
                          comment=comment.strip()[:2000] or None, changed_at=now)
        if status == APPROVED:
            decided = replace(decided, approved_hash=review.current_hash,
                              approved_definition=review.current_definition, approved_by=person.actor)
        await self.write([decided])
        self.records[self.key_of(decided)] = decided
        self.unsaved.pop(self.key_of(decided), None)
        return decided

    async def _decide(self, review: R, status: str, person: Approver, comment: str) -> R:
        """Store a person's decision, audit and log it, then tell the observers."""
        decided = await self.store_decision(review, status, person, comment)
        outcome = "approved" if status == APPROVED else "rejected"
        self._record(decided, f"{self.audit_noun}_{outcome}", person.actor,
                     {"comment": decided.comment} if decided.comment else None)
        log.info("%s of %s %s by %s", self.describe(review), review.server_id, status, person.actor)
        await self.decided()
        return decided

    async def decided(self) -> None:
        for observer in self.on_decided:
            await observer()
