"""Argument digests as they leave the gateway: keyed with HMAC-SHA256 under a secret of this gateway.

Inside the process a call's canonical arguments are bound by their plain SHA-256
(gateway.verifier.argument_digest): an approval matches a retried call on it exactly, and the per-call
upstream token carries it as `args_sha256` (the upstream receives those arguments anyway, and checks
the claim without any secret of ours). Anywhere else a plain digest is an oracle: when the arguments
come from a small space (an amount, a recipient from a short list), whoever reads the digest tries
every candidate and learns the arguments they were not shown. So every digest a person or another
system can read (approval API, console, CLI, audit log) is `hmac-sha256:<hex>` of the plain digest
under a key generated on the gateway's first start and kept in its state store: the same call still
shows the same value, and nobody without the key can test a guess.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.store.base import GatewaySecretStore

KEY_NAME = "argument-digest-key"
KEY_BYTES = 32
PREFIX = "hmac-sha256:"


class DigestKey:
    """Turns plain argument digests into the keyed form that may leave the process."""

    def __init__(self, key: bytes | None = None) -> None:
        self._pads = None if key is None else _hmac_pads(key)

    def __repr__(self) -> str:
        return "DigestKey(loaded)" if self._pads is not None else "DigestKey(not loaded)"

    async def load(self, store: GatewaySecretStore) -> None:
        self._pads = _hmac_pads(await store.gateway_secret(KEY_NAME, secrets.token_bytes(KEY_BYTES)))

    def keyed(self, digest: str) -> str:
        if digest.startswith(PREFIX):
            return digest  # keyed already (e.g. a record written again)
        if self._pads is None:
            raise RuntimeError("the argument digest key is not loaded; refusing to expose a plain digest")
        inner, outer = self._pads[0].copy(), self._pads[1].copy()
        inner.update(digest.encode("ascii"))
        outer.update(inner.digest())
        return PREFIX + outer.hexdigest()


def _hmac_pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256 (RFC 2104) with the key's two padded blocks hashed once: per digest, two copies of a hash
    state instead of the key set-up hmac.digest repeats (half the instructions; the same bytes)."""
    block = hashlib.sha256().block_size
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    return (hashlib.sha256(bytes(byte ^ 0x36 for byte in key)), hashlib.sha256(bytes(byte ^ 0x5C for byte in key)))
