"""PostgreSQL schema migrations: the same versions, names and tables as gateway.store.sqlite_schema, in
PostgreSQL's types. Append-only like that list: never edit a released migration, add one to BOTH lists.

Translations: REAL -> DOUBLE PRECISION (8 bytes, as SQLite's REAL; the audit chain hashes these floats),
INTEGER -> BIGINT, AUTOINCREMENT -> BIGSERIAL, BLOB -> BYTEA, SQLite's RAISE(ABORT) triggers -> one
PL/pgSQL trigger function. JSON columns stay TEXT (not jsonb): the audit chain hashes the stored text.
"""

from __future__ import annotations

from gateway.store.sqlite_schema import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "agents and lifecycle events",
        """
        CREATE TABLE agents (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            changed_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION,
            doc TEXT NOT NULL  -- agent_to_dict() as JSON; the columns above are for queries
        );
        CREATE INDEX agents_state ON agents (state);

        CREATE TABLE agent_events (
            seq BIGSERIAL PRIMARY KEY,
            agent_id TEXT NOT NULL REFERENCES agents (id),
            action TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            fields TEXT NOT NULL DEFAULT '[]'
        );
        CREATE INDEX agent_events_agent ON agent_events (agent_id, seq);

        -- Evidence tables are append-only, enforced by the database (every later one uses this function).
        CREATE FUNCTION narrowgate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
        END;
        $$;
        CREATE TRIGGER agent_events_append_only BEFORE UPDATE OR DELETE ON agent_events
            FOR EACH ROW EXECUTE FUNCTION narrowgate_append_only();
        CREATE TRIGGER agent_events_no_truncate BEFORE TRUNCATE ON agent_events
            FOR EACH STATEMENT EXECUTE FUNCTION narrowgate_append_only();
        """,
    ),
    Migration(
        2,
        "last known tool input schemas",
        """
        CREATE TABLE tool_schemas (
            name TEXT PRIMARY KEY,
            input_schema TEXT NOT NULL,
            seen_at DOUBLE PRECISION NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "signing keys",
        """
        -- private_key_pem is unencrypted PKCS#8: restrict who may read this database like a key file.
        CREATE TABLE signing_keys (
            kid TEXT PRIMARY KEY,
            alg TEXT NOT NULL,
            private_key_pem TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            not_after DOUBLE PRECISION,
            state TEXT NOT NULL CHECK (state IN ('current', 'previous'))
        );
        CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';
        """,
    ),
    Migration(
        4,
        "tasks and task events",
        """
        CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            agent_id TEXT NOT NULL REFERENCES agents (id),
            purpose TEXT NOT NULL,
            tools TEXT NOT NULL,
            deadline DOUBLE PRECISION NOT NULL,
            budget BIGINT,
            calls_made BIGINT NOT NULL DEFAULT 0,
            state TEXT NOT NULL,
            started_by TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            ended_at DOUBLE PRECISION,
            end_reason TEXT
        );
        CREATE INDEX tasks_agent ON tasks (agent_id, started_at);
        CREATE INDEX tasks_state ON tasks (state, ended_at);

        CREATE TABLE task_events (
            seq BIGSERIAL PRIMARY KEY,
            task_id TEXT NOT NULL REFERENCES tasks (id),
            from_state TEXT,
            to_state TEXT NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX task_events_task ON task_events (task_id, seq);
        CREATE TRIGGER task_events_append_only BEFORE UPDATE OR DELETE ON task_events
            FOR EACH ROW EXECUTE FUNCTION narrowgate_append_only();
        CREATE TRIGGER task_events_no_truncate BEFORE TRUNCATE ON task_events
            FOR EACH STATEMENT EXECUTE FUNCTION narrowgate_append_only();
        """,
    ),
    Migration(
        5,
        "audit log",
        """
        -- seq is assigned by the writer (it is part of the hashed text), under LOCK TABLE audit_log.
        CREATE TABLE audit_log (
            seq BIGINT PRIMARY KEY CHECK (seq > 0),
            at DOUBLE PRECISION NOT NULL,
            kind TEXT NOT NULL,
            action TEXT NOT NULL,
            actor TEXT NOT NULL,
            agent_id TEXT,
            owner TEXT,
            task_id TEXT,
            tool TEXT,
            decision TEXT,
            policy_ids TEXT NOT NULL DEFAULT '[]',
            decision_id TEXT,
            trace_id TEXT,
            args_digest TEXT,
            preview TEXT,
            detail TEXT NOT NULL DEFAULT '{}',
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX audit_log_at ON audit_log (at);
        CREATE INDEX audit_log_agent ON audit_log (agent_id, seq);
        CREATE INDEX audit_log_tool ON audit_log (tool, seq);
        CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION narrowgate_append_only();
        CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION narrowgate_append_only();
        """,
    ),
    Migration(
        6,
        "approval requests",
        """
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            task_id TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            doc TEXT NOT NULL
        );
        CREATE INDEX approvals_state ON approvals (state, created_at);
        CREATE INDEX approvals_agent ON approvals (agent_id, created_at);
        """,
    ),
    Migration(
        7,
        "tool reviews",
        """
        CREATE TABLE tool_reviews (
            server_id TEXT NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            changed_at DOUBLE PRECISION NOT NULL,
            doc TEXT NOT NULL,
            PRIMARY KEY (server_id, name)
        );
        CREATE INDEX tool_reviews_status ON tool_reviews (status, changed_at);
        """,
    ),
    Migration(
        8,
        "gateway secrets",
        """
        CREATE TABLE gateway_secrets (
            name TEXT PRIMARY KEY,
            secret BYTEA NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        );
        """,
    ),
    Migration(
        9,
        "resource reviews",
        """
        CREATE TABLE resource_reviews (
            server_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            status TEXT NOT NULL,
            changed_at DOUBLE PRECISION NOT NULL,
            doc TEXT NOT NULL,
            PRIMARY KEY (server_id, kind, key)
        );
        """,
    ),
    Migration(
        10,
        "recorded decision inputs",
        """
        CREATE TABLE decision_inputs (
            seq BIGSERIAL PRIMARY KEY,
            decision_id TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            agent_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            target TEXT NOT NULL,
            outcome TEXT NOT NULL,
            payload BYTEA NOT NULL
        );
        CREATE INDEX decision_inputs_at ON decision_inputs (at);
        CREATE INDEX decision_inputs_agent ON decision_inputs (agent_id, at);
        """,
    ),
    Migration(
        11,
        "time-ordered paging",
        """
        -- Replay pages a time range in (at, seq) order (keyset): with (at) alone every page sorted the
        -- range. (SQLite needs no migration: each of its indexes holds the rowid, which seq is.)
        CREATE INDEX decision_inputs_at_seq ON decision_inputs (at, seq);
        DROP INDEX decision_inputs_at;
        CREATE INDEX audit_log_at_seq ON audit_log (at, seq);
        DROP INDEX audit_log_at;
        """,
    ),
    Migration(
        12,
        "task delegation",
        """
        -- A task delegated from another: its parent, and the chain of agents root first (JSON).
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
            created_at DOUBLE PRECISION NOT NULL,
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
        -- until the token expires, so a replayed one is refused by every replica.
        CREATE TABLE used_tokens (
            token_id TEXT PRIMARY KEY,
            expires_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX used_tokens_expiry ON used_tokens (expires_at);
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
