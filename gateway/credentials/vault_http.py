"""The few HashiCorp Vault HTTP API calls the gateway makes, and nothing else.

KV v2 (read, metadata, write with check-and-set, destroy), dynamic-secrets leases (create, renew,
revoke). Every error names the Vault address and the path, never a token or a secret value.
The gateway's own Vault token comes from an environment variable or a file, read at each call
(so it can be rotated in place) and sent only in `X-Vault-Token`.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from gateway.credentials.secret_errors import SecretUnavailable

VAULT_TIMEOUT_S = 5.0
FRACTION = re.compile(r"(\.\d{6})\d+")  # Vault writes nanoseconds; fromisoformat takes microseconds


class VaultLogin(Protocol):
    """Where Vault is and as whom the gateway talks to it (VaultRef and LeaseRef both are)."""

    @property
    def address(self) -> str: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def token_env(self) -> str: ...
    @property
    def token_file(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Lease:
    """A leased credential: `data` is the secret (kept in memory only, never logged)."""

    lease_id: str
    duration_s: float
    renewable: bool
    data: dict[str, str]

    def __repr__(self) -> str:  # a lease in a log line or a traceback shows no credential
        return f"Lease({self.lease_id!r}, {self.duration_s:.0f}s)"


@dataclass(frozen=True, slots=True)
class KvMetadata:
    current_version: int
    created: dict[int, str]  # version -> created_time (RFC 3339), live versions only (not deleted or destroyed)


def live(meta: dict[str, Any], now: float) -> bool:
    """Neither destroyed nor deleted. With `delete_version_after` Vault gives every version a FUTURE
    deletion_time: the version is deleted only once that time has come."""
    if meta.get("destroyed"):
        return False
    deletion = str(meta.get("deletion_time") or "")
    if not deletion:
        return True
    when = epoch_of(deletion)
    return when is not None and when > now  # an unreadable deletion_time counts as deleted (fail closed)


def epoch_of(text: str) -> float | None:
    """Vault's RFC 3339 time (created_time, deletion_time) as epoch seconds; None if absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(FRACTION.sub(r"\1", text.replace("Z", "+00:00"))).timestamp()
    except ValueError:
        return None


class CasMismatch(SecretUnavailable):
    """A KV v2 write lost a check-and-set race: someone else wrote a version first."""


class VaultHttp:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.http: aiohttp.ClientSession | None = None
        self.clock = clock

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None

    async def request(self, login: VaultLogin, method: str, path: str, body: dict[str, Any] | None = None,
                      ) -> dict[str, Any]:
        """One call to `{address}/v1/{path}`; the JSON answer ({} for 204). SecretUnavailable otherwise."""
        where = f"Vault {login.address} {path.split('?')[0]}"
        headers = {"X-Vault-Token": await vault_token(login, where)}
        if login.namespace:
            headers["X-Vault-Namespace"] = login.namespace
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=VAULT_TIMEOUT_S))
        try:
            async with self.http.request(method, f"{login.address}/v1/{path}", headers=headers, json=body) as answer:
                if answer.status == 204:
                    return {}
                if answer.status == 400 and "check-and-set" in await answer.text():
                    raise CasMismatch(f"{where}: another version was written first")
                if answer.status != 200:
                    raise SecretUnavailable(f"{where}: Vault answered HTTP {answer.status}")
                reply: dict[str, Any] = await answer.json()
                return reply
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SecretUnavailable(f"{where}: Vault is unreachable ({type(exc).__name__})") from None

    # KV v2

    async def kv_read(self, login: VaultLogin, mount: str, path: str, version: int | None = None,
                      ) -> tuple[dict[str, Any], int]:
        """A KV v2 secret's data and version (the current one unless `version` is given)."""
        query = "" if version is None else f"?version={version}"
        body = await self.request(login, "GET", f"{mount}/data/{path}{query}")
        data = body.get("data") or {}
        return dict(data.get("data") or {}), int((data.get("metadata") or {}).get("version") or 0)

    async def kv_metadata(self, login: VaultLogin, mount: str, path: str) -> KvMetadata:
        data = (await self.request(login, "GET", f"{mount}/metadata/{path}")).get("data") or {}
        versions = data.get("versions") or {}
        now = self.clock()
        alive = {int(v): str(meta.get("created_time") or "") for v, meta in versions.items() if live(meta, now)}
        return KvMetadata(int(data.get("current_version") or 0), alive)

    async def kv_write(self, login: VaultLogin, mount: str, path: str, data: dict[str, Any], cas: int) -> int:
        """Write a new version, only if `cas` is still the current one (CasMismatch otherwise)."""
        body = await self.request(login, "POST", f"{mount}/data/{path}", {"data": data, "options": {"cas": cas}})
        return int((body.get("data") or {}).get("version") or 0)

    async def kv_destroy(self, login: VaultLogin, mount: str, path: str, versions: list[int]) -> None:
        await self.request(login, "PUT", f"{mount}/destroy/{path}", {"versions": versions})

    # leases

    async def lease(self, login: VaultLogin, path: str) -> Lease:
        body = await self.request(login, "GET", path)
        data = body.get("data")
        lease_id = body.get("lease_id")
        if not isinstance(lease_id, str) or not lease_id or not isinstance(data, dict):
            raise SecretUnavailable(f"Vault {login.address} {path}: the answer holds no lease")
        return Lease(lease_id, float(body.get("lease_duration") or 0), bool(body.get("renewable")),
                     {str(k): str(v) for k, v in data.items()})

    async def renew(self, login: VaultLogin, lease_id: str, increment_s: int) -> float:
        """Renew for `increment_s` from now (Vault may grant less); the lease's new duration."""
        body = await self.request(login, "PUT", "sys/leases/renew", {"lease_id": lease_id, "increment": increment_s})
        return float(body.get("lease_duration") or 0)

    async def revoke(self, login: VaultLogin, lease_id: str) -> None:
        await self.request(login, "PUT", "sys/leases/revoke", {"lease_id": lease_id})


async def vault_token(login: VaultLogin, where: str) -> str:
    """The gateway's Vault token, read at each use (a file off the event loop), so it can be replaced in place."""
    if login.token_file:
        try:
            token = (await asyncio.to_thread(Path(login.token_file).read_text, encoding="utf-8")).strip()
        except OSError as exc:
            raise SecretUnavailable(f"{where}: cannot read the Vault token file {login.token_file}: "
                                    f"{exc.strerror}") from None
        if not token:
            raise SecretUnavailable(f"{where}: the Vault token file {login.token_file} is empty")
        return token
    from_env = os.environ.get(login.token_env)
    if not from_env:
        raise SecretUnavailable(f"{where}: environment variable {login.token_env} (the Vault token) is not set")
    return from_env
