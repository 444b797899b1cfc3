"""Review records of upstream tools, resources and resource templates: what each is now, what was
last approved, and who decided."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

QUARANTINED = "quarantined"
APPROVED = "approved"
REJECTED = "rejected"
STATUSES = (APPROVED, QUARANTINED, REJECTED)
# Actors the gateway records for its own decisions (a pin, first sight, a revert, an invalid name).
AUTOMATIC_REVIEWERS = ("catalog", "narrowgate")
# The flag of the notice that a server reached discovery.max_pending_reviews_per_server.
CAP_REACHED = "review_cap_reached"


def by_person(actor: str | None) -> bool:
    """Whether a review record's actor is a person (admin:<name>, oidc:<sub>), not the gateway itself."""
    return bool(actor) and not str(actor).startswith(AUTOMATIC_REVIEWERS)


@dataclass(frozen=True, slots=True)
class ToolReview:
    server_id: str
    name: str  # the upstream's tool name
    exposed_name: str
    status: str  # approved | quarantined | rejected
    origin: str  # "catalog": listed in a manifest; "discovered": an upstream added it
    current_hash: str
    current_definition: dict[str, Any]
    approved_hash: str | None = None  # what a review (or the manifest pin) approved last
    approved_definition: dict[str, Any] | None = None
    # Who approved approved_hash: a person's actor, or how the gateway did (pin, first sight).
    approved_by: str | None = None
    flags: tuple[dict[str, str], ...] = ()  # gateway.catalog.review_flags.Flag as dicts
    change: str = "new"  # new | changed | unchanged
    first_seen: float = 0.0
    changed_at: float = 0.0
    reviewed_by: str | None = None
    reviewed_at: float | None = None
    comment: str | None = None
    # What a reviewer set when approving a discovered tool (catalogued tools keep the manifest's).
    risk: str | None = None
    data_classes: tuple[str, ...] = ()
    egress: bool = False
    owner: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.server_id, self.name)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["flags"] = list(self.flags)
        data["data_classes"] = list(self.data_classes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolReview:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["flags"] = tuple(known.get("flags") or ())
        known["data_classes"] = tuple(known.get("data_classes") or ())
        return cls(**known)


RESOURCE_KINDS = ("resource", "template")
LISTING = "listing"  # the record saying a server's first resource listing was taken as reviewed


@dataclass(frozen=True, slots=True)
class ResourceReview:
    """One upstream resource (keyed by its canonical URI) or template (by its uriTemplate)."""

    server_id: str
    kind: str  # resource | template | listing (the first-listing marker, never shown)
    key: str
    status: str  # approved | quarantined | rejected
    current_hash: str
    current_definition: dict[str, Any]
    approved_hash: str | None = None
    approved_definition: dict[str, Any] | None = None
    approved_by: str | None = None
    flags: tuple[dict[str, str], ...] = ()
    change: str = "new"  # new | changed
    first_seen: float = 0.0
    changed_at: float = 0.0
    reviewed_by: str | None = None
    reviewed_at: float | None = None
    comment: str | None = None
    owner: str = ""

    @property
    def record_key(self) -> tuple[str, str, str]:
        return (self.server_id, self.kind, self.key)

    @property
    def id(self) -> str:
        """A short stable id for URLs and the CLI (URIs hold slashes; ids do not)."""
        return resource_review_id(self.server_id, self.kind, self.key)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["flags"] = list(self.flags)
        data["id"] = self.id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResourceReview:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["flags"] = tuple(known.get("flags") or ())
        return cls(**known)


def resource_review_id(server_id: str, kind: str, key: str) -> str:
    return "res_" + hashlib.sha256(f"{server_id}\0{kind}\0{key}".encode()).hexdigest()[:16]


class ReviewError(Exception):
    """Why a review action cannot be done; safe to show the person."""

    status = 409


class ReviewNotFound(ReviewError):
    status = 404


class NotTheToolOwner(ReviewError):
    """Not the owner of the tool (or the server of the resource) and not an admin."""

    status = 403


class DefinitionChanged(ReviewError):
    """The tool changed again after the reviewer looked (their expected hash is not the current one)."""
