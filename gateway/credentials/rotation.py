"""Rotation of the static per-server secrets the gateway owns (`secret.vault.rotate`, KV v2).

A rotation writes a new version (check-and-set on the version the decision was made from, so two
replicas never both rotate: the one that finds Vault moved on reports "rotated elsewhere"), makes
the gateway use it at once, and leaves the previous version readable for the overlap window: the
upstream, which checks what it receives against the live versions, accepts both while calls made
just before the rotation finish. After the window the old version is destroyed. Everything is
derived from Vault's own metadata (versions and their created_time), so a restart or another
replica carries on where this one stopped. A current version whose created_time is unknown is
never rotated (that is audited as a failure): rotating on a guess could rotate without end.

Every rotation, retirement and failed attempt is audited (server, path, versions; never a value).
When Vault is unreachable nothing changes: the current version stays in use and the schedule
tries again after `RETRY_S`. Schedules follow the catalog: `reconcile` starts and stops them
when the servers that own a rotated secret change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.audit import AuditEvent, AuditLog
from gateway.catalog.model import Rotation, ServerEntry, VaultRef
from gateway.credentials.secret_errors import SecretUnavailable
from gateway.credentials.secret_sources import SecretResolver
from gateway.credentials.vault_http import CasMismatch, KvMetadata, epoch_of

log = logging.getLogger("narrowgate.rotation")
RETRY_S = 60.0  # after a failed attempt (Vault down, token refused)
LONGEST_NAP_S = 300.0  # look at Vault's metadata at least this often (another replica may have rotated)
PAUSE_AFTER_ROTATION_S = 5.0  # a scheduled rotation is never followed by another sooner than this


class NotRotatable(Exception):
    """The server has no gateway-owned secret to rotate."""


@dataclass(frozen=True, slots=True)
class Rotated:
    server_id: str
    path: str
    from_version: int
    to_version: int
    retire_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server_id, "path": self.path, "from_version": self.from_version,
                "to_version": self.to_version, "retire_at": self.retire_at}


class SecretRotation:
    def __init__(self, resolver: SecretResolver, audit: AuditLog, servers: Callable[[], Mapping[str, ServerEntry]],
                 clock: Callable[[], float] = time.time, retry_s: float = RETRY_S) -> None:
        self.resolver = resolver
        self.vault = resolver.vault
        self.audit = audit
        self.servers = servers
        self.clock = clock
        self.retry_s = retry_s
        self.locks: dict[str, asyncio.Lock] = {}
        self.schedules: dict[str, asyncio.Task[None]] = {}
        self.wake: dict[str, asyncio.Event] = {}
        self.reconciled: Mapping[str, ServerEntry] | None = None  # the servers mapping schedules were set for

    async def open(self) -> None:
        self.reconcile()

    def reconcile(self) -> None:
        """One schedule for each server whose secret the gateway owns now: started for a server the catalog
        added (or gave `rotate`), stopped for one it dropped. Cheap when the catalog's servers did not change."""
        servers = self.servers()
        if servers is self.reconciled:
            return
        self.reconciled = servers
        wanted = {server_id for server_id, server in servers.items() if owned(server) is not None}
        for server_id in [s for s, task in self.schedules.items() if s not in wanted or task.done()]:
            self.schedules.pop(server_id).cancel()
        for server_id in sorted(wanted - self.schedules.keys()):
            self.wake.setdefault(server_id, asyncio.Event())
            self.schedules[server_id] = asyncio.create_task(self.tend_forever(server_id),
                                                            name=f"narrowgate-rotation-{server_id}")

    async def close(self) -> None:
        for task in self.schedules.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.schedules.clear()

    # on demand (CLI, admin API)

    async def rotate_now(self, server_id: str, actor: str) -> Rotated:
        """Rotate at once; NotRotatable or SecretUnavailable (audited, nothing changed) otherwise."""
        server = self.servers().get(server_id)
        ref = owned(server) if server is not None else None
        if server is None or ref is None:
            raise NotRotatable(f"upstream {server_id!r} has no secret the gateway rotates "
                               "(secret.vault.rotate in its manifest)")
        try:
            rotated = await self.rotate(server, ref, actor, "on demand")
        except SecretUnavailable as exc:
            self.failed(server, ref, actor, exc)
            raise
        self.reconciled = None
        self.reconcile()  # a server the catalog gave `rotate` since the last look gets its schedule now
        self.wake[server.id].set()  # the schedule plans the retirement
        return rotated

    # the schedule

    async def tend_forever(self, server_id: str) -> None:
        while True:
            server = self.servers().get(server_id)
            ref = owned(server) if server is not None else None
            if server is None or ref is None:
                return
            try:
                nap = await self.tend(server, ref)
            except SecretUnavailable as exc:
                self.failed(server, ref, "narrowgate", exc)
                nap = self.retry_s
            except Exception:
                log.exception("secret rotation for upstream %s failed; retrying", server_id)
                nap = self.retry_s
            event = self.wake[server_id]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=max(0.05, min(nap, LONGEST_NAP_S)))
            event.clear()

    async def tend(self, server: ServerEntry, ref: VaultRef) -> float:
        """Retire what is due, rotate when due; seconds until the next thing to do."""
        rotation = ref.rotation
        assert rotation is not None
        metadata = await self.vault.kv_metadata(ref, ref.mount, ref.path)
        next_retirement = await self.retire_due(server, ref, rotation, metadata)
        waits = [next_retirement]
        if rotation.every_s is not None:
            created = epoch_of(metadata.created.get(metadata.current_version, ""))
            if created is None:  # deleted, destroyed or unreadable: never rotate on a guess
                raise SecretUnavailable(f"Vault {ref.address} {ref.mount}/metadata/{ref.path}: the created_time of "
                                        f"current version {metadata.current_version} is unknown; not rotating")
            due = created + rotation.every_s
            if self.clock() >= due:
                await self.rotate(server, ref, "narrowgate", "schedule", metadata.current_version)
                return PAUSE_AFTER_ROTATION_S  # then plan the retirement of the version just replaced
            waits.append(due - self.clock())
        return min(waits)

    async def retire_due(self, server: ServerEntry, ref: VaultRef, rotation: Rotation, metadata: KvMetadata) -> float:
        """Destroy each live version older than the current one whose successor was written more than the
        overlap ago; seconds until the next retirement (LONGEST_NAP_S if none is pending)."""
        now, nap = self.clock(), LONGEST_NAP_S
        for version in sorted(v for v in metadata.created if v < metadata.current_version):
            successor = min((v for v in metadata.created if v > version), default=metadata.current_version)
            replaced = epoch_of(metadata.created.get(successor, ""))
            if replaced is None:
                continue
            retire_at = replaced + rotation.overlap_s
            if now < retire_at:
                nap = min(nap, retire_at - now)
                continue
            await self.vault.kv_destroy(ref, ref.mount, ref.path, [version])
            self.record(server, ref, "secret_retired", "narrowgate", {"version": version, "replaced_by": successor})
            log.info("upstream %s: version %d of %s/%s retired (destroyed) after the overlap", server.id, version,
                     ref.mount, ref.path)
        return nap

    async def rotate(self, server: ServerEntry, ref: VaultRef, actor: str, trigger: str,
                     decided_on: int | None = None) -> Rotated:
        """Write a new version over `decided_on` (the version the schedule found due; on demand: the current
        one). If Vault has moved on from it, another replica (or person) rotated: use theirs, no second write."""
        rotation = ref.rotation
        assert rotation is not None
        async with self.locks.setdefault(server.id, asyncio.Lock()):
            data, current = await self.vault.kv_read(ref, ref.mount, ref.path)
            cas = current if decided_on is None else decided_on
            if current != cas:
                return await self.rotated_elsewhere(server, ref, rotation, cas)
            data[ref.field] = secrets.token_urlsafe(rotation.length)
            try:
                version = await self.vault.kv_write(ref, ref.mount, ref.path, data, cas=cas)
            except CasMismatch:
                return await self.rotated_elsewhere(server, ref, rotation, cas)
            self.resolver.forget(ref)  # calls from now on carry the new version
        rotated = Rotated(server.id, f"{ref.mount}/{ref.path}", current, version, self.clock() + rotation.overlap_s)
        self.record(server, ref, "secret_rotated", actor, {"from_version": current, "to_version": version,
                                                           "trigger": trigger, "overlap_s": rotation.overlap_s})
        log.info("upstream %s: %s/%s rotated (%s) from version %d to %d; version %d retires in %.0f s", server.id,
                 ref.mount, ref.path, trigger, current, version, current, rotation.overlap_s)
        return rotated

    async def rotated_elsewhere(self, server: ServerEntry, ref: VaultRef, rotation: Rotation, cas: int) -> Rotated:
        """Another replica (or person) wrote first: use theirs, and do not rotate twice (nor audit it twice)."""
        self.resolver.forget(ref)
        _, version = await self.vault.kv_read(ref, ref.mount, ref.path)
        log.info("upstream %s: %s/%s was rotated elsewhere (now version %d)", server.id, ref.mount, ref.path, version)
        return Rotated(server.id, f"{ref.mount}/{ref.path}", cas, version, self.clock() + rotation.overlap_s)

    def failed(self, server: ServerEntry, ref: VaultRef, actor: str, exc: SecretUnavailable) -> None:
        log.warning("upstream %s: rotating %s/%s failed, the current version stays in use: %s", server.id,
                    ref.mount, ref.path, exc)
        self.record(server, ref, "secret_rotation_failed", actor, {"error": str(exc)})

    def record(self, server: ServerEntry, ref: VaultRef, action: str, actor: str, detail: dict[str, Any]) -> None:
        self.audit.record(AuditEvent(kind="credential", action=action, actor=actor,
                                     detail={"server": server.id, "vault": ref.address,
                                             "path": f"{ref.mount}/{ref.path}", **detail}))


def owned(server: ServerEntry | None) -> VaultRef | None:
    """The server's KV v2 secret if the gateway rotates it."""
    secret = server.credentials.secret if server is not None else None
    if secret is None or secret.vault is None or secret.vault.rotation is None:
        return None
    return secret.vault
