"""Per-server secrets for upstreams that cannot verify gateway tokens: env, file or Vault KV v2.

Read at call time (files when they change, Vault through a short cache), so rotating a secret
at its source takes effect without a restart. A secret value never reaches a log, an error
message or a trace; errors name only where the secret should have come from.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from gateway.catalog.model import SecretRef, VaultRef
from gateway.credentials.secret_errors import SecretUnavailable
from gateway.credentials.vault_http import VaultHttp

__all__ = ["SecretResolver", "SecretUnavailable"]


@dataclass(slots=True)
class _Cached:
    value: str
    stamp: float  # a file's (mtime, inode, size) hash, or when a Vault value was read


class SecretResolver:
    def __init__(self, vault_ttl_s: float = 30.0) -> None:
        self.vault_ttl_s = vault_ttl_s
        self.cache: dict[str, _Cached] = {}
        self.vault = VaultHttp()  # shared with leases and rotation (one connection pool to Vault)
        self.locks: dict[str, asyncio.Lock] = {}
        # Per Vault key, bumped by forget(): a read begun before a forget (an older version) is not cached.
        self.generations: dict[str, int] = {}

    async def close(self) -> None:
        await self.vault.close()

    async def value(self, ref: SecretRef) -> str:
        if ref.source == "env":
            return self.from_env(ref.name)
        if ref.source == "file":
            return self.from_file(ref.name)
        assert ref.vault is not None
        return await self.from_vault(ref.vault)

    @staticmethod
    def from_env(name: str) -> str:
        value = os.environ.get(name)
        if not value:
            raise SecretUnavailable(f"environment variable {name} is not set")
        return value

    def from_file(self, path: str) -> str:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise SecretUnavailable(f"cannot read secret file {path}: {exc.strerror}") from None
        # Inode and size too: a rotation within one timestamp tick must still be seen.
        stamp = hash((stat.st_mtime_ns, stat.st_ino, stat.st_size))
        cached = self.cache.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached.value
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().strip()
        except OSError as exc:
            raise SecretUnavailable(f"cannot read secret file {path}: {exc.strerror}") from None
        if not value:
            raise SecretUnavailable(f"secret file {path} is empty")
        self.cache[path] = _Cached(value, stamp)
        return value

    async def from_vault(self, vault: VaultRef) -> str:
        key = vault_cache_key(vault)
        cached = self.cache.get(key)
        if cached is not None and time.monotonic() - cached.stamp < self.vault_ttl_s:
            return cached.value
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:  # one read per secret at a time, however many calls wait for it
            cached = self.cache.get(key)
            if cached is not None and time.monotonic() - cached.stamp < self.vault_ttl_s:
                return cached.value
            generation = self.generations.get(key, 0)
            value = await self.read_vault(vault)
            if self.generations.get(key, 0) == generation:
                self.cache[key] = _Cached(value, time.monotonic())
            return value

    def forget(self, vault: VaultRef) -> None:
        """Drop the cached value (the gateway just wrote a new version): the next call reads it afresh, and a
        read in flight now (which may bring the older version) is not cached."""
        key = vault_cache_key(vault)
        self.generations[key] = self.generations.get(key, 0) + 1
        self.cache.pop(key, None)

    async def read_vault(self, vault: VaultRef) -> str:
        data, _ = await self.vault.kv_read(vault, vault.mount, vault.path)
        value = data.get(vault.field)
        if not isinstance(value, str) or not value:
            where = f"Vault {vault.address} {vault.mount}/{vault.path}"
            raise SecretUnavailable(f"{where}: field {vault.field!r} is missing")
        return value


def vault_cache_key(vault: VaultRef) -> str:
    # Namespace and token are part of the identity of a read: two upstreams must never share one.
    return (f"vault:{vault.address}|{vault.namespace or ''}|{vault.mount}/{vault.path}#{vault.field}"
            f"|{vault.token_env}|{vault.token_file}")
