"""Review upstream resources and resource templates the way tools are reviewed.

Every resource (keyed by its canonical URI) and template (by its uriTemplate) an upstream lists
has a review record holding the hash of its definition now and of the one last approved. The
first resource listing a server ever gives is taken as reviewed (as a catalogued tool is on first
sight: the catalog names the server, not its resources); after that, anything new or changed is
quarantined until a person approves it: it is not listed, not routed and not readable, and a read
of it is refused and audited. A definition back to the approved one is approved again.

A resource whose URI has no single meaning, or a template that does not begin with a literal
scheme, can never be served: it is recorded as rejected, with a flag saying why. Flags also say
when a URI is inside another server's template or listed by another server too (see
gateway.upstream.directory for who then serves it).

`status()` is what the directory builder asks for each listed item; `on_quarantined` observers hear
of each item entering quarantine (the owners' webhook, gateway.discovery.webhook).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway.approvals.model import Approver
from gateway.audit import AuditEvent, AuditLog
from gateway.catalog.definitions import canonical_json
from gateway.catalog.model import Catalog, ServerEntry
from gateway.catalog.review_flags import flag_definition
from gateway.discovery.model import (
    APPROVED,
    LISTING,
    QUARANTINED,
    REJECTED,
    ResourceReview,
    ReviewNotFound,
)
from gateway.discovery.records import Clock, ReviewRecords
from gateway.events import Observers
from gateway.store.base import Store
from gateway.upstream.directory import SCHEME_PREFIX, Listing, canonical_uri, template_pattern

log = logging.getLogger("narrowgate.discovery")
DEFINITION_FIELDS = {
    "resource": ("uri", "name", "title", "description", "mimeType"),
    "template": ("uriTemplate", "name", "title", "description", "mimeType"),
}
FIRST_LISTING = "narrowgate (first listing of the server)"
REVERTED = "narrowgate (definition back to the approved one)"
UNSERVABLE = "narrowgate (can never be served)"


@dataclass(frozen=True, slots=True)
class _Others:
    """What the other servers list, for the routing flags."""

    uris: dict[str, str]  # canonical URI -> a server listing it
    templates: list[tuple[str, str]]  # (server id, uriTemplate)


class ResourceReviews(ReviewRecords[tuple[str, str, str], ResourceReview]):
    owner_label = "the server's owner"
    audit_noun = "resource"

    def __init__(self, store: Store, audit: AuditLog, clock: Clock = time.time) -> None:
        super().__init__(store, audit, clock)
        # Each item entering quarantine (the owners' webhook); not the unservable ones, rejected at once.
        self.on_quarantined: Observers[[ResourceReview]] = []

    @staticmethod
    def key_of(review: ResourceReview) -> tuple[str, str, str]:
        return review.record_key

    async def write(self, reviews: list[ResourceReview]) -> None:
        await self.store.save_resource_reviews(reviews)

    async def read(self) -> list[ResourceReview]:
        return await self.store.load_resource_reviews()

    def status(self, server_id: str, kind: str, key: str) -> str:
        """approved | quarantined | rejected; anything never reconciled is quarantined (fail closed)."""
        record = self.records.get((server_id, kind, key))
        return record.status if record is not None else QUARANTINED

    # reconciling upstream lists (synchronous: runs inside the pool's rebuild)

    def reconcile(self, catalog: Catalog, listings: Mapping[str, Listing]) -> bool:
        """Bring the records in line with what each upstream (that answered) lists; True if any changed."""
        changed = False
        for server_id, listing in listings.items():
            server = catalog.servers.get(server_id)
            if server is None:
                continue
            first = (server_id, LISTING, "") not in self.records
            others = _others(listings, server_id)
            for kind, key, definition in _items(listing):
                changed = self._observe(server, kind, key, definition, first, others) or changed
            if first:
                now = self.clock()
                self._keep(ResourceReview(server_id, LISTING, "", APPROVED, "", {}, first_seen=now, changed_at=now,
                                          approved_by=FIRST_LISTING))
                changed = True
        return changed

    def _observe(self, server: ServerEntry, kind: str, key: str, definition: dict[str, Any], first: bool,
                 others: _Others) -> bool:
        seen = _definition(kind, definition)
        current = "sha256:" + hashlib.sha256(canonical_json(seen)).hexdigest()
        record = self.records.get((server.id, kind, key))
        if record is not None and record.current_hash == current:
            return False
        now = self.clock()
        base = record or ResourceReview(server.id, kind, key, QUARANTINED, current, seen, first_seen=now,
                                        owner=server.owner)
        moved = replace(base, current_hash=current, current_definition=seen, changed_at=now,
                        change="new" if record is None else "changed")
        unservable = _unservable(kind, key, definition)
        if unservable is not None:
            return self._hold(moved, REJECTED, [unservable], UNSERVABLE)
        if record is None and first:
            return self._settle(moved, FIRST_LISTING)
        if record is not None and current == record.approved_hash:
            return self._settle(moved, REVERTED)
        return self._hold(moved, QUARANTINED, _flags(moved, record, others), None)

    def _settle(self, review: ResourceReview, by: str) -> bool:
        settled = self.settle(review, by, reverted=by == REVERTED)
        if by != FIRST_LISTING:
            self._record(settled, "resource_approved", "narrowgate", {"by": by})
        return True

    def _hold(self, review: ResourceReview, status: str, flags: list[dict[str, str]], by: str | None) -> bool:
        held = replace(review, status=status, reviewed_by=by, reviewed_at=None, comment=None, flags=tuple(flags))
        self._keep(held)
        self._record(held, f"resource_{'quarantined' if status == QUARANTINED else 'rejected'}", "narrowgate")
        log.warning("%s %r of %s %s (%s definition%s); review it with `narrowgate catalog review --resources`",
                    review.kind, review.key, review.server_id, status, review.change,
                    f", flags: {', '.join(f['code'] for f in flags)}" if flags else "")
        if status == QUARANTINED:
            for observer in self.on_quarantined:
                observer(held)
        return True

    # reviewers

    def list(self, status: str | None = None) -> list[ResourceReview]:
        reviews = sorted((r for r in self.records.values() if r.kind != LISTING),
                         key=lambda r: (-r.changed_at, r.server_id, r.kind, r.key))
        return [r for r in reviews if status is None or r.status == status]

    def get(self, review_id: str) -> ResourceReview:
        for review in self.records.values():
            if review.kind != LISTING and review.id == review_id:
                return review
        raise ReviewNotFound(f"no resource or template with id {review_id!r}")

    async def approve(self, review_id: str, person: Approver, *, expected_hash: str | None = None,
                      comment: str = "") -> ResourceReview:
        return await self._decide(self.check(review_id, person, expected_hash), APPROVED, person, comment)

    async def reject(self, review_id: str, person: Approver, *, expected_hash: str | None = None,
                     comment: str = "") -> ResourceReview:
        return await self._decide(self.check(review_id, person, expected_hash), REJECTED, person, comment)

    def check(self, review_id: str, person: Approver, expected_hash: str | None) -> ResourceReview:
        """The record, if this person may decide it now against the definition they saw; ReviewError if not."""
        review = self.get(review_id)
        return self.decidable(review, person, expected_hash, f"{review.kind} {review.key}")

    def describe(self, review: ResourceReview) -> str:
        return f"{review.kind} {review.key!r}"

    def _record(self, review: ResourceReview, action: str, actor: str, detail: dict[str, Any] | None = None) -> None:
        self.audit.record(AuditEvent(
            kind="catalog", action=action, actor=actor, tool=review.key, detail={
                "server": review.server_id, "kind": review.kind, "id": review.id, "status": review.status,
                "change": review.change, "definition_sha256": review.current_hash,
                "approved_sha256": review.approved_hash, "flags": [f["code"] for f in review.flags],
                **(detail or {})},
        ))


def _items(listing: Listing) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, key, definition) for every resource and template of a listing."""
    items: list[tuple[str, str, dict[str, Any]]] = []
    for resource in listing.resources:
        uri = resource.get("uri")
        if isinstance(uri, str):
            items.append(("resource", canonical_uri(uri) or uri, resource))
    for template in listing.templates:
        uri_template = template.get("uriTemplate")
        if isinstance(uri_template, str):
            items.append(("template", uri_template, template))
    return items


