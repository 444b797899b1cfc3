"""Agents as an identity class: the record the registry keeps for each agent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal

IdentityKind = Literal["oidc", "spiffe", "static", "client"]


class Lifecycle(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    RETIRED = "retired"


# Allowed transitions; retired is final.
TRANSITIONS: dict[Lifecycle, frozenset[Lifecycle]] = {
    Lifecycle.PENDING: frozenset({Lifecycle.ACTIVE, Lifecycle.RETIRED}),
    Lifecycle.ACTIVE: frozenset({Lifecycle.SUSPENDED, Lifecycle.RETIRED}),
    Lifecycle.SUSPENDED: frozenset({Lifecycle.ACTIVE, Lifecycle.RETIRED}),
    Lifecycle.RETIRED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class PeopleGrant:
    """Who may act through a client (identity kind `client`): a person in any listed group, with a listed
    subject, or with a verified email in a listed domain. Empty: nobody."""

    groups: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    email_domains: tuple[str, ...] = ()  # ASCII (an IDN as its xn-- A-label), lower case, without "@"

    def admits(self, subject: str, groups: tuple[str, ...], verified_email: str) -> bool:
        if subject in self.subjects or any(g in self.groups for g in groups):
            return True
        domain = email_domain(verified_email)
        return bool(domain) and domain in self.email_domains

    def to_dict(self) -> dict[str, list[str]]:
        return {"groups": list(self.groups), "subjects": list(self.subjects), "email_domains": list(self.email_domains)}


def email_domain(email: str) -> str:
    """The domain of an email address, lower-cased in ASCII only; "" when there is none or it is not ASCII.

    str.lower() alone folds more than ASCII: U+212A KELVIN SIGN lowers to "k", so an address at two Kelvin
    signs + ".example" would pass for kk.example. A non-ASCII (U-label) domain therefore matches nothing;
    bind IDNs by their A-label."""
    domain = email.rpartition("@")[2] if "@" in email else ""
    return domain.lower() if domain.isascii() else ""


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """One workload identity bound to an agent.

    oidc: `issuer` is the token issuer, `subject` the `sub` claim.
    spiffe: `issuer` is `spiffe://<trust domain>`, `subject` the full SPIFFE ID.
    static: development tokens; `subject` is the agent id.
    client: a person's MCP client; `issuer` is the external authorization server, `subject` the client id
    (`client_id` / `azp`, e.g. a Client ID Metadata Document URL); `people` says who may act through it;
    `shared`: one client process acts for many people (a team bot), so one person's reads can reach another's
    call and chain monitoring keeps the client's signals agent-wide (docs/identity.md).
    `claims` pins further claims to exact values (e.g. kubernetes namespace, GitHub repository_id).
    """

    kind: IdentityKind
    issuer: str
    subject: str
    claims: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    people: PeopleGrant | None = None  # kind client only
    shared: bool = False  # kind client only


@dataclass(frozen=True, slots=True)
class Entitlement:
    """The most an agent may ever be granted: catalog tool names (exposed form) and server ids."""

    tools: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    # Calls need a task token (a grant for one task); False lets a bare workload token call
    # anything within the entitlement.
    require_task: bool = True

    def allows(self, tool_exposed_name: str, server_id: str) -> bool:
        return tool_exposed_name in self.tools or server_id in self.servers


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    display_name: str
    owner: str
    purpose: str
    state: Lifecycle
    created_at: float
    changed_at: float
    expires_at: float | None
    identities: tuple[WorkloadIdentity, ...]
    groups: tuple[str, ...] = ()
    labels: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    entitlement: Entitlement = field(default_factory=Entitlement)

    def effective_state(self, now: float) -> Lifecycle:
        """An agent past its expiry is treated as retired."""
        if self.expires_at is not None and now >= self.expires_at:
            return Lifecycle.RETIRED
        return self.state

    def admits_person(self, issuer: str, client_id: str, subject: str, groups: tuple[str, ...],
                      verified_email: str) -> bool:
        """The person may act through this agent's client `client_id` at `issuer` (that binding's `people`)."""
        binding = client_binding(self, issuer, client_id)
        return binding is not None and binding.people is not None and binding.people.admits(
            subject, groups, verified_email)


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """Who changed an agent's lifecycle (or created it), when, and why."""

    agent_id: str
    from_state: Lifecycle | None
    to_state: Lifecycle
    actor: str
    reason: str
    at: float
    # Added after the first cut, with defaults so existing constructors keep working:
    # what happened ("create", "update", "activate", "suspend", "resume", "retire"), and for
    # an update the names of the attributes it changed (attribute updates keep from == to).
    action: str = ""
    fields: tuple[str, ...] = ()


