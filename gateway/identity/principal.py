"""The verified caller of one request."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gateway.identity.user import UserIdentity
from gateway.registry.model import Agent


@dataclass(frozen=True, slots=True)
class Principal:
    agent_id: str
    # static-token | open-loopback (development); oidc | spiffe (workload identity); client (a person's client)
    auth_method: str
    claims: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    agent: Agent | None = None
    # Set when the caller presented a task token (a grant for one task); None for bare workload tokens.
    task_id: str | None = None
    # The person the call is made for (a person's MCP client, gateway.identity.people); None for workloads.
    user: UserIdentity | None = None
