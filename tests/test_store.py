"""The store on both backends (SQLite and PostgreSQL): migrations, persistence, atomic save + event, URL handling."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType

import pytest

from gateway.registry.model import Agent, Entitlement, Lifecycle, LifecycleEvent, WorkloadIdentity
from gateway.store import SchemaTooNew, Store, StoreError, UnsupportedStoreUrl, open_store, postgres_schema
from gateway.store.base import VaultLeaseRecord
from gateway.store.sqlite import PAGE_SIZE
from gateway.store.sqlite_schema import LATEST_VERSION, MIGRATIONS, split_statements
from tests.support.state import T0
from tests.support.store_backends import BACKENDS, StoreBackend, store_backend


def make_agent(agent_id: str = "bot-a", state: Lifecycle = Lifecycle.ACTIVE, changed_at: float = 100.0) -> Agent:
    return Agent(
        id=agent_id,
        display_name=f"Bot {agent_id}",
        owner="team-a",
        purpose="triage issues",
        state=state,
        created_at=100.0,
        changed_at=changed_at,
        expires_at=2_000_000_000.0,
        identities=(
            WorkloadIdentity("oidc", "https://issuer.example", f"sub-{agent_id}",
                             MappingProxyType({"repository_id": "123"})),
            WorkloadIdentity("spiffe", "spiffe://example.org", f"spiffe://example.org/{agent_id}"),
        ),
        groups=("triage",),
        labels=MappingProxyType({"env": "prod"}),
        entitlement=Entitlement(tools=("github__create_issue",), servers=("docs",)),
    )


def event(agent_id: str, from_state: Lifecycle | None, to_state: Lifecycle, at: float, action: str) -> LifecycleEvent:
    return LifecycleEvent(agent_id, from_state, to_state, "alice", f"{action} it", at, action=action)


def versions_query() -> str:
    return "SELECT version FROM schema_migrations ORDER BY version"


@pytest.fixture(params=BACKENDS)
async def empty_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBackend]:
    """A backend never migrated (the `backend` fixture's PostgreSQL databases are copies of a migrated one)."""
    postgres = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    async with store_backend(request.param, tmp_path, postgres, migrated=False) as fresh:
        yield fresh


async def test_migrations_apply_once_and_are_idempotent(empty_backend: StoreBackend) -> None:
    backend = empty_backend
    store = await backend.open(migrate=False)
    assert await store.schema_version() == 0
    assert await store.migrate() == [m.version for m in MIGRATIONS]
    assert await store.migrate() == []
    assert await store.schema_version() == LATEST_VERSION
    await store.close()
    store = await backend.open()  # a second process start applies nothing either
    await store.close()
    assert [row[0] for row in await backend.fetch(versions_query())] == [m.version for m in MIGRATIONS]


def test_both_backends_have_the_same_migrations() -> None:
    assert [(m.version, m.name) for m in postgres_schema.MIGRATIONS] == [(m.version, m.name) for m in MIGRATIONS]


async def test_database_is_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    store = open_store(f"sqlite:///{db}")
    await store.migrate()
    await store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_new_database_gets_large_pages_and_an_existing_one_keeps_its_own(tmp_path: Path) -> None:
    """16 KiB pages for a file the store creates (fewer WAL frames a commit); a file made before with 4 KiB pages,
    here in rollback-journal mode (a WAL file's page size cannot change at all), keeps them, opens, migrates and
    takes writes as it did."""
    new, old = tmp_path / "new.db", tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("CREATE TABLE made_before (x INTEGER)")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    for db in (new, old):
        store = open_store(f"sqlite:///{db}")
        await store.migrate()
        await store.save_agent(make_agent())
        await store.close()
    with sqlite3.connect(new) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 16384
    with sqlite3.connect(old) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for db in (new, old):
        store = open_store(f"sqlite:///{db}")
        assert [agent.id for agent in await store.list_agents()] == ["bot-a"]
        await store.close()


async def test_reopening_keeps_agents_and_events(backend: StoreBackend) -> None:
    store = await backend.open()
    agent = make_agent()
    await store.save_agent(agent, event("bot-a", None, Lifecycle.ACTIVE, 100.0, "create"))
    await store.close()

    store = await backend.open()
    assert await store.get_agent("bot-a") == agent  # every attribute survives the JSON round trip
    assert [e.action for e in await store.agent_events("bot-a")] == ["create"]
    await store.close()


async def test_newer_schema_is_refused_at_open(backend: StoreBackend) -> None:
    await (await backend.open()).close()
    await backend.execute(f"INSERT INTO schema_migrations VALUES ({LATEST_VERSION + 1}, 'from the future', 0)")
    with pytest.raises(SchemaTooNew, match=f"schema version {LATEST_VERSION + 1}.*upgrade Narrowgate"):
        store = open_store(backend.url)  # SQLite refuses here; PostgreSQL, which connects later, at first use
        try:
            await store.list_agents()
        finally:
            await store.close()


async def test_newer_schema_written_after_open_is_refused_by_migrate(store: Store, backend: StoreBackend) -> None:
    await backend.execute(f"INSERT INTO schema_migrations VALUES ({LATEST_VERSION + 5}, 'from the future', 0)")
    with pytest.raises(SchemaTooNew):
        await store.migrate()


async def test_save_agent_upserts_and_lists_by_id(store: Store) -> None:
    await store.save_agent(make_agent("bot-b"))
    await store.save_agent(make_agent("bot-a"))
    suspended = make_agent("bot-b", Lifecycle.SUSPENDED, changed_at=200.0)
    await store.save_agent(suspended, event("bot-b", Lifecycle.ACTIVE, Lifecycle.SUSPENDED, 200.0, "suspend"))

    assert [a.id for a in await store.list_agents()] == ["bot-a", "bot-b"]
    assert await store.get_agent("bot-b") == suspended
    assert await store.get_agent("nobody") is None


async def test_state_column_follows_the_document(store: Store, backend: StoreBackend) -> None:
    await store.save_agent(make_agent("bot-a", Lifecycle.ACTIVE))
    await store.save_agent(make_agent("bot-a", Lifecycle.RETIRED, changed_at=300.0))
    assert await backend.fetch("SELECT state, changed_at FROM agents WHERE id = 'bot-a'") == [("retired", 300.0)]


async def test_save_agent_and_event_are_one_transaction(store: Store, backend: StoreBackend) -> None:
    original = make_agent()
    await store.save_agent(original)
    await backend.fail_inserts_into("agent_events", "boom")  # the event insert (the second statement) fails
    changed = make_agent(state=Lifecycle.SUSPENDED, changed_at=200.0)
    with pytest.raises(StoreError, match="boom"):
        await store.save_agent(changed, event("bot-a", Lifecycle.ACTIVE, Lifecycle.SUSPENDED, 200.0, "suspend"))
    assert await store.get_agent("bot-a") == original  # the upsert was rolled back with it
    assert await store.agent_events("bot-a") == []


async def test_event_for_another_agent_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="bot-b"):
        await store.save_agent(make_agent("bot-a"), event("bot-b", None, Lifecycle.ACTIVE, 1.0, "create"))
    assert await store.get_agent("bot-a") is None


