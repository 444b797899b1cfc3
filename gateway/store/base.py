"""The one storage interface every backend implements (SQLite now, Postgres + Redis later).

Each table group gets its own small Protocol; `Store` is their union plus schema handling,
so later issues (tasks, approvals, audit) add a group without touching the existing ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, runtime_checkable

from gateway.approvals.model import Approval
from gateway.discovery.model import ResourceReview, ToolReview
from gateway.registry.model import Agent, LifecycleEvent
from gateway.tasks.model import Task, TaskEvent

if TYPE_CHECKING:
    from gateway.audit.prepared import PreparedRecord


class StoreError(Exception):
    """A storage failure; the message is safe to log and to show operators (never secrets)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer Narrowgate; refusing protects data we do not understand."""


class UnsupportedStoreUrl(StoreError):
    """The store URL names a backend this build does not have."""


@runtime_checkable
class AgentStore(Protocol):
    async def get_agent(self, agent_id: str) -> Agent | None: ...

    async def list_agents(self, changed_since: float | None = None) -> list[Agent]:
        """Every agent by id; `changed_since`: only those whose `changed_at` is at or after it."""
        ...

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


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """One row of signing_keys. The PEM is left out of repr so a logged record leaks nothing."""

    kid: str
    alg: str
    private_key_pem: str = field(repr=False)
    created_at: float
    not_after: float | None  # None while current; when a previous key leaves the JWKS
    state: Literal["current", "previous"]


class SigningKeyStore(Protocol):
    async def load_signing_keys(self) -> list[SigningKeyRecord]:
        """Every stored key (current and previous), newest first."""
        ...

    async def add_first_signing_key(self, key: SigningKeyRecord) -> bool:
        """Store `key` as current unless a current key exists (another replica won); True if stored."""
        ...

    async def rotate_signing_key(self, new: SigningKeyRecord, *, retire_at: float, prune_before: float) -> None:
        """Atomically: current -> previous (not_after = retire_at), `new` -> current, and delete
        previous keys whose not_after <= prune_before."""
        ...


@dataclass(frozen=True, slots=True)
class VaultLeaseRecord:
    """A credential leased from Vault for one task on one replica (the lease id, never the credential)."""

    lease_id: str
    task_id: str
    server_id: str
    replica: str
    created_at: float
    # Where the lease was taken and as whom (never the token itself): revoking it later goes to that
    # Vault even if the catalog has since dropped the server or moved it to another address.
    address: str
    namespace: str | None
    token_env: str
    token_file: str


class VaultLeaseStore(Protocol):
    async def save_vault_lease(self, lease: VaultLeaseRecord) -> None: ...

    async def vault_leases(self, task_id: str | None = None) -> list[VaultLeaseRecord]:
        """Recorded leases (of one task, or all), oldest first."""
        ...

    async def delete_vault_lease(self, lease_id: str) -> None: ...


class UsedTokenStore(Protocol):
    async def use_token(self, token_id: str, expires_at: float, now: float) -> bool:
        """Record a single-use token's id until it expires: True the first time (on any process sharing
        the store), False for every later use. Atomic."""
        ...


class TaskStore(Protocol):
    async def save_task(self, task: Task, event: TaskEvent | None = None) -> None:
        """Insert or update the task (state, end, deadline; calls_made never decreases) and append
        `event`, atomically."""
        ...

    async def save_task_calls(self, counts: Mapping[str, int]) -> None:
        """Record call counts by task id (a count lower than the stored one is ignored)."""
        ...

    async def get_task(self, task_id: str) -> Task | None: ...

    async def list_tasks(
        self, agent_id: str | None = None, state: str | None = None, ended_since: float | None = None,
        ended_only: bool = False, limit: int | None = None,
    ) -> list[Task]:
        """Tasks oldest first by stored state; `ended_since`: active ones plus those ended since then
        (`ended_only`: only those ended since then); `limit`: only the newest that many of them."""
        ...

    async def task_events(self, task_id: str) -> list[TaskEvent]:
        """The task's state changes (its start included), oldest first."""
        ...


class ToolReviewStore(Protocol):
    async def save_tool_reviews(self, reviews: Sequence[ToolReview]) -> None:
        """Insert or replace these review records (one transaction)."""
        ...

    async def load_tool_reviews(self) -> list[ToolReview]: ...


class ResourceReviewStore(Protocol):
    async def save_resource_reviews(self, reviews: Sequence[ResourceReview]) -> None:
        """Insert or replace these resource and template review records (one transaction)."""
        ...

    async def load_resource_reviews(self) -> list[ResourceReview]: ...