def _definition(kind: str, item: Mapping[str, Any]) -> dict[str, Any]:
    return {field: item[field] for field in DEFINITION_FIELDS[kind] if field in item}


def _unservable(kind: str, key: str, definition: Mapping[str, Any]) -> dict[str, str] | None:
    if kind == "resource" and canonical_uri(definition.get("uri")) is None:
        return {"code": "ambiguous_uri", "severity": "high",
                "message": "the URI has no single meaning (see docs/policies.md#canonicalization); never served"}
    if kind == "template" and not SCHEME_PREFIX.match(key):
        return {"code": "template_without_scheme", "severity": "high",
                "message": "the template does not begin with a literal scheme, so it could claim any URI; "
                           "never served"}
    return None


def _others(listings: Mapping[str, Listing], server_id: str) -> _Others:
    uris: dict[str, str] = {}
    templates: list[tuple[str, str]] = []
    for other_id, listing in listings.items():
        if other_id == server_id:
            continue
        for kind, key, _ in _items(listing):
            if kind == "resource":
                uris.setdefault(key, other_id)
            else:
                templates.append((other_id, key))
    return _Others(uris, templates)


def _flags(review: ResourceReview, record: ResourceReview | None, others: _Others) -> list[dict[str, str]]:
    """Text flags as for tools (instructions to the model, hidden characters, a changed description),
    and routing flags: a URI another server claims, a template overlapping another server's."""
    as_tool = {k: v for k, v in review.current_definition.items() if k in ("name", "title", "description")}
    before = record.approved_definition if record is not None else None
    previous = {k: v for k, v in before.items() if k in ("name", "title", "description")} if before else None
    found = [{"code": f.code, "severity": f.severity, "message": f.message}
             for f in flag_definition(as_tool, server_id=review.server_id, other_tools={}, previous=previous)]
    if review.kind == "resource":
        found += _uri_flags(review.key, others)
    else:
        found += _template_flags(review.key, others)
    return found


