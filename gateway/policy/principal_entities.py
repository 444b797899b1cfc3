"""The principal's entities for one request: Agent, its AgentGroup parents and its token Claims.

An agent's JSON depends only on its registry record (and the effective lifecycle state, which can
change with the clock at expiry), so it is serialized once per agent version and reused. The cache
is keyed by agent id and checked against the whole Agent record (identity first, then equality, so
an update that forgot to bump changed_at still cannot serve stale entitlements), the effective
state, the auth method and the trust domain. In front of it, the last whole answer per agent is kept with
everything it was made from (`_Made`): while a call brings the very same record and claims objects, that is
the answer, without rebuilding a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from gateway.identity.principal import Principal
from gateway.registry.model import Lifecycle

OPEN_LOOPBACK = "open-loopback"
CACHE_LIMIT = 10_000


class _Made(NamedTuple):
    """An agent's last entity JSON and all it was made from (the JSON depends on nothing else): the agent record
    and the token's claims (the same objects while unchanged: the registry replaces a record on a change, and a
    remembered principal brings the same claims), the auth method, whether a person calls, the catalog's server
    ids and the agent's state now (which the clock changes at expiry)."""

    agent: object
    claims: object
    auth_method: str
    person: bool
    server_ids: tuple[str, ...]
    state: Lifecycle | None
    json: str


class PrincipalEntities:
    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[object, ...], str]] = {}
        self._last: dict[str, _Made] = {}

    def json(self, principal: Principal, now: float, server_ids: tuple[str, ...]) -> str:
        """Comma-joined entity JSON objects (Agent, groups, Claims), ready to go inside a JSON array. `server_ids`:
        the catalog's (only an open-loopback principal has them listed)."""
        agent, claims, person = principal.agent, principal.claims, principal.user is not None
        state = agent.effective_state(now) if agent is not None else None
        last = self._last.get(principal.agent_id)
        if (last is not None and last.agent is agent and last.claims is claims
                and last.auth_method == principal.auth_method and last.person == person
                and last.server_ids is server_ids and last.state is state):
            return last.json
        blob = self._agent_json(principal, now, server_ids) + "," + _claims_json(principal)
        if len(self._last) >= CACHE_LIMIT:
            self._last.clear()
        self._last[principal.agent_id] = _Made(agent, claims, principal.auth_method, person, server_ids, state, blob)
        return blob

    def _agent_json(self, principal: Principal, now: float, server_ids: tuple[str, ...]) -> str:
        key = _cache_key(principal, now, server_ids)
        cached = self._cache.get(principal.agent_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        blob = _render_agent(principal, now, server_ids)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()  # crude but bounded; a registry this large re-warms in one pass
        self._cache[principal.agent_id] = (key, blob)
        return blob


def _cache_key(principal: Principal, now: float, server_ids: tuple[str, ...]) -> tuple[object, ...]:
    agent = principal.agent
    trust_domain = _trust_domain(principal)
    if agent is None:
        # Open loopback is entitled to every catalogued server, so its JSON follows the catalog.
        open_servers = server_ids if principal.auth_method == OPEN_LOOPBACK else ()
        return (None, principal.auth_method, trust_domain, open_servers)
    return (agent, agent.effective_state(now), principal.auth_method, trust_domain)


def _render_agent(principal: Principal, now: float, server_ids: tuple[str, ...]) -> str:
    agent = principal.agent
    if agent is None:
        development = principal.auth_method == OPEN_LOOPBACK
        attrs = _attrs(principal, "", "development (open loopback)" if development else "",
                       Lifecycle.ACTIVE.value if development else "unknown", (),
                       server_ids if development else ())
        groups: tuple[str, ...] = ()
        labels: Mapping[str, str] = {}
    else:
        attrs = _attrs(principal, agent.owner, agent.purpose, agent.effective_state(now).value,
                       agent.entitlement.tools, agent.entitlement.servers)
        groups, labels = agent.groups, agent.labels
    entity = {
        "uid": {"type": "Agent", "id": principal.agent_id},
        "attrs": attrs,
        "parents": [{"type": "AgentGroup", "id": g} for g in groups],
        "tags": {str(k): str(v) for k, v in labels.items()},
    }
    parts = [orjson.dumps(entity).decode()]
    parts.extend(orjson.dumps({"uid": {"type": "AgentGroup", "id": g}, "attrs": {}, "parents": []}).decode()
                 for g in dict.fromkeys(groups))
    return ",".join(parts)


def _attrs(principal: Principal, owner: str, purpose: str, lifecycle: str, tools: tuple[str, ...],
           servers: tuple[str, ...]) -> dict[str, Any]:
    return {
        "owner": owner,
        "purpose": purpose,
        "lifecycle": lifecycle,
        "auth_method": principal.auth_method,
        "trust_domain": _trust_domain(principal),
        "entitled_tools": sorted(set(tools)),
        "entitled_servers": sorted(set(servers)),
        "claims": {"__entity": {"type": "Claims", "id": principal.agent_id}},
    }


def _trust_domain(principal: Principal) -> str:
    if principal.auth_method != "spiffe":
        return ""
    subject = principal.claims.get("sub")
    if not isinstance(subject, str) or not subject.startswith("spiffe://"):
        return ""
    return subject[len("spiffe://"):].split("/", 1)[0]


# Unique per token and meaningless to a rule: left out, so a refreshed token reuses the parsed
# entities (the engine's entity cache) instead of adding a set per token.
PER_TOKEN_CLAIMS = frozenset({"jti"})


def _claims_json(principal: Principal) -> str:
    # Only string-valued top-level claims: Cedar tags hold one type, and nested claims would
    # need a schema per issuer. Other claims are not visible to policies.
    # A person's access token (through a client agent) carries none: its claims are the person's, partly
    # unverified (an `email` without `email_verified`, `preferred_username`, `upn`); `context.user` is the one
    # checked view of the person.
    tags = {} if principal.user is not None else {
        k: v for k, v in principal.claims.items()
        if isinstance(k, str) and isinstance(v, str) and k not in PER_TOKEN_CLAIMS}
    entity = {"uid": {"type": "Claims", "id": principal.agent_id}, "attrs": {}, "parents": [], "tags": tags}
    return orjson.dumps(entity).decode()