class ApprovalStore(Protocol):
    async def save_approval(self, approval: Approval) -> None:
        """Insert or replace the approval request."""
        ...

    async def save_approval_if(self, approval: Approval, expected_state: str) -> bool:
        """Replace the stored request only while its row is in `expected_state` (a compare-and-set, so
        a late write never overwrites what happened to the request since); whether it was replaced."""
        ...

    async def get_approval(self, approval_id: str) -> Approval | None: ...

    async def list_approvals(self, states: Sequence[str] | None = None, agent_id: str | None = None,
                             limit: int = 200) -> list[Approval]:
        """Newest first, filtered by state(s) and agent."""
        ...


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which audit records to read: filters are ANDed; times are epoch seconds, `until` exclusive."""

    after_seq: int = 0
    before_seq: int | None = None
    agent_id: str | None = None
    tool: str | None = None
    decision: str | None = None
    kind: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 1000
    newest_first: bool = False


@dataclass(frozen=True, slots=True)
class AuditedDecision:
    decision_id: str
    at: float
    seq: int


@dataclass(frozen=True, slots=True)
class AuditedDecisionQuery:
    """Decision records audited in [since, until), paged in (at, seq) order after `after` (the last one read)."""

    since: float
    until: float
    agent_id: str | None = None
    after: tuple[float, int] | None = None
    limit: int = 1000


class AuditStore(Protocol):
    """The hash-chained audit log (see gateway.audit): append-only, one record per row."""

    async def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, GENESIS_HASH) while the log is empty."""
        ...

    async def append_audit(self, records: Sequence[Mapping[str, Any] | PreparedRecord]) -> tuple[int, str]:
        """Seal `records` (gateway.audit.chain.unsealed_record) in order after the head as it is inside
        one write transaction, insert them, commit; returns the new head. All or nothing."""
        ...

    async def audit_records(self, query: AuditQuery) -> list[dict[str, Any]]:
        """Records (dicts with gateway.audit.chain.RECORD_FIELDS) matching `query`, by seq."""
        ...

    async def audited_decisions(self, query: AuditedDecisionQuery) -> list[AuditedDecision]:
        """Only the decision id and time of the decision records in the query's time range, in (at, seq)
        order after `query.after` (what-if replay reads a window's ids without whole records)."""
        ...


DELETE_CHUNK = 10_000  # recorded decision inputs deleted per statement (and transaction)


class DecisionInputRow(NamedTuple):
    """One recorded decision input (what Cedar saw, for what-if replay). `payload` is AES-GCM ciphertext
    (gateway.policy.recorded); the other columns are what the audit record of the decision shows anyway.

    A tuple, not a frozen dataclass: the recorder makes one per decision, and a frozen dataclass's eight
    object.__setattr__ calls cost several times what the tuple does; the stored columns are its first seven."""

    decision_id: str
    at: float
    agent_id: str
    kind: str  # tool | prompt | resource
    target: str  # exposed tool name, prompt name or resource URI
    outcome: str  # allow | deny | step_up, as decided live
    payload: bytes
    seq: int = 0  # assigned by the store

    def __repr__(self) -> str:  # never the payload (ciphertext, and long)
        return (f"DecisionInputRow(decision_id={self.decision_id!r}, at={self.at!r}, agent_id={self.agent_id!r}, "
                f"kind={self.kind!r}, target={self.target!r}, outcome={self.outcome!r}, seq={self.seq!r})")


@dataclass(frozen=True, slots=True)
class DecisionInputQuery:
    """Which recorded inputs to read, by seq: `since` inclusive, `until` exclusive (epoch seconds). With
    `by_time`, in (at, seq) order after `after` instead (a narrow time range read through the time index)."""

    since: float
    until: float | None = None
    agent_id: str | None = None
    after_seq: int = 0
    limit: int = 1000
    by_time: bool = False
    after: tuple[float, int] | None = None


class DecisionInputStore(Protocol):
    """Recorded decision inputs: appended in batches off the request path, deleted after retention."""

    async def append_decision_inputs(self, rows: Sequence[DecisionInputRow]) -> None: ...

    async def decision_inputs(self, query: DecisionInputQuery) -> list[DecisionInputRow]:
        """Rows matching `query`, oldest seq first."""
        ...

    async def delete_decision_inputs(self, before: float, limit: int = DELETE_CHUNK) -> int:
        """Delete up to `limit` rows recorded before `before` in one statement; how many were deleted (the
        sweep calls again until fewer than `limit` were, so no transaction holds a week of rows)."""
        ...


class GatewaySecretStore(Protocol):
    async def gateway_secret(self, name: str, candidate: bytes) -> bytes:
        """The stored secret `name`; `candidate` is stored first if there is none (atomically, so
        every process and replica ends up with the same one)."""
        ...


@runtime_checkable
class Store(AgentStore, ToolSchemaStore, SigningKeyStore, TaskStore, ApprovalStore, ToolReviewStore,
            ResourceReviewStore, AuditStore, GatewaySecretStore, DecisionInputStore, VaultLeaseStore, UsedTokenStore,
            Protocol):
    async def migrate(self) -> list[int]:
        """Apply missing schema migrations in one transaction; returns the versions applied."""
        ...

    async def schema_version(self) -> int: ...

    async def close(self) -> None: ...
