"""Reconcile what upstreams list with what was reviewed, and apply reviewers' decisions.

Every tool an upstream lists has a review record keyed by (server, upstream name), holding the
hash of its definition now and of the definition last approved. A tool is approved when its
current definition is the approved one, matches the manifest's `definition_sha256` pin, or is a
catalogued tool without a pin seen for the first time (trust on first sight: pin it to close that
gap). Anything else (a tool the catalog does not list, or a definition that changed) is
quarantined: it gets its Cedar entity at once with status `quarantined`, is never listed to
agents, and calls to it are decided by Cedar (the shipped policies deny). A reviewer approves
(choosing risk and data classes for a discovered tool) or rejects it.

`effective()` returns the static catalog plus every reviewed tool with its status; the upstream
pool builds its directory from that, and the policy engine its schema and entities.

An upstream decides which names it lists, so what it can make the gateway keep is bounded: at most
`max_pending` undecided reviews of tools the manifest does not list per server (a new name beyond
that is refused: never listed, never callable, recorded), and an undecided one the upstream stopped
listing is dropped from memory after `forget_after_s` (its record stays in the store; if the name
comes back it is quarantined as new).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any, cast

from gateway.approvals.model import Approver
from gateway.audit import AuditEvent, AuditLog
from gateway.catalog.definitions import claimed_risk, definition_hash, definition_of
from gateway.catalog.loader import TOOL_NAME_PATTERN
from gateway.catalog.model import RISK_TIERS, Catalog, Risk, ServerEntry, ToolEntry
from gateway.catalog.review_flags import flag_definition
from gateway.discovery.model import (
    APPROVED,
    CAP_REACHED,
    QUARANTINED,
    REJECTED,
    ReviewError,
    ReviewNotFound,
    ToolReview,
    by_person,
)
from gateway.discovery.records import Clock, ReviewRecords
from gateway.events import Observers
from gateway.store.base import Store

log = logging.getLogger("narrowgate.discovery")
PINNED = "catalog pin"
UNANALYSABLE = "unanalysable"  # the current_hash of a definition too deep to hash
FIRST_SEEN = "catalog (first seen, not pinned)"
REVERTED = "narrowgate (definition back to the approved one)"


class ToolReviews(ReviewRecords[tuple[str, str], ToolReview]):
    owner_label = "the tool's owner"
    audit_noun = "tool"

    def __init__(self, store: Store, audit: AuditLog, clock: Clock = time.time, *,
                 max_pending: int = 500, forget_after_s: float = 86_400.0) -> None:
        super().__init__(store, audit, clock)
        self.on_quarantined: Observers[[ToolReview]] = []  # new review items (webhook)
        self.max_pending = max_pending  # undecided reviews of uncatalogued tools kept per server
        self.forget_after_s = forget_after_s
        # Definitions analysed at the last reconcile, by id: only what upstreams list now is kept.
        self._analyses: dict[int, tuple[dict[str, Any], str, dict[str, Any]]] = {}
        self._analysing: dict[int, tuple[dict[str, Any], str, dict[str, Any]]] = {}
        self._unlisted_since: dict[tuple[str, str], float] = {}  # undecided reviews no longer listed
        self._refused: dict[str, frozenset[str]] = {}  # per server: new names refused at its last listing

    @staticmethod
    def key_of(review: ToolReview) -> tuple[str, str]:
        return review.key

    async def write(self, reviews: list[ToolReview]) -> None:
        await self.store.save_tool_reviews(reviews)

    async def read(self) -> list[ToolReview]:
        """Every decided record, and the newest `max_pending` undecided ones of each server (the rest
        stay in the store; a name of them that is listed again is quarantined as new)."""
        reviews = await self.store.load_tool_reviews()
        undecided = sorted((r for r in reviews if undecided_discovery(r)), key=lambda r: -r.changed_at)
        kept: dict[str, int] = {}
        dropped: set[tuple[str, str]] = set()
        for review in undecided:
            kept[review.server_id] = kept.get(review.server_id, 0) + 1
            if kept[review.server_id] > self.max_pending:
                dropped.add(review.key)
        return [r for r in reviews if r.key not in dropped]

    # reconciling upstream lists (synchronous: runs inside the pool's rebuild)

    def reconcile(self, catalog: Catalog, listed: Mapping[str, list[dict[str, Any]]]) -> bool:
        """Bring the records in line with what each upstream (that answered) lists; True if any changed."""
        changed = False
        pending = Counter(r.server_id for r in self.records.values() if undecided_discovery(r))
        names: dict[str, set[str]] = {}  # per server that answered: the names it lists now
        for server_id, tools in listed.items():
            server = catalog.servers.get(server_id)
            if server is None:
                continue
            others = _other_tools(catalog, listed, server_id)
            names[server_id] = set()
            changed = self._reconcile_server(server, tools, others, pending[server_id], names[server_id]) or changed
        self._analyses, self._analysing = self._analysing, {}
        return self._forget_unlisted(names) or changed

    def _reconcile_server(self, server: ServerEntry, tools: list[dict[str, Any]], others: dict[str, str],
                          pending: int, names: set[str]) -> bool:
        """Observe what one server lists (collecting its names); a new name over the cap is refused."""
        changed = False
        refused: set[str] = set()
        for definition in tools:
            name = definition.get("name")
            if not isinstance(name, str) or not name:
                continue
            names.add(name)
            new = (server.id, name) not in self.records and name not in server.tools
            if new and pending >= self.max_pending:
                refused.add(name)  # fail closed: no record, so never in the effective catalog
                continue
            changed = self._observe(server, name, definition, others) or changed
            pending += new
        self._note_refused(server, refused)
        return changed

    def _note_refused(self, server: ServerEntry, refused: set[str]) -> None:
        """Record each newly refused name once; log and notify once when a server reaches the cap."""
        before = self._refused.pop(server.id, frozenset())
        if not refused:
            return
        self._refused[server.id] = frozenset(refused)
        fresh = sorted(refused - before)
        for name in fresh:
            self.audit.record(AuditEvent(kind="catalog", action="tool_refused", actor="narrowgate",
                                         tool=server.exposed(name), detail={
                                             "server": server.id, "name": name, "reason": CAP_REACHED,
                                             "max_pending_reviews_per_server": self.max_pending}))
        if before or not fresh:
            return
        log.warning("server %s has %d tools waiting for review (discovery.max_pending_reviews_per_server): "
                    "new tool names it lists are refused until some are reviewed or it stops listing them",
                    server.id, self.max_pending)
        notice = ToolReview(server.id, fresh[0], server.exposed(fresh[0]), REJECTED, "discovered", "", {},
                            reviewed_by="narrowgate (review cap reached)", owner=server.owner, flags=({
                                "code": CAP_REACHED, "severity": "high",
                                "message": f"{self.max_pending} tools of this server wait for review; "
                                           "new names are refused until some are reviewed"},))
        for observer in self.on_quarantined:
            observer(notice)

    def _forget_unlisted(self, listed: dict[str, set[str]]) -> bool:
        """Drop undecided reviews their server (one that answered) has not listed for `forget_after_s`
        from memory, not from the store."""
        now = self.clock()
        forgotten = []
        for key, review in self.records.items():
            names = listed.get(key[0])
            if names is None:
                continue  # the server did not answer: nothing is known about what it lists
            if key[1] in names or not undecided_discovery(review):
                self._unlisted_since.pop(key, None)
            elif now - self._unlisted_since.setdefault(key, now) >= self.forget_after_s:
                forgotten.append(review)
        for review in forgotten:
            del self.records[review.key]
            del self._unlisted_since[review.key]
            self._record(review, "tool_review_forgotten", "narrowgate")
        if forgotten:
            log.info("%d undecided tools no longer listed dropped from memory (kept in the store): %s",
                     len(forgotten), ", ".join(f"{r.server_id}/{r.name}" for r in forgotten[:20]))
        return bool(forgotten)

    def _observe(self, server: ServerEntry, name: str, definition: dict[str, Any], others: dict[str, str]) -> bool:
        try:
            current, seen = self._analysed(definition)
        except (ValueError, RecursionError):  # cannot be analysed: it can only ever be quarantined
            current, seen = UNANALYSABLE, {"name": name}
        entry = server.tools.get(name)
        record = self._as_listed_in_manifest(self.records.get((server.id, name)), entry)
        if record is not None and record.current_hash == current and record is self.records.get(record.key):
            return self._recheck(record, entry)
        now = self.clock()
        base = record or ToolReview(server.id, name, server.exposed(name), QUARANTINED,
                                    "catalog" if entry is not None else "discovered", current, seen,
                                    first_seen=now, owner=entry.owner if entry else server.owner)
        fresh = record is None and (entry is None or entry.pin is None)  # else: differs from what was approved
        moved = replace(base, current_hash=current, current_definition=seen, changed_at=now,
                        change="new" if fresh else "changed")
        verdict = self._verdict(moved, record, entry)
        if verdict is not None:
            return self._settle(moved, verdict)
        return self._quarantine(moved, definition, others, record)

    def _analysed(self, definition: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """definition_hash and definition_of, remembered per listed definition object: a rebuild after
        one upstream's change does not hash the thousands of definitions other upstreams listed before."""
        known = self._analyses.get(id(definition))
        if known is None or known[0] is not definition:  # the object itself is kept, so its id is its own
            known = (definition, definition_hash(definition), definition_of(definition))
        self._analysing[id(definition)] = known
        return known[1], known[2]

    @staticmethod
    def _as_listed_in_manifest(record: ToolReview | None, entry: ToolEntry | None) -> ToolReview | None:
        """The record as the manifest now stands: a tool taken out of it is unreviewed again, one put
        back is the manifest's (its risk, data classes and owner) again."""
        if record is None:
            return None
        if record.origin == "catalog" and entry is None:
            return replace(record, origin="discovered", risk=None, data_classes=(), egress=False,
                           approved_hash=None, approved_definition=None, approved_by=None)
        if record.origin == "discovered" and entry is not None:
            return replace(record, origin="catalog", risk=None, data_classes=(), egress=False, owner=entry.owner)
        return record

    def _recheck(self, record: ToolReview, entry: ToolEntry | None) -> bool:
        """The same definition as last time: only the manifest's pin can change its status."""
        if entry is None or entry.pin is None:
            return False
        if record.status == QUARANTINED and entry.pin == record.current_hash:
            return self._settle(record, PINNED)  # the manifest's pin was updated to it
        if record.status == APPROVED and entry.pin != record.current_hash and not by_person(record.approved_by):
            # Approved on first sight (not by a person), and the manifest now pins another definition.
            return self._quarantine(replace(record, change="changed", approved_hash=entry.pin, approved_definition=None,
                                            approved_by=PINNED, changed_at=self.clock()),
                                    record.current_definition, {}, record)
        return False

    @staticmethod
    def _verdict(moved: ToolReview, record: ToolReview | None, entry: ToolEntry | None) -> str | None:
        """How a new or changed definition is approved without a person, or None (quarantine)."""
        current = moved.current_hash
        if current == UNANALYSABLE:
            return None
        if entry is not None and entry.pin is not None:
            if current == entry.pin:
                return PINNED
            # A pin decides, unless a person approved exactly this definition since (pin it next).
            reverted = record is not None and current == record.approved_hash and by_person(record.approved_by)
            return REVERTED if reverted else None
        if record is not None and current == record.approved_hash:
            return REVERTED
        if entry is not None and record is None:
            return FIRST_SEEN
        return None

    def _quarantine(self, moved: ToolReview, definition: dict[str, Any], others: dict[str, str],
                    record: ToolReview | None) -> bool:
        if moved.current_hash == UNANALYSABLE:
            flags = [{"code": "unanalysable", "severity": "high",
                      "message": "the definition is nested too deeply to analyse or hash; it cannot be approved"}]
        else:
            found = flag_definition(definition, server_id=moved.server_id, other_tools=others,
                                    previous=record.approved_definition if record else None)
            flags = [{"code": f.code, "severity": f.severity, "message": f.message} for f in found]
        status, reviewed_by = QUARANTINED, None
        if not TOOL_NAME_PATTERN.fullmatch(moved.name):
            flags.append({"code": "invalid_name", "severity": "high",
                          "message": "the name is not a valid tool name; it is never callable"})
            status, reviewed_by = REJECTED, "narrowgate (invalid tool name)"  # nothing to review
        quarantined = replace(moved, status=status, reviewed_by=reviewed_by, reviewed_at=None, comment=None,
                              flags=tuple(flags))
        self._keep(quarantined)
        self._record(quarantined, "tool_quarantined", "narrowgate")
        log.warning("tool %s of %s quarantined (%s definition%s); review it with `narrowgate catalog review`",
                    moved.name, moved.server_id, quarantined.change,
                    f", flags: {', '.join(f['code'] for f in quarantined.flags)}" if quarantined.flags else "")
        for observer in self.on_quarantined:
            observer(quarantined)
        return True

    def _settle(self, review: ToolReview, by: str) -> bool:
        settled = self.settle(review, by, reverted=by == REVERTED)
        if by != FIRST_SEEN:
            self._record(settled, "tool_approved", "narrowgate", {"by": by})
        return True

    # the effective catalog

    def effective(self, catalog: Catalog) -> Catalog:
        # A discovered tool never takes a name that the catalog (any server) already gives agents.
        taken = set(catalog.tools)
        servers = [self._server(server, taken) for server in catalog.servers.values()]
        return Catalog.of(servers)

    def _server(self, server: ServerEntry, taken: set[str]) -> ServerEntry:
        tools = dict(server.tools)
        for (server_id, name), review in sorted(self.records.items()):
            if server_id != server.id:
                continue
            entry = tools.get(name)
            if entry is not None:
                tools[name] = replace(entry, status=review.status)
            elif (review.origin == "discovered" and review.exposed_name not in taken
                  and TOOL_NAME_PATTERN.fullmatch(name) and review.current_hash != UNANALYSABLE):
                taken.add(review.exposed_name)
                tools[name] = self._discovered_entry(server, review)
        return replace(server, tools=MappingProxyType(tools))

    @staticmethod
    def _discovered_entry(server: ServerEntry, review: ToolReview) -> ToolEntry:
        return ToolEntry(name=review.name, exposed_name=review.exposed_name, server_id=server.id,
                         # approve() admits only RISK_TIERS; claimed_risk() returns one of them
                         risk=cast(Risk, review.risk or claimed_risk(review.current_definition)),
                         data_classes=review.data_classes, owner=review.owner or server.owner,
                         egress=review.egress, status=review.status)

    # reviewers

    def list(self, status: str | None = None) -> list[ToolReview]:
        reviews = sorted(self.records.values(), key=lambda r: (-r.changed_at, r.server_id, r.name))
        return [r for r in reviews if status is None or r.status == status]

    def get(self, server_id: str, name: str) -> ToolReview:
        review = self.records.get((server_id, name))
        if review is None:
            raise ReviewNotFound(f"no tool {name!r} on server {server_id!r}")
        return review

    async def approve(self, key: tuple[str, str], person: Approver, *, expected_hash: str | None = None,
                      risk: str | None = None, data_classes: Sequence[str] | None = None, egress: bool | None = None,
                      comment: str = "") -> ToolReview:
        review = self.check(key, person, expected_hash)
        if review.current_hash == UNANALYSABLE or not TOOL_NAME_PATTERN.fullmatch(review.name):
            raise ReviewError(f"tool {review.exposed_name} cannot be approved: see its flags")
        if review.origin == "catalog" and (risk is not None or data_classes is not None or egress is not None):
            raise ReviewError("a catalogued tool's risk, data classes and egress come from its manifest; edit it")
        if review.origin == "discovered":
            if risk not in RISK_TIERS:
                raise ReviewError(f"choose a risk tier for a discovered tool: {', '.join(RISK_TIERS)}")
            review = replace(review, risk=risk, data_classes=tuple(data_classes or ()), egress=bool(egress))
        return await self._decide(review, APPROVED, person, comment)

    async def reject(self, key: tuple[str, str], person: Approver, *, expected_hash: str | None = None,
                     comment: str = "") -> ToolReview:
        return await self._decide(self.check(key, person, expected_hash), REJECTED, person, comment)

    def check(self, key: tuple[str, str], person: Approver, expected_hash: str | None) -> ToolReview:
        """The record, if this person may decide it now against the definition they saw; ReviewError if not."""
        review = self.get(*key)
        return self.decidable(review, person, expected_hash, f"tool {review.exposed_name}")

    def describe(self, review: ToolReview) -> str:
        return f"tool {review.name}"

    def _record(self, review: ToolReview, action: str, actor: str, detail: dict[str, Any] | None = None) -> None:
        self.audit.record(AuditEvent(
            kind="catalog", action=action, actor=actor, tool=review.exposed_name, detail={
                "server": review.server_id, "name": review.name, "status": review.status, "change": review.change,
                "definition_sha256": review.current_hash, "approved_sha256": review.approved_hash,
                "flags": [f["code"] for f in review.flags], **(detail or {})},
        ))


def undecided_discovery(review: ToolReview) -> bool:
    """A review an upstream made by listing a name the manifest does not have, which no person has decided
    and which was never approved: the kind an upstream can make more of, so the kind that is bounded."""
    if review.origin != "discovered" or review.approved_hash is not None:
        return False
    return review.status == QUARANTINED or (review.status == REJECTED and not by_person(review.reviewed_by))


def _other_tools(catalog: Catalog, listed: Mapping[str, list[dict[str, Any]]], server_id: str) -> dict[str, str]:
    """Bare tool names of every other server, for the shadowing flag."""
    others: dict[str, str] = {}
    for other_id, tools in listed.items():
        if other_id == server_id:
            continue
        for definition in tools:
            name = definition.get("name")
            if isinstance(name, str):
                others.setdefault(name, other_id)
    for other_id, server in catalog.servers.items():
        if other_id != server_id:
            for name, entry in server.tools.items():
                others.setdefault(name, other_id)
                others.setdefault(entry.exposed_name, other_id)  # what agents see, e.g. with namespace ""
    return others