def _uri_flags(uri: str, others: _Others) -> list[dict[str, str]]:
    flags = []
    for server_id, uri_template in others.templates:
        if SCHEME_PREFIX.match(uri_template) and template_pattern(uri_template).fullmatch(uri):
            flags.append({"code": "inside_other_template", "severity": "high",
                          "message": f"the URI is inside {server_id}'s template {uri_template}: {server_id} "
                                     "serves it, never this server"})
            break
    if uri in others.uris:
        flags.append({"code": "listed_by_other_server", "severity": "high",
                      "message": f"{others.uris[uri]} lists the same URI: nobody serves it while both do"})
    return flags


def _template_flags(uri_template: str, others: _Others) -> list[dict[str, str]]:
    mine = template_pattern(uri_template)
    for server_id, other in others.templates:
        if SCHEME_PREFIX.match(other) and (mine.fullmatch(_sample(other)) or
                                           template_pattern(other).fullmatch(_sample(uri_template))):
            return [{"code": "overlaps_other_template", "severity": "high",
                     "message": f"overlaps {server_id}'s template {other}: URIs both match are served by nobody"}]
    return []


def _sample(uri_template: str) -> str:
    """A URI the template matches: each expression filled with one plain segment."""
    return re.sub(r"\{[^}]*\}", "x", uri_template)