async def test_events_come_back_in_order_with_every_field(store: Store) -> None:
    first = event("bot-a", None, Lifecycle.PENDING, 1.0, "create")
    second = event("bot-a", Lifecycle.PENDING, Lifecycle.ACTIVE, 2.0, "activate")
    third = LifecycleEvent("bot-a", Lifecycle.ACTIVE, Lifecycle.ACTIVE, "bob", "new owner", 3.0,
                           action="update", fields=("owner", "labels"))
    for e in (first, second, third):
        await store.save_agent(make_agent(), e)
    await store.save_agent(make_agent("bot-b"), event("bot-b", None, Lifecycle.ACTIVE, 1.5, "create"))
    assert await store.agent_events("bot-a") == [first, second, third]


async def test_events_table_is_append_only(store: Store, backend: StoreBackend) -> None:
    await store.save_agent(make_agent(), event("bot-a", None, Lifecycle.ACTIVE, 1.0, "create"))
    for statement in ("UPDATE agent_events SET actor = 'mallory'", "DELETE FROM agent_events"):
        with pytest.raises(backend.refusal, match="append-only"):
            await backend.execute(statement)
    assert [e.actor for e in await store.agent_events("bot-a")] == ["alice"]


async def test_memory_store_works_and_is_a_store() -> None:
    store = open_store("sqlite:///:memory:")
    assert isinstance(store, Store)
    await store.migrate()
    await store.save_agent(make_agent())
    assert [a.id for a in await store.list_agents()] == ["bot-a"]
    await store.close()


