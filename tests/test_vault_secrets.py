"""Ephemeral secrets for legacy upstreams (issue 17, section 4), end to end.

A real `narrowgate serve` sits in front of a real HTTP upstream (tests/fixtures/upstreams/
vault_checked_server.py) that checks every credential it receives against Vault. Agents call
through the real `mcp` client with task tokens from the admin API.

Vault: HashiCorp Vault cannot run on this machine, so tests/support/vault_standin.py is a
STAND-IN for it: a small HTTP server implementing the documented Vault API for the requests the
gateway makes (KV v2 versions, a dynamic-secrets role, lease renew and revoke, lease expiry).
docs/security.md shows the same flow against a real `vault server -dev`.

- `leased`: mode lease on the stand-in's role `database/creds/readonly` (TTL an hour): one lease
  per task on first call, revoked when the task ends (complete, fail, revoke, deadline, agent
  suspended); the first renewal shortens the lease to the task's deadline.
- `shortlease`: a role whose TTL (6 s) is shorter than the task: renewed before it lapses.
- `leasedown` / `rotatedown`: Vault unreachable (a stand-in that was stopped).
- `rotated`: a KV v2 secret the gateway owns and rotates (schedule and on demand), with overlap.
- `cookied`: `leased` again, by the name `localhost` (whose cookies an HTTP client's default jar keeps).
- `expiring`: a KV v2 path with `delete_version_after` (every version has a FUTURE deletion_time).
- `overgranted`: a role whose renewals grant an hour whatever the increment (Vault may grant more than asked).
- `raced`: a rotation due at start, with another writer rotating right after the gateway reads metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp.shared.exceptions import MCPError

from gateway.audit import AuditLog
from gateway.catalog import load_catalog
from gateway.catalog.model import VaultRef
from gateway.credentials.rotation import SecretRotation
from gateway.credentials.secret_sources import SecretResolver
from gateway.store.sqlite import SqliteStore
from tests.support.clients import mcp_client
from tests.support.fleet import Fleet, start_fleet
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.processes import ADMIN_TOKEN, NARROWGATE, REPO, Gateway, start_listening, stop
from tests.support.vault_standin import Role, VaultStandIn

CHECKED_SERVER = REPO / "tests" / "fixtures" / "upstreams" / "vault_checked_server.py"
VAULT_TOKEN = "hvs.standin-gateway-token-5e1f"
API_KEY_V1 = "api-key-version-one-77c2"
READONLY, SHORT, GENEROUS = "database/creds/readonly", "database/creds/short", "database/creds/generous"
AGENT, AGENT_TOKEN = "agent-a", "token-agent-a"
SUSPENDABLE, SUSPENDABLE_TOKEN = "agent-s", "token-agent-s"
EXPIRING, EXPIRING_TOKEN = "agent-e", "token-agent-e"
NAMESPACE = "team-a"
ACCESS_DENIED, UNAVAILABLE = -32030, -32010
OVERLAP_S = 12.0
WAIT_S = 30.0
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def lease_manifest(server_id: str, vault: VaultStandIn, role: str, tools: tuple[str, ...], url: str,
                   increment_s: float = 300, token_file: Path | None = None) -> dict[str, Any]:
    token = {"token_file": str(token_file)} if token_file else {"token_env": "VAULT_TOKEN"}
    return {"id": server_id, "owner": "tests@example.com", "transport": {"url": url}, "timeout_s": 10,
            "credentials": {"mode": "lease", "header": "X-Db-Credentials", "format": "{username}:{password}",
                            "vault": {"address": vault.address, "path": role, "renew_increment_s": increment_s,
                                      **token}},
            "tools": [{"name": name, "risk": "read", "data_classes": ["internal"]} for name in tools]}


def rotated_manifest(server_id: str, vault: VaultStandIn, url: str, path: str = "narrowgate/api") -> dict[str, Any]:
    return {"id": server_id, "owner": "tests@example.com", "transport": {"url": url}, "timeout_s": 10,
            "credentials": {"mode": "secret", "header": "X-Api-Key", "format": "{secret}", "secret": {"vault": {
                "address": vault.address, "path": path, "field": "api_key", "token_env": "VAULT_TOKEN",
                "rotate": {"every_s": 86400, "overlap_s": OVERLAP_S}}}},
            "tools": [{"name": "api_call", "risk": "read", "data_classes": ["internal"]}]}


@dataclass
class Setup:
    gateway: Gateway
    vault: VaultStandIn
    down: VaultStandIn
    traces: OtlpReceiver


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("vault-secrets")
    # Version 1 was written two days ago: the daily rotation is due as soon as the gateway starts.
    vault = VaultStandIn(VAULT_TOKEN, roles={READONLY: Role(ttl_s=3600), SHORT: Role(ttl_s=6, max_ttl_s=600),
                                             GENEROUS: Role(ttl_s=3600, renew_floor_s=3600)})
    vault.kv_put("narrowgate/api", {"api_key": API_KEY_V1}, created=time.time() - 2 * 86400)
    vault.delete_after["narrowgate/expiring"] = 3600.0  # delete_version_after: 1h on the path's metadata
    vault.kv_put("narrowgate/expiring", {"api_key": "expiring-version-one"})  # written now: not due
    vault.kv_put("narrowgate/raced", {"api_key": "raced-version-one"}, created=time.time() - 2 * 86400)
    vault.writes_after_metadata["narrowgate/raced"] = 1  # another replica rotates right after the first look
    vault.start()
    down = VaultStandIn(VAULT_TOKEN, roles={READONLY: Role()}).start()
    down.stop()  # Vault unreachable: nothing listens on its port any more
    upstream, port = start_listening([sys.executable, str(CHECKED_SERVER), "--port", "0", "--vault", vault.address,
                                      "--kv-path", "narrowgate/api"], env={"UPSTREAM_VAULT_TOKEN": VAULT_TOKEN})
    url = f"http://127.0.0.1:{port}/mcp"
    token_file = work / "vault.token"  # the gateway's Vault token from a file (shortlease) or the environment
    token_file.write_text(VAULT_TOKEN + "\n")
    manifests = [
        lease_manifest("leased", vault, READONLY, ("db_query",), url),
        lease_manifest("shortlease", vault, SHORT, ("db_query",), url, increment_s=6, token_file=token_file),
        lease_manifest("leasedown", down, READONLY, ("db_query",), url),
        rotated_manifest("rotated", vault, url),
        rotated_manifest("rotatedown", down, url),
        lease_manifest("cookied", vault, READONLY, ("db_query",), f"http://localhost:{port}/mcp"),
        rotated_manifest("expiring", vault, url, "narrowgate/expiring"),
        rotated_manifest("raced", vault, url, "narrowgate/raced"),
        lease_manifest("overgranted", vault, GENEROUS, ("db_query",), url),
    ]
    traces = OtlpReceiver().start()
    gateway = Gateway(work / "gateway", manifests, tokens={AGENT: AGENT_TOKEN, SUSPENDABLE: SUSPENDABLE_TOKEN,
                                                           EXPIRING: EXPIRING_TOKEN},
                      env={"VAULT_TOKEN": VAULT_TOKEN, "OTEL_EXPORTER_OTLP_ENDPOINT": traces.endpoint,
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "100"})
    try:
        gateway.start()
        yield Setup(gateway, vault, down, traces)
    finally:
        gateway.stop()
        stop(upstream)
        vault.stop()
        traces.stop()


# helpers ------------------------------------------------------------------------------------------


def start_task(gateway: Gateway, tools: list[str], agent: str = AGENT, deadline_s: float = 300) -> tuple[str, str]:
    """(task id, task token) from the admin API."""
    response = httpx2.post(f"{gateway.base}/admin/v1/tasks", headers=ADMIN, json={
        "agent_id": agent, "purpose": "vault e2e", "tools": tools, "deadline_s": deadline_s})
    assert response.status_code == 201, response.text
    return response.json()["task"]["id"], response.json()["token"]


async def query(gateway: Gateway, token: str, tool: str = "leased__db_query") -> dict[str, Any]:
    async with mcp_client(gateway.url, token, "legacy") as client:
        result = await client.call_tool(tool, {})
    assert not result.is_error, result  # the upstream accepted the credential (it refuses otherwise)
    answer: dict[str, Any] = json.loads(result.content[0].text)  # type: ignore[union-attr]
    return answer


async def refused(setup: Setup, token: str, tool: str) -> Any:
    async with mcp_client(setup.gateway.url, token, "legacy") as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool(tool, {})
    return caught.value.error


def lease_of(vault: VaultStandIn | Setup, user: str) -> Any:
    standin = vault.vault if isinstance(vault, Setup) else vault
    [lease] = [lease for lease in standin.leases.values() if lease.username == user]
    return lease


def wait_for(what: str, check: Callable[[], bool]) -> None:
    """Poll until `check` holds (an event, not a timing claim); fail with `what` after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT_S:.0f} s: {what}"
        time.sleep(0.1)


