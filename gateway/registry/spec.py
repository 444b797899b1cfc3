"""Validation of agent specs (admin API bodies, agents-file entries) into typed values.

Readers collect every problem instead of stopping at the first, so one response (or one
startup error) tells the operator everything that is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import UTC, date, datetime, time
from types import MappingProxyType
from typing import Any, cast

from gateway.registry.errors import FieldPath, Problem, RegistryError
from gateway.registry.model import Agent, Entitlement, IdentityKind, Lifecycle, PeopleGrant, WorkloadIdentity

ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,62}\Z")
IDENTITY_KINDS: tuple[IdentityKind, ...] = ("oidc", "spiffe", "static", "client")
INITIAL_STATES = (Lifecycle.PENDING, Lifecycle.ACTIVE)
# SPIFFE ID grammar (spiffe-id spec): lowercase trust domain, path segments of [A-Za-z0-9._-].
TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+\Z")
PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+\Z")

FIELD_KEYS = frozenset(
    {"display_name", "owner", "purpose", "expires_at", "identities", "groups", "labels", "entitlement"}
)
CREATE_KEYS = FIELD_KEYS | {"id", "state"}
IDENTITY_KEYS = frozenset({"kind", "issuer", "subject", "claims", "people", "shared"})
PEOPLE_KEYS = frozenset({"groups", "subjects", "email_domains"})
ENTITLEMENT_KEYS = frozenset({"tools", "servers", "require_task"})


@dataclass(frozen=True, slots=True)
class AgentFields:
    """The attributes create and update may set (everything but id, state and timestamps)."""

    display_name: str
    owner: str
    purpose: str
    expires_at: float | None
    identities: tuple[WorkloadIdentity, ...]
    groups: tuple[str, ...]
    labels: MappingProxyType[str, str]
    entitlement: Entitlement

    @classmethod
    def of(cls, agent: Agent) -> AgentFields:
        return cls(
            agent.display_name, agent.owner, agent.purpose, agent.expires_at,
            agent.identities, agent.groups, agent.labels, agent.entitlement,
        )

    def changed_from(self, agent: Agent) -> tuple[str, ...]:
        """Names of the attributes that differ from `agent` (MappingProxyType compares by content)."""
        return tuple(f.name for f in dataclass_fields(self) if getattr(self, f.name) != getattr(agent, f.name))

    def as_kwargs(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies, and MappingProxyType cannot be copied.
        return {f.name: getattr(self, f.name) for f in dataclass_fields(self)}


@dataclass(frozen=True, slots=True)
class CreateSpec:
    id: str
    state: Lifecycle
    fields: AgentFields


class SpecReader:
    """Reads one spec; `prefix` places its problems inside a larger document (the agents file)."""

    def __init__(self, now: float, prefix: FieldPath = ()) -> None:
        self.now = now
        self.prefix = prefix
        self.problems: list[Problem] = []

    def problem(self, path: FieldPath, message: str) -> None:
        self.problems.append(Problem((*self.prefix, *path), message))

    def raise_if_any(self) -> None:
        if self.problems:
            raise RegistryError.of(self.problems)

    # whole specs

    def create(
        self, spec: object, default_state: Lifecycle = Lifecycle.PENDING, check_expiry: bool = True
    ) -> CreateSpec | None:
        if not isinstance(spec, Mapping):
            self.problem((), "an agent must be a mapping with id, owner, purpose and identities")
            return None
        self.unknown_keys(spec, CREATE_KEYS, ())
        agent_id = self.agent_id(spec.get("id"))
        state = self.initial_state(spec.get("state", default_state))
        fields = self.fields(spec, agent_id or "", check_expiry)
        if agent_id is None or state is None or fields is None:
            return None
        return CreateSpec(agent_id, state, fields)

    def update(self, changes: object, current: Agent) -> AgentFields | None:
        if not isinstance(changes, Mapping):
            self.problem((), "changes must be a mapping")
            return None
        for key in ("id", "state", "created_at", "changed_at"):
            if key in changes:
                hint = "; use activate, suspend, resume or retire" if key == "state" else ""
                self.problem((key,), f"{key} cannot be changed by an update{hint}")
        self.unknown_keys(changes, FIELD_KEYS | {"id", "state", "created_at", "changed_at"}, ())
        base = {
            "display_name": current.display_name, "owner": current.owner, "purpose": current.purpose,
            "expires_at": current.expires_at, "identities": current.identities, "groups": current.groups,
            "labels": current.labels, "entitlement": current.entitlement,
        }
        merged = {**base, **{k: v for k, v in changes.items() if k in FIELD_KEYS}}
        # Only a newly given expiry must lie ahead; the current one is already checked by the caller.
        fields = self.fields(merged, current.id, check_expiry="expires_at" in changes)
        return None if self.problems else fields

    def fields(self, spec: Mapping[str, Any], agent_id: str, check_expiry: bool = True) -> AgentFields | None:
        count = len(self.problems)
        owner = self.text(spec.get("owner"), ("owner",))
        purpose = self.text(spec.get("purpose"), ("purpose",))
        display = spec.get("display_name")
        display_name = agent_id if display is None else self.text(display, ("display_name",))
        fields = AgentFields(
            display_name=display_name or "",
            owner=owner or "",
            purpose=purpose or "",
            expires_at=self.expires_at(spec.get("expires_at"), check_expiry),
            identities=self.identities(spec.get("identities"), agent_id),
            groups=self.string_list(spec.get("groups"), ("groups",)),
            labels=self.labels(spec.get("labels")),
            entitlement=self.entitlement(spec.get("entitlement")),
        )
        return None if len(self.problems) > count else fields

    # single values

    def unknown_keys(self, data: Mapping[str, Any], allowed: frozenset[str], path: FieldPath) -> None:
        for key in sorted(set(data) - allowed, key=str):
            self.problem((*path, key), f"unknown field {key!r}")

    def agent_id(self, value: object) -> str | None:
        if not isinstance(value, str) or not ID_PATTERN.match(value):
            rule = "2-63 lowercase letters, digits and '-', starting with a letter"
            self.problem(("id",), f"id {value!r} must be {rule}")
            return None
        return value

    def initial_state(self, value: object) -> Lifecycle | None:
        if isinstance(value, Lifecycle | str) and value in INITIAL_STATES:
            return Lifecycle(value)
        self.problem(("state",), f"initial state must be pending or active, not {value!r}")
        return None

    def text(self, value: object, path: FieldPath) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.problem(path, "is required and must be a non-empty string")
            return None
        return value.strip()

    def string_list(self, value: object, path: FieldPath) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            self.problem(path, "must be a list of strings")
            return ()
        items: list[str] = []
        for index, item in enumerate(value):
            text = self.text(item, (*path, index))
            if text is not None and text not in items:  # duplicates carry no meaning; drop them
                items.append(text)
        return tuple(items)

    def labels(self, value: object) -> MappingProxyType[str, str]:
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, Mapping):
            self.problem(("labels",), "must be a mapping of strings to strings")
            return MappingProxyType({})
        labels: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key or not isinstance(item, str):
                self.problem(("labels", str(key)), "label names and values must be strings")
                continue
            labels[key] = item
        return MappingProxyType(labels)

    def entitlement(self, value: object) -> Entitlement:
        if value is None:
            return Entitlement()
        if isinstance(value, Entitlement):
            return value
        if not isinstance(value, Mapping):
            self.problem(("entitlement",), "must be a mapping with tools and/or servers")
            return Entitlement()
        self.unknown_keys(value, ENTITLEMENT_KEYS, ("entitlement",))
        require_task = value.get("require_task", True)
        if not isinstance(require_task, bool):
            self.problem(("entitlement", "require_task"), "must be true or false")
        return Entitlement(
            tools=self.string_list(value.get("tools"), ("entitlement", "tools")),
            servers=self.string_list(value.get("servers"), ("entitlement", "servers")),
            require_task=require_task is not False,
        )

    def expires_at(self, value: object, check_future: bool) -> float | None:
        if value is None:
            return None
        at = parse_time(value)
        if at is None:
            self.problem(("expires_at",), f"must be epoch seconds or an ISO-8601 time, not {value!r}")
        elif check_future and at <= self.now:
            self.problem(("expires_at",), "is in the past; retire the agent instead")
        return at

    # identities

    def identities(self, value: object, agent_id: str) -> tuple[WorkloadIdentity, ...]:
        if isinstance(value, tuple) and all(isinstance(i, WorkloadIdentity) for i in value):
            return value  # unchanged on update: validated when it was set
        if not isinstance(value, list) or not value:
            self.problem(("identities",), "at least one workload identity is required")
            return ()
        identities: list[WorkloadIdentity] = []
        for index, item in enumerate(value):
            identity = self.identity(item, ("identities", index), agent_id)
            if identity is None:
                continue
            if identity in identities:
                self.problem(("identities", index), "this identity is listed twice")
                continue
            identities.append(identity)
        return tuple(identities)

    def identity(self, item: object, path: FieldPath, agent_id: str) -> WorkloadIdentity | None:
        if not isinstance(item, Mapping):
            self.problem(path, "an identity must be a mapping with kind, issuer and subject")
            return None
        count = len(self.problems)
        self.unknown_keys(item, IDENTITY_KEYS, path)
        kind = item.get("kind")
        if kind not in IDENTITY_KINDS:
            self.problem((*path, "kind"), f"kind must be one of {', '.join(IDENTITY_KINDS)}, not {kind!r}")
        issuer = self.text(item.get("issuer"), (*path, "issuer"))
        subject = self.text(item.get("subject"), (*path, "subject"))
        claims = self.pins(item.get("claims"), (*path, "claims"))
        people = self.people(item.get("people"), (*path, "people")) if kind == "client" else None
        if kind != "client" and "people" in item:
            self.problem((*path, "people"), "people applies only to an identity of kind client")
        shared = item.get("shared", False)
        if not isinstance(shared, bool):
            self.problem((*path, "shared"), "must be true or false")
        elif shared and kind != "client":
            self.problem((*path, "shared"), "shared applies only to an identity of kind client")
        if len(self.problems) > count or issuer is None or subject is None:
            return None
        if kind == "spiffe":
            self.spiffe(issuer, subject, path)
        elif kind == "static" and subject != agent_id:
            self.problem((*path, "subject"), f"a static identity's subject must be the agent id {agent_id!r}")
        if len(self.problems) > count:
            return None
        return WorkloadIdentity(kind=cast(IdentityKind, kind), issuer=issuer, subject=subject, claims=claims,
                                people=people, shared=shared is True)

    def people(self, value: object, path: FieldPath) -> PeopleGrant | None:
        """Who may act through a client: required, so that binding a client never lets everyone in by omission."""
        if not isinstance(value, Mapping):
            self.problem(path, "a client identity needs people: {groups, subjects, email_domains} (who may act "
                               "through it)")
            return None
        self.unknown_keys(value, PEOPLE_KEYS, path)
        grant = PeopleGrant(
            groups=self.string_list(value.get("groups"), (*path, "groups")),
            subjects=self.string_list(value.get("subjects"), (*path, "subjects")),
            email_domains=self.email_domains(value.get("email_domains"), (*path, "email_domains")),
        )
        if not (grant.groups or grant.subjects or grant.email_domains):
            self.problem(path, "people must list at least one group, subject or email domain")
            return None
        return grant

    def email_domains(self, value: object, path: FieldPath) -> tuple[str, ...]:
        """ASCII domains, lower-cased (in ASCII) and without a leading "@"; an IDN must be given as its A-label."""
        domains = [d.lstrip("@") for d in self.string_list(value, path)]
        for domain in domains:
            if not domain.isascii():
                self.problem(path, f"email domain {domain!r} is not ASCII: give an internationalized domain as its "
                                   "A-label (xn--...)")
        return tuple(d.lower() for d in domains if d.isascii())

    def spiffe(self, issuer: str, subject: str, path: FieldPath) -> None:
        domain = issuer.removeprefix("spiffe://")
        if not issuer.startswith("spiffe://") or not TRUST_DOMAIN.match(domain):
            self.problem((*path, "issuer"), f"a spiffe issuer must be spiffe://<trust domain>, not {issuer!r}")
            return
        segments = subject.removeprefix(f"{issuer}/").split("/")
        if not subject.startswith(f"{issuer}/") or not all(
            PATH_SEGMENT.match(s) and s not in (".", "..") for s in segments
        ):
            self.problem((*path, "subject"), f"a spiffe subject must be a SPIFFE ID under {issuer}/, not {subject!r}")

    def pins(self, value: object, path: FieldPath) -> MappingProxyType[str, str]:
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, Mapping):
            self.problem(path, "claims must be a mapping of claim name to required value")
            return MappingProxyType({})
        pins: dict[str, str] = {}
        for key, item in value.items():
            # Numbers are common in pins (GitHub repository_id); they compare as str(value).
            if not isinstance(key, str) or not key or not isinstance(item, str | int) or isinstance(item, bool):
                self.problem((*path, str(key)), "a claim pin must map a claim name to a string or integer")
                continue
            pins[key] = str(item)
        return MappingProxyType(pins)


def parse_time(value: object) -> float | None:
    """Epoch seconds, an ISO-8601 string, or a YAML datetime/date; naive times are UTC."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time(0, 0))
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return None


def parse_create(spec: object, now: float) -> CreateSpec:
    reader = SpecReader(now)
    result = reader.create(spec)
    reader.raise_if_any()
    assert result is not None  # no problems means a complete spec
    return result


def parse_update(changes: object, current: Agent, now: float) -> AgentFields:
    reader = SpecReader(now)
    result = reader.update(changes, current)
    reader.raise_if_any()
    assert result is not None
    return result