def test_postgres_store_is_a_store() -> None:
    assert isinstance(open_store("postgresql://narrowgate@127.0.0.1:5432/narrowgate"), Store)


async def test_open_store_creates_parent_directories(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "er" / "gw.db"
    store = open_store(f"sqlite:///{db}")
    await store.migrate()
    await store.close()
    assert db.is_file()


async def test_closed_store_refuses_calls(backend: StoreBackend) -> None:
    store = await backend.open()
    await store.close()
    await store.close()  # closing twice is harmless
    with pytest.raises(StoreError, match="closed"):
        await store.list_agents()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://user:s3cret@db/narrowgate", "unsupported store URL scheme 'mysql'"),
        ("gw.db", "unsupported store URL scheme"),
        ("sqlite://relative.db", "invalid sqlite store URL"),
        ("sqlite:///", "invalid sqlite store URL"),
    ],
)
def test_unsupported_urls_are_refused_clearly(url: str, fragment: str) -> None:
    with pytest.raises(UnsupportedStoreUrl) as caught:
        open_store(url)
    assert fragment in str(caught.value)
    assert "sqlite:///" in str(caught.value) and "postgresql://" in str(caught.value)  # says what would work
    assert "s3cret" not in str(caught.value)  # never echoes credentials


def test_split_statements_keeps_trigger_bodies_whole() -> None:
    script = """
        CREATE TABLE t (a TEXT DEFAULT 'x;y');
        -- a comment; with a semicolon
        CREATE TRIGGER t_guard BEFORE DELETE ON t BEGIN SELECT RAISE(ABORT, 'no'); SELECT 1; END;
    """
    statements = split_statements(script)
    assert len(statements) == 2
    assert statements[0].endswith("DEFAULT 'x;y');")
    assert "SELECT 1; END;" in statements[1]
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE t (a TEXT DEFAULT 'unterminated)")


async def test_vault_lease_records_are_kept_by_task_until_deleted(store: Store) -> None:
    """gateway.credentials.leases records each lease id (never the credential) so a crash cannot orphan it."""
    first = VaultLeaseRecord("database/creds/ro/a1", "task_1", "db", "replica-1", 100.0, "https://vault-a:8200", None,
                             "VAULT_TOKEN", "")
    # Where to revoke it is kept with the lease: the catalog may since have dropped or moved the server.
    second = VaultLeaseRecord("database/creds/ro/b2", "task_2", "db", "replica-2", 200.0, "https://vault-b:8200",
                              "team-a", "", "/run/vault/token")
    for record in (first, second, first):  # saving again changes nothing
        await store.save_vault_lease(record)
    assert await store.vault_leases() == [first, second]
    assert await store.vault_leases("task_2") == [second]
    await store.delete_vault_lease(first.lease_id)
    await store.delete_vault_lease(first.lease_id)  # already gone: no error
    assert await store.vault_leases() == [second]
    assert await store.vault_leases("task_1") == []


async def test_a_single_use_token_is_accepted_once_until_it_expires(store: Store) -> None:
    assert await store.use_token("actor-1", expires_at=T0 + 60, now=T0)
    assert not await store.use_token("actor-1", expires_at=T0 + 60, now=T0 + 1)
    assert await store.use_token("actor-2", expires_at=T0 + 60, now=T0 + 1)
    # Past its expiry the entry goes (no verifier accepts the token any more): the table does not grow.
    assert await store.use_token("actor-1", expires_at=T0 + 200, now=T0 + 61)