async def until(what: str, check: Callable[[], bool]) -> None:
    """wait_for, for tests whose own MCP calls run on the event loop meanwhile."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT_S:.0f} s: {what}"
        await asyncio.sleep(0.1)


def revoked(vault: VaultStandIn | Setup, user: str) -> bool:
    return lease_of(vault, user).revoked is not None


def audit_records(setup: Setup) -> list[dict[str, Any]]:
    out = subprocess.run([str(NARROWGATE), "audit", "export", "--config", str(setup.gateway.workdir / "gateway.yaml")],
                         capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


# leases -------------------------------------------------------------------------------------------


async def test_a_task_leases_once_and_keeps_its_lease_another_task_gets_its_own(setup: Setup) -> None:
    _, token = start_task(setup.gateway, ["leased__db_query"])
    before = len(setup.vault.leases_of(READONLY))
    first = await asyncio.gather(*(query(setup.gateway, token) for _ in range(4)))  # concurrent first calls
    later = await query(setup.gateway, token)
    _, other_token = start_task(setup.gateway, ["leased__db_query"])
    other = await query(setup.gateway, other_token)
    users = {answer["user"] for answer in first} | {later["user"]}
    assert len(users) == 1  # one lease for the task, used by every call
    assert other["user"] not in users  # the other task got its own
    assert len(setup.vault.leases_of(READONLY)) == before + 2
    assert all(s.token == VAULT_TOKEN for s in setup.vault.paths_seen(f"/v1/{READONLY}"))


async def test_the_first_renewal_shortens_the_lease_to_the_tasks_deadline(setup: Setup) -> None:
    _, token = start_task(setup.gateway, ["leased__db_query"], deadline_s=120)
    user = (await query(setup.gateway, token))["user"]
    lease = lease_of(setup, user)
    wait_for("the lease renewed", lambda: bool(lease.renewals))
    assert 0 < lease.renewals[0] <= 120  # the role's hour cut to what the task has left
    assert lease.expires <= lease.issued + 121


async def test_a_renewal_granted_longer_than_asked_is_not_asked_again_and_the_lease_ends_with_the_task(
    setup: Setup,
) -> None:
    """Vault may grant more than the increment: the shortening renewal cannot shorten the lease, so the gateway
    renews no more (rather than asking again and again until the deadline) and revokes it at the deadline."""
    _, token = start_task(setup.gateway, ["overgranted__db_query"], deadline_s=4)
    user = (await query(setup.gateway, token, "overgranted__db_query"))["user"]
    lease = lease_of(setup, user)
    await until("the lease revoked at the task's deadline", lambda: lease.revoked is not None)
    assert len(lease.renewals) == 1 and lease.renewals[0] <= 4, lease.renewals  # the shortening one, once


async def test_a_lease_shorter_than_the_task_is_renewed_before_it_lapses(setup: Setup) -> None:
    _, token = start_task(setup.gateway, ["shortlease__db_query"])
    user = (await query(setup.gateway, token, "shortlease__db_query"))["user"]
    lease = lease_of(setup, user)
    wait_for("two renewals", lambda: len(lease.renewals) >= 2)
    wait_for("the first TTL over", lambda: time.time() > lease.issued + 6)
    again = await query(setup.gateway, token, "shortlease__db_query")  # the upstream checks it is live
    assert again["user"] == user
    assert all(increment <= 6 for increment in lease.renewals)


async def test_a_call_without_a_task_is_refused_and_nothing_is_leased(setup: Setup) -> None:
    before = len(setup.vault.leases)
    error = await refused(setup, AGENT_TOKEN, "leased__db_query")
    assert error.code == ACCESS_DENIED
    assert "leased for one task" in error.message and "task token" in error.message
    assert len(setup.vault.leases) == before


@pytest.mark.parametrize("end", ["complete", "fail", "revoke", "suspend", "deadline"])
async def test_the_lease_is_revoked_when_the_task_ends(setup: Setup, end: str) -> None:
    agent = SUSPENDABLE if end == "suspend" else AGENT
    task_id, token = start_task(setup.gateway, ["leased__db_query"], agent, deadline_s=5 if end == "deadline" else 300)
    user = (await query(setup.gateway, token))["user"]
    assert not revoked(setup, user)
    if end in ("complete", "fail"):
        async with mcp_client(setup.gateway.url, token, "legacy") as client:
            await client.list_tools()  # while the task is active (the client checks results against the list)
            result = await client.call_tool(f"narrowgate__{end}_task", {"reason": "done here"})
        assert not result.is_error, result
    elif end == "revoke":
        response = httpx2.post(f"{setup.gateway.base}/admin/v1/tasks/{task_id}/revoke", headers=ADMIN,
                               json={"reason": "vault e2e"})
        assert response.status_code == 200, response.text
    elif end == "suspend":
        response = httpx2.post(f"{setup.gateway.base}/admin/v1/agents/{SUSPENDABLE}/suspend", headers=ADMIN,
                               json={"reason": "vault e2e"})
        assert response.status_code == 200, response.text
    wait_for(f"lease revoked after {end}", lambda: revoked(setup, user))
    if end == "suspend":
        httpx2.post(f"{setup.gateway.base}/admin/v1/agents/{SUSPENDABLE}/resume", headers=ADMIN,
                    json={"reason": "vault e2e"}).raise_for_status()
    login = httpx2.post(f"{setup.vault.address}/standin/database/login",
                        json={"username": user, "password": lease_of(setup, user).password})
    assert login.status_code == 401  # the database no longer takes it


async def test_a_call_cancelled_while_vault_leases_leaves_the_lease_kept_for_the_task_then_revoked(
    setup: Setup,
) -> None:
    """The agent cancels its first call while Vault is issuing the lease: the lease Vault issued is still
    recorded and kept for the task (its next call uses it) and revoked when the task ends, not lost."""
    task_id, token = start_task(setup.gateway, ["leased__db_query"])
    asked, before = setup.vault.arrived.count(f"/v1/{READONLY}"), set(setup.vault.leases)
    setup.vault.issue_gate.clear()  # Vault is slow to answer
    try:
        call = asyncio.create_task(query(setup.gateway, token))
        await until("the lease asked for", lambda: setup.vault.arrived.count(f"/v1/{READONLY}") > asked)
        call.cancel()  # the agent gives up: notifications/cancelled, then it goes away
        with contextlib.suppress(asyncio.CancelledError, Exception):  # however the client's streams wind down
            await call
    finally:
        setup.vault.issue_gate.set()
    await until("the lease issued", lambda: len(setup.vault.leases) > len(before))
    [lease_id] = set(setup.vault.leases) - before
    user = setup.vault.leases[lease_id].username
    assert (await query(setup.gateway, token))["user"] == user  # kept for the task, not leased again
    assert len(setup.vault.leases) == len(before) + 1
    response = httpx2.post(f"{setup.gateway.base}/admin/v1/tasks/{task_id}/revoke", headers=ADMIN,
                           json={"reason": "vault e2e"})
    assert response.status_code == 200, response.text
    await until("the lease revoked with its task", lambda: revoked(setup, user))


async def test_an_agents_expiry_ends_its_tasks_lease_before_the_task_deadline(setup: Setup) -> None:
    """An agent's expires_at passing fires no event: the lease's limit is the sooner of the task's deadline
    and the agent's expiry, so it is revoked then, not renewed up to the deadline."""
    _, token = start_task(setup.gateway, ["leased__db_query"], EXPIRING, deadline_s=3600)
    expires_at = time.time() + 8
    response = httpx2.patch(f"{setup.gateway.base}/admin/v1/agents/{EXPIRING}", headers=ADMIN,
                            json={"expires_at": expires_at, "reason": "vault e2e"})
    assert response.status_code == 200, response.text
    user = (await query(setup.gateway, token))["user"]
    lease = lease_of(setup, user)
    await until("the lease revoked at the agent's expiry", lambda: lease.revoked is not None)
    assert lease.revoked is not None and lease.revoked >= expires_at - 1  # at the expiry, not at once
    assert all(increment <= 9 for increment in lease.renewals)  # never renewed past the agent's expiry


