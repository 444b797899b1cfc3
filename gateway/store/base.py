"""The one storage interface every backend implements (SQLite now, Postgres + Redis later).

Each table group gets its own small Protocol; `Store` is their union plus schema handling,
so later issues (tasks, approvals, audit) add a group without touching the existing ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from gateway.registry.model import Agent, LifecycleEvent


class StoreError(Exception):
    """A storage failure; the message is safe to log and to show operators (never secrets)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer Narrowgate; refusing protects data we do not understand."""


class UnsupportedStoreUrl(StoreError):
    """The store URL names a backend this build does not have."""


@runtime_checkable
class AgentStore(Protocol):
    async def get_agent(self, agent_id: str) -> Agent | None: ...

    async def list_agents(self) -> list[Agent]: ...

    async def save_agent(self, agent: Agent, event: LifecycleEvent | None = None) -> None:
        """Insert or replace the agent and append `event`, atomically."""
        ...

    async def agent_events(self, agent_id: str) -> list[LifecycleEvent]:
        """The agent's events, oldest first."""
        ...


class ToolSchemaStore(Protocol):
    async def load_tool_schemas(self) -> dict[str, Any]:
        """Exposed tool name -> the input schema its upstream last reported."""
        ...

    async def save_tool_schemas(self, schemas: Mapping[str, Any]) -> None:
        """Remember these schemas (None values are skipped; other tools keep theirs)."""
        ...


@runtime_checkable
class Store(AgentStore, ToolSchemaStore, Protocol):
    async def migrate(self) -> list[int]:
        """Apply missing schema migrations in one transaction; returns the versions applied."""
        ...

    async def schema_version(self) -> int: ...

    async def close(self) -> None: ...