def agent_to_dict(agent: Agent) -> dict[str, Any]:
    """The JSON shape used by the admin API, the CLI and the store."""
    return {
        "id": agent.id,
        "display_name": agent.display_name,
        "owner": agent.owner,
        "purpose": agent.purpose,
        "state": agent.state.value,
        "created_at": agent.created_at,
        "changed_at": agent.changed_at,
        "expires_at": agent.expires_at,
        "identities": [identity_to_dict(i) for i in agent.identities],
        "groups": list(agent.groups),
        "labels": dict(agent.labels),
        "entitlement": {"tools": list(agent.entitlement.tools), "servers": list(agent.entitlement.servers),
                        "require_task": agent.entitlement.require_task},
    }


def identity_to_dict(identity: WorkloadIdentity) -> dict[str, Any]:
    shown: dict[str, Any] = {"kind": identity.kind, "issuer": identity.issuer, "subject": identity.subject,
                             "claims": dict(identity.claims)}
    if identity.people is not None:
        shown["people"] = identity.people.to_dict()
    if identity.shared:
        shown["shared"] = True
    return shown


def client_binding(agent: Agent, issuer: str, client_id: str) -> WorkloadIdentity | None:
    """The agent's `client` identity for this client of this authorization server, if it has one."""
    for identity in agent.identities:
        if identity.kind == "client" and identity.issuer == issuer and identity.subject == client_id:
            return identity
    return None


def agent_from_dict(data: Mapping[str, Any]) -> Agent:
    """The inverse of agent_to_dict (used by the store; input is trusted, not validated)."""
    entitlement = data.get("entitlement") or {}
    return Agent(
        id=data["id"],
        display_name=data["display_name"],
        owner=data["owner"],
        purpose=data["purpose"],
        state=Lifecycle(data["state"]),
        created_at=float(data["created_at"]),
        changed_at=float(data["changed_at"]),
        expires_at=None if data.get("expires_at") is None else float(data["expires_at"]),
        identities=tuple(
            WorkloadIdentity(
                kind=i["kind"],
                issuer=i["issuer"],
                subject=i["subject"],
                claims=MappingProxyType(dict(i.get("claims") or {})),
                people=None if i.get("people") is None else PeopleGrant(
                    **{k: tuple(v) for k, v in i["people"].items()}),
                shared=bool(i.get("shared", False)),
            )
            for i in data.get("identities") or ()
        ),
        groups=tuple(data.get("groups") or ()),
        labels=MappingProxyType(dict(data.get("labels") or {})),
        entitlement=Entitlement(
            tools=tuple(entitlement.get("tools") or ()), servers=tuple(entitlement.get("servers") or ()),
            require_task=bool(entitlement.get("require_task", True)),
        ),
    )


def event_to_dict(event: LifecycleEvent) -> dict[str, Any]:
    """The JSON shape of one lifecycle event (admin API, CLI)."""
    return {
        "agent_id": event.agent_id,
        "action": event.action,
        "from_state": None if event.from_state is None else event.from_state.value,
        "to_state": event.to_state.value,
        "actor": event.actor,
        "reason": event.reason,
        "at": event.at,
        "fields": list(event.fields),
    }