async def test_an_upstreams_cookie_never_reaches_another_tasks_calls(setup: Setup) -> None:
    """The upstream sets a cookie naming the leased user on task A's call; task B's call carries none."""
    _, first = start_task(setup.gateway, ["cookied__db_query"])
    _, second = start_task(setup.gateway, ["cookied__db_query"])
    a = await query(setup.gateway, first, "cookied__db_query")
    again = await query(setup.gateway, first, "cookied__db_query")
    b = await query(setup.gateway, second, "cookied__db_query")
    assert a["user"] != b["user"]
    assert (a["cookie"], again["cookie"], b["cookie"]) == ("", "", "")


async def test_vault_down_fails_the_call_clearly(setup: Setup) -> None:
    _, token = start_task(setup.gateway, ["leasedown__db_query"])
    error = await refused(setup, token, "leasedown__db_query")
    assert error.code == UNAVAILABLE
    assert "leasedown" in error.message and "Vault" in error.message and "unreachable" in error.message
    assert VAULT_TOKEN not in error.message


# rotation -----------------------------------------------------------------------------------------


def live_versions(setup: Setup) -> dict[int, dict[str, str]]:
    with setup.vault.lock:
        return setup.vault.kv_live("narrowgate/api")


async def test_the_due_rotation_ran_at_start_and_the_old_version_retires_after_the_overlap(setup: Setup) -> None:
    wait_for("the scheduled rotation", lambda: max(setup.vault.kv["narrowgate/api"]) >= 2)
    _, token = start_task(setup.gateway, ["rotated__api_call"])
    assert (await query(setup.gateway, token, "rotated__api_call"))["version"] >= 2  # the new version is in use
    wait_for("version 1 retired", lambda: 1 not in live_versions(setup))
    assert setup.vault.kv["narrowgate/api"][1].destroyed
    records = [r for r in audit_records(setup) if r["kind"] == "credential"]
    scheduled = [r for r in records if r["action"] == "secret_rotated" and r["detail"]["trigger"] == "schedule"]
    assert scheduled and scheduled[0]["detail"]["from_version"] == 1
    assert any(r["action"] == "secret_retired" and r["detail"]["version"] == 1 for r in records)


