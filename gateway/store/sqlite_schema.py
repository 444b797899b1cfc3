"""SQLite schema migrations: an ordered list, append-only. Never edit a released migration;
add a new one instead (databases in the field already ran the old text)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "agents and lifecycle events",
        """
        CREATE TABLE agents (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            created_at REAL NOT NULL,
            changed_at REAL NOT NULL,
            expires_at REAL,
            doc TEXT NOT NULL  -- agent_to_dict() as JSON; the columns above are for queries
        );
        CREATE INDEX agents_state ON agents (state);

        CREATE TABLE agent_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            agent_id TEXT NOT NULL REFERENCES agents (id),
            action TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            at REAL NOT NULL,
            fields TEXT NOT NULL DEFAULT '[]'
        );
        CREATE INDEX agent_events_agent ON agent_events (agent_id, seq);

        -- Who changed what is evidence: the table is append-only, enforced by the database.
        CREATE TRIGGER agent_events_no_update BEFORE UPDATE ON agent_events
        BEGIN SELECT RAISE(ABORT, 'agent_events is append-only'); END;
        CREATE TRIGGER agent_events_no_delete BEFORE DELETE ON agent_events
        BEGIN SELECT RAISE(ABORT, 'agent_events is append-only'); END;
        """,
    ),
    Migration(
        2,
        "last known tool input schemas",
        """
        -- What each upstream last reported, so policies over context.input can be typed (and
        -- validated) at start, before and even without reaching the upstream again.
        CREATE TABLE tool_schemas (
            name TEXT PRIMARY KEY,
            input_schema TEXT NOT NULL,
            seen_at REAL NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "signing keys",
        """
        -- The gateway's own token signing keys (per-call upstream tokens, task tokens).
        -- private_key_pem is unencrypted PKCS#8: protect the database file like a key file.
        CREATE TABLE signing_keys (
            kid TEXT PRIMARY KEY,
            alg TEXT NOT NULL,
            private_key_pem TEXT NOT NULL,
            created_at REAL NOT NULL,
            not_after REAL,  -- NULL while current; a previous key leaves the JWKS at this time
            state TEXT NOT NULL CHECK (state IN ('current', 'previous'))
        );
        -- At most one current key, even when two replicas create or rotate at the same moment.
        CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';
        """,
    ),
    Migration(
        4,
        "tasks and task events",
        """
        -- Tasks an agent works under. calls_made is flushed in batches (see gateway.tasks.service),
        -- so after a crash it may lag the truth by the calls of the last flush interval.
        CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            agent_id TEXT NOT NULL REFERENCES agents (id),
            purpose TEXT NOT NULL,
            tools TEXT NOT NULL,  -- JSON list of exposed tool names
            deadline REAL NOT NULL,
            budget INTEGER,
            calls_made INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL,
            started_by TEXT NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL,
            end_reason TEXT
        );
        CREATE INDEX tasks_agent ON tasks (agent_id, started_at);
        CREATE INDEX tasks_state ON tasks (state, ended_at);

        CREATE TABLE task_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL REFERENCES tasks (id),
            from_state TEXT,
            to_state TEXT NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            at REAL NOT NULL
        );
        CREATE INDEX task_events_task ON task_events (task_id, seq);

        -- Who started or ended a task, and why, is evidence: append-only, enforced by the database.
        CREATE TRIGGER task_events_no_update BEFORE UPDATE ON task_events
        BEGIN SELECT RAISE(ABORT, 'task_events is append-only'); END;
        CREATE TRIGGER task_events_no_delete BEFORE DELETE ON task_events
        BEGIN SELECT RAISE(ABORT, 'task_events is append-only'); END;
        """,
    ),
    Migration(
        5,
        "audit log",
        """
        -- The tamper-evident audit log (gateway.audit): one hash-chained record per decision,
        -- approval, lifecycle change, task start and end, catalog change and policy reload.
        -- seq is assigned by the writer, not AUTOINCREMENT, because it is part of the hashed text.
        CREATE TABLE audit_log (
            seq INTEGER PRIMARY KEY CHECK (seq > 0),
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            action TEXT NOT NULL,
            actor TEXT NOT NULL,
            agent_id TEXT,
            owner TEXT,
            task_id TEXT,
            tool TEXT,
            decision TEXT,
            policy_ids TEXT NOT NULL DEFAULT '[]',  -- JSON list
            decision_id TEXT,
            trace_id TEXT,
            args_digest TEXT,
            preview TEXT,  -- JSON object (already redacted) or NULL
            detail TEXT NOT NULL DEFAULT '{}',  -- JSON object
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX audit_log_at ON audit_log (at);
        CREATE INDEX audit_log_agent ON audit_log (agent_id, seq);
        CREATE INDEX audit_log_tool ON audit_log (tool, seq);

        -- Append-only, enforced by the database; the hash chain shows tampering by anyone who
        -- goes around this (drops the triggers, edits the file).
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
        """,
    ),
    Migration(
        6,
        "approval requests",
        """
        -- Step-up approvals: one row per request, updated as it is decided, used or expires. The
        -- audit log holds the history; this table is the working set and the console's inbox.
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            task_id TEXT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            doc TEXT NOT NULL  -- Approval.to_dict() as JSON; the columns above are for queries
        );
        CREATE INDEX approvals_state ON approvals (state, created_at);
        CREATE INDEX approvals_agent ON approvals (agent_id, created_at);
        """,
    ),
    Migration(
        7,
        "tool reviews",
        """
        -- Upstream tools as reviewed: the definition last approved (or pinned), the one seen now,
        -- and the status that decides whether agents may see and call it.
        CREATE TABLE tool_reviews (
            server_id TEXT NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            changed_at REAL NOT NULL,
            doc TEXT NOT NULL,  -- ToolReview.to_dict() as JSON
            PRIMARY KEY (server_id, name)
        );
        CREATE INDEX tool_reviews_status ON tool_reviews (status, changed_at);
        """,
    ),
    Migration(
        8,
        "gateway secrets",
        """
        -- Secrets the gateway makes for itself on first start, e.g. the key that turns argument
        -- digests into HMACs before anyone outside the process sees them (gateway.audit.digests).
        CREATE TABLE gateway_secrets (
            name TEXT PRIMARY KEY,
            secret BLOB NOT NULL,
            created_at REAL NOT NULL
        );
        """,
    ),
    Migration(
        9,
        "resource reviews",
        """
        -- Upstream resources (by canonical URI) and resource templates as reviewed, like tool_reviews.
        CREATE TABLE resource_reviews (
            server_id TEXT NOT NULL,
            kind TEXT NOT NULL,  -- resource | template | listing (first-listing marker)
            key TEXT NOT NULL,
            status TEXT NOT NULL,
            changed_at REAL NOT NULL,
            doc TEXT NOT NULL,  -- ResourceReview.to_dict() as JSON
            PRIMARY KEY (server_id, kind, key)
        );
        """,
    ),
    Migration(
        10,
        "recorded decision inputs",
        """
        -- What Cedar saw for each decision, for what-if replay (gateway.policy.recorded): the payload
        -- (context with the arguments, entities) is AES-GCM ciphertext; rows go after the retention window.
        CREATE TABLE decision_inputs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            decision_id TEXT NOT NULL,
            at REAL NOT NULL,
            agent_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            target TEXT NOT NULL,
            outcome TEXT NOT NULL,
            payload BLOB NOT NULL
        );
        CREATE INDEX decision_inputs_at ON decision_inputs (at);
        CREATE INDEX decision_inputs_agent ON decision_inputs (agent_id, at);
        """,
    ),
    Migration(
        11,
        "time-ordered paging",
        """
        -- PostgreSQL adds (at, seq) indexes for replay's keyset pages; here nothing is needed (the
        -- version stays in step): every SQLite index holds the rowid, which seq is, so the (at)
        -- indexes of audit_log and decision_inputs already give (at, seq) order without a sort.
        """,
    ),
    Migration(
        12,
        "task delegation",
        """
        -- A task delegated from another (gateway.tasks.delegation): its parent, and the chain of agents
        -- from the root task's agent to its own, as JSON [{agent_id, owner, task_id}, ...], root first.
        ALTER TABLE tasks ADD COLUMN parent_id TEXT REFERENCES tasks (id);
        ALTER TABLE tasks ADD COLUMN chain TEXT NOT NULL DEFAULT '[]';
        CREATE INDEX tasks_parent ON tasks (parent_id);
        """,
    ),
    Migration(
        13,
        "vault leases",
        """
        -- Credentials leased from Vault for a task (gateway.credentials.leases): the lease, never the
        -- credential, so a lease left behind by a crash is revoked when its task has ended.
        CREATE TABLE vault_leases (
            lease_id TEXT PRIMARY KEY,
            task_id TEXT NOT NULL,
            server_id TEXT NOT NULL,
            replica TEXT NOT NULL,
            created_at REAL NOT NULL,
            address TEXT NOT NULL,
            namespace TEXT,
            token_env TEXT NOT NULL,
            token_file TEXT NOT NULL
        );
        CREATE INDEX vault_leases_task ON vault_leases (task_id);
        """,
    ),
    Migration(
        14,
        "single-use tokens",
        """
        -- Ids of single-use tokens already accepted (delegation actor tokens, by issuer and jti), kept
        -- until the token expires, so a replayed one is refused by every replica of the store.
        CREATE TABLE used_tokens (
            token_id TEXT PRIMARY KEY,
            expires_at REAL NOT NULL
        );
        CREATE INDEX used_tokens_expiry ON used_tokens (expires_at);
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def split_statements(script: str) -> list[str]:
    """Split a script into statements with SQLite's own tokenizer (triggers contain ';').

    executescript() would be simpler but commits any open transaction first, and we need
    all missing migrations plus their bookkeeping in one transaction.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:80]!r}")
    return statements
