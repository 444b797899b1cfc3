"""Per-task credentials leased from a HashiCorp Vault dynamic-secrets role (`credentials.mode: lease`).

A task's first call to such an upstream leases one credential (`GET /v1/<role path>`), which then
goes only into that task's calls to that upstream, from this process. Concurrent first calls
lease once. The lease is renewed before it lapses, never past the task's limit (its deadline, or
its agent's expiry if sooner; the first renewal shortens a role's longer TTL to it), and revoked
when the task ends for any reason (the task service's end observers, here and on other replicas),
when its limit passes or when its agent is no longer active. A call without a task is refused: a
leased credential belongs to one task.

Taking a lease (lease, record, keeper) runs as a task of its own that calls await through
`asyncio.shield`: a call cancelled while Vault answers (the agent went away, its timeout) still
records the lease, and keeps it for the task or revokes it. A lease is published (handed out)
only once it is recorded and its task is still active; until then the sweep leaves it alone.

The credential lives in this process's memory only. The store records the lease id (never the
credential) before the credential is used, with the Vault address, namespace and token source it
was taken from, so a lease that outlives its process (a crash) is revoked at that Vault by the
sweep once its task has ended, whatever the catalog says by then; on a clean stop every held
lease is revoked (concurrently, within `CLOSE_LIMIT_S`). In a fleet each replica that serves a
task's calls leases its own credential for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from gateway.audit import AuditEvent, AuditLog
from gateway.catalog.model import CREDENTIAL_FIELD, LeaseRef, ServerEntry
from gateway.credentials.secret_errors import SecretUnavailable
from gateway.credentials.vault_http import Lease, VaultHttp, VaultLogin
from gateway.protocol.errors import ACCESS_DENIED, UPSTREAM_UNAVAILABLE, RpcError
from gateway.store.base import VaultLeaseRecord, VaultLeaseStore

log = logging.getLogger("narrowgate.leases")
RENEW_AT = 1 / 2  # of a lease's remaining life: time enough to retry a renewal Vault refused once
MIN_REMAINING_S = 1.0  # a lease closer than this to lapsing is not handed out; a new one is taken
SWEEP_INTERVAL_S = 30.0
ORPHAN_AFTER_S = 24 * 3600.0  # a record this old outlived any task (tasks last at most 8 h by default)
SYSTEM_ACTOR = "narrowgate"
CLOSE_LIMIT_S = 10.0  # a clean stop waits at most this long for Vault to revoke what is held here
SWEEP_CONCURRENCY = 8  # recorded leases revoked at once by a sweep
T = TypeVar("T")


class TaskTimes(Protocol):
    """What leases need to know of tasks (gateway.wiring.task_times adapts the task service)."""

    def deadline_of(self, task_id: str) -> float | None:
        """Until when the task may hold a lease (its deadline, or its agent's expiry if sooner) while the task
        and its agent are active here; None otherwise (ended, agent not active, or not known here)."""
        ...

    async def still_active(self, task_id: str) -> bool:
        """Whether the task is active, asking the store when this process does not know it (fleet)."""
        ...


@dataclass(slots=True)
class HeldLease:
    lease: Lease = field(repr=False)
    task_id: str
    server: ServerEntry = field(repr=False)
    expires_at: float
    renewing: bool = True  # False once Vault will not (or need not) extend it any further
    released: bool = False  # revoked (or being revoked): a task end and its deadline may both come
    keeper: asyncio.Task[None] | None = field(default=None, repr=False)
    # The header last built for it, with the server entry it was built from (a catalog reload may change it).
    rendered: tuple[ServerEntry, dict[str, str]] | None = field(default=None, repr=False)

    def usable(self, now: float) -> bool:
        """Far enough from lapsing to be handed out."""
        return self.expires_at - now >= MIN_REMAINING_S

    def header(self, server: ServerEntry) -> dict[str, str]:
        if self.rendered is None or self.rendered[0] is not server:
            self.rendered = (server, render(server, self.lease))
        return dict(self.rendered[1])

    @property
    def ref(self) -> LeaseRef:
        assert self.server.credentials.lease is not None
        return self.server.credentials.lease


class LeaseBroker:
    def __init__(self, vault: VaultHttp, store: VaultLeaseStore, audit: AuditLog, tasks: TaskTimes,
                 servers: Callable[[], Mapping[str, ServerEntry]], replica: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.vault = vault
        self.store = store
        self.audit = audit
        self.tasks = tasks
        self.deadline_of = tasks.deadline_of
        self.servers = servers  # the catalog's servers now (for revoking a recorded lease: where its Vault is)
        self.replica = replica
        self.clock = clock
        self.held: dict[tuple[str, str], HeldLease] = {}  # (task id, server id) -> its lease here, once published
        self.taking: dict[tuple[str, str], asyncio.Task[HeldLease]] = {}  # leases being taken (see take)
        self.pending: set[str] = set()  # lease ids taken but not yet published: the sweep leaves them alone
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.work: set[asyncio.Task[object]] = set()
        self.sweeper: asyncio.Task[None] | None = None
        self.started_at = clock()  # this replica's records from before then belong to a run that is gone
        self.records_left = True  # the last sweep found records (maybe of servers the catalog no longer has)

    # lifecycle

    async def open(self) -> None:
        """Keep sweeping, in the background from now on: what a previous run left behind is revoked
        without holding up the start (Vault may be slow or down)."""
        self.sweeper = asyncio.create_task(self.sweep_now_and_then(), name="narrowgate-lease-sweep")

    async def close(self) -> None:
        """A clean stop revokes every lease held here, all at once and within CLOSE_LIMIT_S (what Vault does not
        answer in time stays recorded and is revoked by the next run's sweep once its task has ended)."""
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        try:
            await asyncio.wait_for(self.release_all(), CLOSE_LIMIT_S)
        except TimeoutError:
            log.warning("Vault did not answer every revocation within %.0f s; the next start sweeps the rest",
                        CLOSE_LIMIT_S)

    async def release_all(self) -> None:
        await asyncio.gather(*self.taking.values(), return_exceptions=True)  # published (then revoked) or revoked
        await asyncio.gather(*(self.release(held, "the gateway stopped") for held in list(self.held.values())))
        await asyncio.gather(*self.work, return_exceptions=True)

    # the call path

    async def headers(self, server: ServerEntry, task_id: str | None) -> dict[str, str]:
        """The header carrying this task's leased credential for `server` (leased on first use)."""
        if task_id is None:
            raise RpcError(ACCESS_DENIED, f"Access denied: upstream {server.id!r} takes a credential leased for one "
                           "task; call it with a task token", {"decision": "deny"})
        key = (task_id, server.id)
        held = self.held.get(key)
        if held is None or not held.usable(self.clock()):
            async with self.locks.setdefault(key, asyncio.Lock()):  # one lease however many first calls wait
                held = await self.current(server, task_id)
        return held.header(server)

    async def current(self, server: ServerEntry, task_id: str) -> HeldLease:
        key = (task_id, server.id)
        held = self.held.get(key)
        if held is not None and held.usable(self.clock()):
            return held
        if held is not None:
            await self.release(held, "lapsed before it could be renewed")
        return await self.take(server, task_id)

    async def take(self, server: ServerEntry, task_id: str) -> HeldLease:
        """Lease for the task on a task of its own, awaited through a shield: a caller cancelled meanwhile
        leaves it running to its end (recorded and kept, or revoked), and a later call joins it."""
        if self.deadline_of(task_id) is None:
            raise ended(task_id)
        key = (task_id, server.id)
        taking = self.taking.get(key)
        if taking is None:
            taking = self.taking[key] = self.spawn(self.lease_for(server, task_id))
            taking.add_done_callback(lambda done: self.taking.pop(key) if self.taking.get(key) is done else None)
        return await asyncio.shield(taking)

    async def lease_for(self, server: ServerEntry, task_id: str) -> HeldLease:
        ref = server.credentials.lease
        assert ref is not None
        try:
            lease = await self.vault.lease(ref, ref.path)
        except SecretUnavailable as exc:
            raise RpcError(UPSTREAM_UNAVAILABLE, f"credentials for upstream {server.id!r}: {exc}") from None
        held = HeldLease(lease, task_id, server, self.clock() + lease.duration_s, renewing=lease.renewable)
        self.pending.add(lease.lease_id)  # the sweep never takes it for an orphan while it is being published
        try:
            await self.publish(held, ref)
        finally:
            self.pending.discard(lease.lease_id)
        self.audited("lease_issued", task_id, server.id, lease.lease_id,
                     {"duration_s": lease.duration_s, "renewable": lease.renewable})
        log.info("leased %s for task %s, upstream %s (%.0f s)", lease.lease_id, task_id, server.id, lease.duration_s)
        held.keeper = self.spawn(self.keep(held))
        return held

    async def publish(self, held: HeldLease, ref: LeaseRef) -> None:
        """Record the lease, check its task is still active, and only then hand it out (revoked otherwise)."""
        lease_id, task_id, server_id = held.lease.lease_id, held.task_id, held.server.id
        try:
            await self.store.save_vault_lease(VaultLeaseRecord(lease_id, task_id, server_id, self.replica,
                                                               self.clock(), ref.address, ref.namespace,
                                                               ref.token_env, ref.token_file))
        except Exception:
            log.exception("could not record Vault lease %s of task %s; revoking it", lease_id, task_id)
            await self.release(held, "its lease could not be recorded")
            raise RpcError(UPSTREAM_UNAVAILABLE, f"credentials for upstream {server_id!r}: the lease could not be "
                           "recorded, so it was revoked") from None
        if self.deadline_of(task_id) is None:  # the task (or its agent) ended while Vault answered
            await self.release(held, "the task ended while the lease was taken")
            raise ended(task_id)
        self.held[(task_id, server_id)] = held  # no await since the check: a task end now finds it here

    # renewal

    async def keep(self, held: HeldLease) -> None:
        """Renew until the task's limit (deadline or agent expiry), then revoke. Renewals ask for at most the
        time the task has left."""
        while True:
            deadline, now = self.deadline_of(held.task_id), self.clock()
            if deadline is None or now >= deadline or now >= held.expires_at:
                why = ("the task ended or its agent is no longer active" if deadline is None
                       else "the task's deadline (or its agent's expiry) passed" if now >= deadline
                       else "it lapsed at Vault")
                break
            if held.renewing and held.expires_at > deadline + 1:  # the role's TTL outlasts the task: shorten it
                if await self.renew(held, deadline - now) and held.expires_at > deadline + 1:
                    # Vault granted more than asked (an engine may): asking again would not shorten it, so
                    # renew no more; the lease is revoked at the task's limit all the same.
                    held.renewing = False
            elif not held.renewing or held.expires_at >= deadline - 1:
                await asyncio.sleep(min(deadline, held.expires_at) - now)
            else:
                await asyncio.sleep((held.expires_at - now) * RENEW_AT)
                if (deadline := self.deadline_of(held.task_id)) is not None:
                    await self.renew(held, min(held.ref.renew_increment_s, deadline - self.clock()))
        await self.release(held, why)

    async def renew(self, held: HeldLease, increment_s: float) -> bool:
        """Ask Vault for `increment_s` more; whether it answered (a refusal is retried by the caller's loop)."""
        if increment_s < 1:
            held.renewing = False
            return False
        try:
            granted = await self.vault.renew(held.ref, held.lease.lease_id, int(increment_s))
        except SecretUnavailable as exc:
            log.warning("renewing Vault lease %s of task %s failed (retrying): %s", held.lease.lease_id,
                        held.task_id, exc)
            await asyncio.sleep(min(5.0, max(0.5, (held.expires_at - self.clock()) / 4)))
            return False
        before, held.expires_at = held.expires_at, self.clock() + granted
        if held.expires_at <= before + 1 and increment_s > granted + 1:
            held.renewing = False  # Vault will not extend it further (the role's max TTL): it lapses then
        log.info("renewed Vault lease %s of task %s for %.0f s", held.lease.lease_id, held.task_id, granted)
        return True

    # ends

    def task_ended(self, task_id: str) -> None:
        """Task end observer (synchronous): revoke the task's leases, here and those recorded by others."""
        for key in [k for k in self.held if k[0] == task_id]:
            self.spawn(self.release(self.held[key], "task ended"))
        for key in [k for k in self.locks if k[0] == task_id]:
            del self.locks[key]  # the task makes no more calls
        if self.in_use():
            self.spawn(self.revoke_recorded(task_id))

    def in_use(self) -> bool:
        """Whether any upstream of the catalog takes leased credentials, or recorded leases are left (maybe of
        servers the catalog no longer has): no store reads otherwise."""
        return self.records_left or any(server.credentials.mode == "lease" for server in self.servers().values())

    async def release(self, held: HeldLease, why: str) -> None:
        """Revoke one held lease (idempotent at Vault); its record goes once Vault has said so."""
        if held.released:
            return
        held.released = True
        key = (held.task_id, held.server.id)
        if self.held.get(key) is held:
            del self.held[key]
        if held.keeper is not None and held.keeper is not asyncio.current_task():
            held.keeper.cancel()
        await self.revoke(held.ref, held.server.id, held.lease.lease_id, held.task_id, why)

    async def revoke_recorded(self, task_id: str | None = None) -> None:
        """Revoke recorded leases (of an ended task, or every orphan) at the Vault each was taken from."""
        try:
            records = await self.store.vault_leases(task_id)
        except Exception:
            log.exception("could not read the recorded Vault leases; the sweep retries")
            return
        if task_id is None:
            self.records_left = bool(records)
        at_once = asyncio.Semaphore(SWEEP_CONCURRENCY)

        async def revoke_one(record: VaultLeaseRecord) -> None:
            async with at_once:
                if task_id is not None or await self.orphaned(record):
                    await self.revoke(recorded_login(record), record.server_id, record.lease_id, record.task_id,
                                      "task ended")

        await asyncio.gather(*(revoke_one(record) for record in records))

    async def orphaned(self, record: VaultLeaseRecord) -> bool:
        """A recorded lease nobody uses any more: its task ended, its process is gone, or it is very old."""
        if record.lease_id in self.pending or any(h.lease.lease_id == record.lease_id for h in self.held.values()):
            return False
        mine_before = record.replica == self.replica and record.created_at < self.started_at
        if mine_before or self.clock() - record.created_at > ORPHAN_AFTER_S:
            return True
        return not await self.tasks.still_active(record.task_id)

    async def revoke(self, login: VaultLogin, server_id: str, lease_id: str, task_id: str, why: str) -> bool:
        try:
            await self.vault.revoke(login, lease_id)
        except SecretUnavailable as exc:
            log.warning("revoking Vault lease %s of task %s failed (the sweep retries): %s", lease_id, task_id, exc)
            self.audited("lease_revoke_failed", task_id, server_id, lease_id, {"why": why, "error": str(exc)})
            return False
        try:
            await self.store.delete_vault_lease(lease_id)
        except Exception:
            log.exception("Vault lease %s is revoked but its record stays (deleted by a later sweep)", lease_id)
        self.audited("lease_revoked", task_id, server_id, lease_id, {"why": why})
        log.info("revoked Vault lease %s of task %s (%s)", lease_id, task_id, why)
        return True

    async def sweep(self) -> None:
        """Revoke every recorded lease nobody uses any more; a failure is logged and retried next time."""
        try:
            await self.revoke_recorded(None)
        except Exception:
            log.exception("sweeping the recorded Vault leases failed; retrying later")

    async def sweep_now_and_then(self) -> None:
        while True:
            if self.in_use():
                await self.sweep()
            await asyncio.sleep(SWEEP_INTERVAL_S)

    # helpers

    def audited(self, action: str, task_id: str, server_id: str, lease_id: str, detail: dict[str, object]) -> None:
        self.audit.record(AuditEvent(kind="credential", action=action, actor=SYSTEM_ACTOR, task_id=task_id,
                                     detail={"server": server_id, "lease_id": lease_id, **detail}))

    def spawn(self, work: Coroutine[object, object, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(work)
        self.work.add(task)
        task.add_done_callback(finished)
        task.add_done_callback(self.work.discard)
        return task


def finished(task: asyncio.Task[object]) -> None:
    """Take a spawned task's outcome (its error was answered to whoever awaited it, or nobody waits any more)."""
    if not task.cancelled():
        task.exception()


def ended(task_id: str) -> RpcError:
    return RpcError(ACCESS_DENIED, f"Access denied: task {task_id} has ended", {"decision": "deny"})


def recorded_login(record: VaultLeaseRecord) -> LeaseRef:
    """The Vault a recorded lease was taken from, as whom: where to revoke it, whatever the catalog says now."""
    return LeaseRef(address=record.address, path="", token_env=record.token_env, token_file=record.token_file,
                    namespace=record.namespace)


def render(server: ServerEntry, lease: Lease) -> dict[str, str]:
    """`header: format` with the lease's fields filled in; a field the lease lacks fails the call."""
    credentials = server.credentials
    missing = [name for name in CREDENTIAL_FIELD.findall(credentials.header_format) if name not in lease.data]
    if missing:
        raise RpcError(UPSTREAM_UNAVAILABLE, f"credentials for upstream {server.id!r}: the leased credential has no "
                       f"field(s) {', '.join(missing)}")
    value = CREDENTIAL_FIELD.sub(lambda match: lease.data[match.group(1)], credentials.header_format)
    return {credentials.header: value}