async def test_rotation_on_demand_overlaps_then_retires(setup: Setup) -> None:
    wait_for("version 1 retired", lambda: 1 not in live_versions(setup))
    out = subprocess.run([str(NARROWGATE), "secrets", "--gateway", setup.gateway.base, "--admin-token", ADMIN_TOKEN,
                          "rotate", "rotated"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    current = max(setup.vault.kv["narrowgate/api"])
    assert f"to {current}" in out.stdout
    assert {current - 1, current} <= set(live_versions(setup))  # the overlap: both versions valid
    _, token = start_task(setup.gateway, ["rotated__api_call"])
    assert (await query(setup.gateway, token, "rotated__api_call"))["version"] == current
    wait_for("the previous version retired", lambda: set(live_versions(setup)) == {current})
    actions = [(r["action"], r["actor"]) for r in audit_records(setup) if r["kind"] == "credential"]
    assert ("secret_rotated", "admin:test-admin") in actions


def test_with_delete_version_after_a_version_is_live_until_its_deletion_time(setup: Setup) -> None:
    """delete_version_after gives every version a FUTURE deletion_time: the version written now is live and not
    due, so the schedule does not rotate it; an on-demand rotation rotates once, and the schedule (woken by
    it) looks at Vault again without rotating any further. (The rotation read version 1 first: it is live.)"""
    path = "narrowgate/expiring"
    metadata_reads = lambda: setup.vault.arrived.count(f"/v1/secret/metadata/{path}")  # noqa: E731
    wait_for("the schedule's first look", lambda: metadata_reads() >= 1)
    assert max(setup.vault.kv[path]) == 1  # not due: written just now
    looked = metadata_reads()
    response = httpx2.post(f"{setup.gateway.base}/admin/v1/secrets/expiring/rotate", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["to_version"] == 2
    wait_for("the schedule's look after the rotation", lambda: metadata_reads() > looked)
    assert max(setup.vault.kv[path]) == 2  # rotated once, on demand: the schedule did not loop
    assert all(version.deletion_time is not None for version in setup.vault.kv[path].values())


def test_a_rotation_another_replica_made_first_is_taken_not_repeated(setup: Setup) -> None:
    """The schedule found version 1 due; another writer wrote version 2 right after that look. The gateway's
    write is checked against version 1, so it takes version 2 as rotated elsewhere: no third version, no
    audit record of a rotation it did not make."""
    path = "narrowgate/raced"
    wait_for("the schedule's second look", lambda: setup.vault.arrived.count(f"/v1/secret/metadata/{path}") >= 2)
    assert max(setup.vault.kv[path]) == 2
    assert setup.vault.kv[path][2].data["by"] == "another writer"
    assert not any(s.method in ("POST", "PUT") for s in setup.vault.paths_seen(f"/v1/secret/data/{path}"))
    assert not any(r["action"] == "secret_rotated" and r["detail"]["server"] == "raced" for r in audit_records(setup))


def test_rotation_with_vault_down_keeps_the_current_version_and_is_audited(setup: Setup) -> None:
    response = httpx2.post(f"{setup.gateway.base}/admin/v1/secrets/rotatedown/rotate", headers=ADMIN)
    assert response.status_code == 503
    assert "current version stays in use" in response.json()["error"]
    assert "unreachable" in response.json()["error"]
    unknown = httpx2.post(f"{setup.gateway.base}/admin/v1/secrets/leased/rotate", headers=ADMIN)
    assert unknown.status_code == 404
    failed = [(r["actor"], r["detail"]["server"]) for r in audit_records(setup)
              if r["action"] == "secret_rotation_failed"]
    assert ("admin:test-admin", "rotatedown") in failed  # this attempt
    assert ("narrowgate", "rotatedown") in failed  # the schedule's own, at start (retried a minute later)
    assert not any(r["action"] == "secret_rotated" and r["detail"]["server"] == "rotatedown"
                   for r in audit_records(setup))


async def test_rotation_schedules_follow_the_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalog that gains `rotate` on a server gets its schedule (here due at once); one that loses it stops
    it. No catalog reload exists yet, so the rotation service is driven with the catalogs loaded before and
    after the change (real catalog loader, store, audit log and resolver; the stand-in for Vault)."""
    monkeypatch.setenv("VAULT_TOKEN", VAULT_TOKEN)
    vault = VaultStandIn(VAULT_TOKEN)
    vault.kv_put("narrowgate/late", {"api_key": "late-version-one"}, created=time.time() - 2 * 86400)
    vault.start()
    manifest = rotated_manifest("late", vault, "http://127.0.0.1:1/mcp", "narrowgate/late")
    catalogs: dict[str, Any] = {}
    for name, rotate in (("plain", None), ("rotating", manifest["credentials"]["secret"]["vault"]["rotate"])):
        manifest["credentials"]["secret"]["vault"]["rotate"] = rotate
        (tmp_path / name).mkdir()
        (tmp_path / name / "late.yaml").write_text(yaml.safe_dump(manifest))
        catalogs[name] = load_catalog(tmp_path / name).servers
    in_force = {"servers": catalogs["plain"]}
    store = SqliteStore(str(tmp_path / "state.db"))
    await store.migrate()
    audit, resolver = AuditLog(store), SecretResolver()
    await audit.open()
    rotation = SecretRotation(resolver, audit, lambda: in_force["servers"])
    try:
        await rotation.open()
        assert not rotation.schedules
        in_force["servers"] = catalogs["rotating"]  # the catalog gained `rotate`
        rotation.reconcile()
        await until("the new schedule's rotation", lambda: max(vault.kv["narrowgate/late"]) == 2)
        in_force["servers"] = catalogs["plain"]  # and lost it again
        rotation.reconcile()
        assert not rotation.schedules
    finally:
        await rotation.close()
        await resolver.close()
        await audit.close()
        await store.close()
        vault.stop()


async def test_a_read_in_flight_when_the_gateway_rotates_the_secret_does_not_cache_the_old_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rotation writes a new version and forgets the cached one; a read that Vault answered before the write
    but that arrives after the forget brings the old version: its caller uses it (still live during the
    overlap), but it is not cached, or calls would carry the old version for the cache's 30 s."""
    monkeypatch.setenv("VAULT_TOKEN", VAULT_TOKEN)
    vault = VaultStandIn(VAULT_TOKEN, kv={"narrowgate/inflight": {"api_key": "version-one"}}).start()
    ref = VaultRef(vault.address, "secret", "narrowgate/inflight", "api_key", "VAULT_TOKEN")
    resolver = SecretResolver()
    try:
        vault.kv_answer_gate.clear()
        reading = asyncio.ensure_future(resolver.from_vault(ref))
        await until("Vault read version one", lambda: bool(vault.paths_seen("/v1/secret/data/narrowgate/inflight")))
        vault.kv_put("narrowgate/inflight", {"api_key": "version-two"})
        resolver.forget(ref)  # what the rotation does once it wrote the new version
        vault.kv_answer_gate.set()
        assert await reading == "version-one"
        assert await resolver.from_vault(ref) == "version-two"
    finally:
        vault.kv_answer_gate.set()
        await resolver.close()
        vault.stop()


# restart and crash --------------------------------------------------------------------------------


async def test_leases_are_revoked_on_stop_and_after_a_crash_when_the_task_ends(setup: Setup) -> None:
    gateway = setup.gateway
    _, token = start_task(setup.gateway, ["leased__db_query"])
    held = (await query(setup.gateway, token))["user"]
    gateway.stop()  # a clean stop revokes what it holds
    assert revoked(setup, held)
    gateway.start()
    task_id, token = start_task(setup.gateway, ["leased__db_query"])
    orphan = (await query(setup.gateway, token))["user"]
    assert gateway.process is not None
    stop(gateway.process, sig=9)  # a crash: no chance to revoke
    gateway.start()
    assert not revoked(setup, orphan)  # its task is still active: it may be used elsewhere (the record stays)
    response = httpx2.post(f"{gateway.base}/admin/v1/tasks/{task_id}/revoke", headers=ADMIN,
                           json={"reason": "vault e2e"})
    assert response.status_code == 200, response.text
    wait_for("the recorded lease revoked", lambda: revoked(setup, orphan))


@dataclass
class Moving:
    gateway: Gateway
    first: VaultStandIn  # the Vault (Enterprise namespace team-a) the server's leases are taken from at first
    second: VaultStandIn  # where the catalog points the server after a restart


@pytest.fixture
def moving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moving]:
    first = VaultStandIn(VAULT_TOKEN, roles={READONLY: Role()}, namespace=NAMESPACE).start()
    second = VaultStandIn(VAULT_TOKEN, roles={READONLY: Role()}, namespace=NAMESPACE).start()
    upstream, port = start_listening([sys.executable, str(CHECKED_SERVER), "--port", "0", "--vault", first.address,
                                      "--kv-path", "narrowgate/api"], env={"UPSTREAM_VAULT_TOKEN": VAULT_TOKEN})
    manifest = lease_manifest("moving", first, READONLY, ("db_query",), f"http://127.0.0.1:{port}/mcp")
    manifest["credentials"]["vault"]["namespace"] = NAMESPACE
    gateway = Gateway(tmp_path_factory.mktemp("vault-moving"), [manifest], tokens={AGENT: AGENT_TOKEN},
                      env={"VAULT_TOKEN": VAULT_TOKEN})
    try:
        gateway.start()
        yield Moving(gateway, first, second)
    finally:
        gateway.stop()
        stop(upstream)
        first.revoke_gate.set()
        first.stop()
        second.stop()


async def test_recorded_leases_are_revoked_where_they_came_from_by_a_sweep_that_does_not_hold_up_the_start(
    moving: Moving,
) -> None:
    """After a crash the catalog moves the server to another Vault. The lease records name the Vault, namespace
    and token source they came from: the ended task's lease is revoked there by the start's sweep, which runs in
    the background (the gateway serves while that Vault is slow to answer); the other when its task ends."""
    gateway, first, second = moving.gateway, moving.first, moving.second
    kept_task, kept_token = start_task(gateway, ["moving__db_query"])
    kept = (await query(gateway, kept_token, "moving__db_query"))["user"]
    started = time.time()
    _, ending_token = start_task(gateway, ["moving__db_query"], deadline_s=5)
    ending = (await query(gateway, ending_token, "moving__db_query"))["user"]
    assert gateway.process is not None
    stop(gateway.process, sig=9)  # a crash: both leases stay recorded, unrevoked
    wait_for("the short task's deadline", lambda: time.time() > started + 6)
    gateway.manifests[0]["credentials"]["vault"]["address"] = second.address  # the catalog moved the server
    first.revoke_gate.clear()  # the first Vault is slow to revoke
    offset = len(gateway.log_text())
    try:
        gateway.start()  # returns once it answers /healthz
        wait_for("the sweep's revocation at the first Vault", lambda: "/v1/sys/leases/revoke" in first.arrived)
    finally:
        first.revoke_gate.set()
    wait_for("the ended task's lease revoked where it came from", lambda: revoked(first, ending))
    ending_id = lease_of(first, ending).lease_id
    wait_for("the revocation logged", lambda: f"revoked Vault lease {ending_id}" in gateway.log_text()[offset:])
    log = gateway.log_text()[offset:]
    first_word = min(log.index(f"{verb} Vault lease {ending_id}") for verb in ("revoked", "revoking")
                     if f"{verb} Vault lease {ending_id}" in log)  # its revocation's outcome, failed or done
    assert log.index("serving MCP at") < first_word  # the start did not wait for the sweep
    assert not revoked(first, kept)  # its task is still active
    response = httpx2.post(f"{gateway.base}/admin/v1/tasks/{kept_task}/revoke", headers=ADMIN,
                           json={"reason": "vault e2e"})
    assert response.status_code == 200, response.text
    wait_for("the other lease revoked where it came from", lambda: revoked(first, kept))
    assert not second.paths_seen("/v1/sys/leases/revoke")  # nothing was sent where the catalog points now


# a fleet ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, setup: Setup, redis_url: str, postgres_url: str,
          ) -> Iterator[Fleet]:
    """Two replicas on one PostgreSQL store and one Redis, in front of the same upstream and stand-in."""
    manifests = [m for m in setup.gateway.manifests if m["id"] == "leased"]
    replicas = start_fleet(tmp_path_factory.mktemp("vault-fleet"), manifests, redis_url=redis_url,
                           postgres_url=postgres_url, tokens={AGENT: AGENT_TOKEN}, env={"VAULT_TOKEN": VAULT_TOKEN})
    try:
        yield replicas
    finally:
        replicas.stop()


async def test_in_a_fleet_each_replica_leases_its_own_and_ending_the_task_anywhere_revokes_all(
    setup: Setup, fleet: Fleet,
) -> None:
    task_id, token = start_task(fleet[0], ["leased__db_query"])
    users = [(await query(replica, token))["user"] for replica in (fleet[0], fleet[1], fleet[0], fleet[1])]
    assert users[0] == users[2] and users[1] == users[3]  # each replica keeps its lease for the task
    assert users[0] != users[1]  # the credential never left the replica that leased it
    response = httpx2.post(f"{fleet[1].base}/admin/v1/tasks/{task_id}/revoke", headers=ADMIN,
                           json={"reason": "vault fleet e2e"})
    assert response.status_code == 200, response.text
    wait_for("both replicas' leases revoked", lambda: revoked(setup, users[0]) and revoked(setup, users[1]))


# secrets never leak (last: after every secret above was used) -------------------------------------


def test_no_secret_in_logs_audit_traces_or_errors(setup: Setup) -> None:
    secrets = [VAULT_TOKEN, API_KEY_V1, *(lease.password for lease in setup.vault.leases.values())]
    secrets += [data["api_key"] for data in (v.data for v in setup.vault.kv["narrowgate/api"].values())]
    assert len(secrets) > 10
    log = setup.gateway.log_text()
    audit = json.dumps(audit_records(setup))
    spans = setup.traces.wait_for_spans(lambda spans: any("leased__db_query" in repr(s) for s in spans))
    traces = repr([(s.name, s.attributes, s.status_message, s.resource) for s in spans])
    assert "leased database/creds/readonly/" in log  # the gateway's own debug log, with the leases in it
    for secret in secrets:
        assert secret not in log, "a secret value is in the gateway log"
        assert secret not in audit, "a secret value is in the audit log"
        assert secret not in traces, "a secret value is in a span"
