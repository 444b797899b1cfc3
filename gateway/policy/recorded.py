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

Format 2 holds the entities (JSON text the engine made for Cedar) as JSON, not as a string of JSON: escaping
~1.5 KB of quotes cost more than serializing the rest of the document. `open` gives them back as text, as
format 1 held them, so readers see one shape; format 1 records still open.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from gateway.store.base import GatewaySecretStore

KEY_NAME = "decision-input-key"
KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT = 2  # the document's shape; a reader refuses a format it does not know
_READABLE = frozenset({1, FORMAT})


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

    def seal_all(self, documents: Sequence[tuple[str, Mapping[str, Any]]]) -> list[bytes]:
        """Each (decision_id, document) encrypted, the decision id as associated data: one random read for all
        the nonces (each still its own 12 random bytes)."""
        aead = self._loaded()
        nonces = os.urandom(NONCE_BYTES * len(documents))
        payloads = []
        for start, (decision_id, document) in zip(range(0, len(nonces), NONCE_BYTES), documents, strict=True):
            nonce = nonces[start:start + NONCE_BYTES]
            payloads.append(nonce + aead.encrypt(nonce, _plaintext(document), decision_id.encode()))
        return payloads

    def open(self, decision_id: str, payload: bytes) -> dict[str, Any]:
        aead = self._loaded()
        try:
            plain = aead.decrypt(payload[:NONCE_BYTES], payload[NONCE_BYTES:], decision_id.encode())
            document = orjson.loads(plain)
        except (InvalidTag, orjson.JSONDecodeError, ValueError) as exc:
            raise UnreadableRecord(f"recorded input {decision_id} does not open: {type(exc).__name__}") from None
        if not isinstance(document, dict):
            raise UnreadableRecord(f"recorded input {decision_id} is not a recorded decision")
        if document.get("format") not in _READABLE:
            raise UnreadableRecord(f"recorded input {decision_id} is in format {document.get('format')!r}; this "
                                   f"gateway reads {min(_READABLE)}-{max(_READABLE)}: upgrade it to replay it")
        entities = document.get("entities")
        if entities is not None and not isinstance(entities, str):  # format 2: back to the text Cedar was sent
            document["entities"] = orjson.dumps(entities).decode()
        return document

    def _loaded(self) -> AESGCM:
        if self._aead is None:
            raise RuntimeError("the decision input key is not loaded")
        return self._aead


def _plaintext(document: Mapping[str, Any]) -> bytes:
    plain = {"format": FORMAT, **document}
    entities = plain.get("entities")
    if isinstance(entities, str):  # JSON already: spliced in as it is (orjson checks nothing of a Fragment)
        plain["entities"] = orjson.Fragment(entities)
    return orjson.dumps(plain)
