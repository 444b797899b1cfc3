"""Recorded decision inputs: what Cedar saw for one decision, sealed for the store.

A record holds the Cedar request (principal, action, resource), the entities exactly as sent (the
agent's record, groups and token claims as they were, the tool and its server), the whole context
(the call's arguments, the task, the chain signals and the request time, so time-dependent rules are
decided again at the recorded time), and what was decided live (outcome, determining policies,
policy version), linked to the audit record by the decision id.

Arguments are sensitive, so the whole document is encrypted with AES-256-GCM under
a key the gateway generates on first start and keeps in its state store beside its signing keys
(`gateway_secrets`, like the argument-digest key); the decision id is the associated data, so a
payload moved to another row does not open. The row's plain columns (time, agent, target, outcome)
are what the audit record of the decision shows anyway. Not compressed: zlib cost several times what
serializing and encrypting cost together (bench/recording.py), and the writer's CPU is the gateway's.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from gateway.store.base import GatewaySecretStore

KEY_NAME = "decision-input-key"
KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT = 1  # the document's shape; a reader refuses a format it does not know


class UnreadableRecord(ValueError):
    """A payload that does not open with this gateway's key (or is not one of ours)."""


class InputCipher:
    """Seals and opens recorded decision inputs. Holds the key; never shows it."""

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = AESGCM(key) if key is not None else None

    def __repr__(self) -> str:
        return "InputCipher(loaded)" if self._aead is not None else "InputCipher(not loaded)"

    async def load(self, store: GatewaySecretStore) -> None:
        self._aead = AESGCM(await store.gateway_secret(KEY_NAME, secrets.token_bytes(KEY_BYTES)))

    def seal(self, decision_id: str, document: Mapping[str, Any]) -> bytes:
        aead = self._loaded()
        nonce = os.urandom(NONCE_BYTES)
        return nonce + aead.encrypt(nonce, orjson.dumps({"format": FORMAT, **document}), decision_id.encode())

    def open(self, decision_id: str, payload: bytes) -> dict[str, Any]:
        aead = self._loaded()
        try:
            plain = aead.decrypt(payload[:NONCE_BYTES], payload[NONCE_BYTES:], decision_id.encode())
            document = orjson.loads(plain)
        except (InvalidTag, orjson.JSONDecodeError, ValueError) as exc:
            raise UnreadableRecord(f"recorded input {decision_id} does not open: {type(exc).__name__}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise UnreadableRecord(f"recorded input {decision_id} has an unknown format")
        return document

    def _loaded(self) -> AESGCM:
        if self._aead is None:
            raise RuntimeError("the decision input key is not loaded")
        return self._aead
