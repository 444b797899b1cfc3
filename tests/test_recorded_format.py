"""Recorded decision inputs, format 2: the entities travel as JSON inside the sealed document (not as a string
of JSON, whose escaping cost more than the rest), come back from `open` as the text Cedar was sent, and
records written in format 1 still open."""

from __future__ import annotations

import os

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.policy.recorded import FORMAT, NONCE_BYTES, InputCipher, UnreadableRecord

KEY = bytes(range(32))
ENTITIES = ('[{"uid":{"type":"Agent","id":"a1"},"attrs":{"owner":"o@example.com","groups":["eng"],"n":3,'
            '"claims":{"__entity":{"type":"Claim","id":"x \\"quoted\\" é"}}},"parents":[]},'
            '{"uid":{"type":"Tool","id":"srv__echo"},"attrs":{},"parents":[]}]')
DOCUMENT = {"kind": "tool", "target": "srv__echo", "principal": {"type": "Agent", "id": "a1"}, "entities": ENTITIES,
            "context": {"input": {"text": "hi"}}, "decision_id": "dec_1", "at": 1.5, "arguments": {"text": "hi"}}


def _plain(decision_id: str, payload: bytes) -> dict[str, object]:
    opened: dict[str, object] = orjson.loads(AESGCM(KEY).decrypt(payload[:NONCE_BYTES], payload[NONCE_BYTES:],
                                                                 decision_id.encode()))
    return opened


def test_entities_are_sealed_as_json_and_open_as_the_text_sent() -> None:
    cipher = InputCipher(KEY)
    (payload,) = cipher.seal_all([("dec_1", DOCUMENT)])
    inside = _plain("dec_1", payload)
    assert inside["format"] == FORMAT == 2
    assert inside["entities"] == orjson.loads(ENTITIES)  # JSON, not a string of JSON
    assert cipher.open("dec_1", payload) == {"format": FORMAT, **DOCUMENT}
    with pytest.raises(UnreadableRecord):
        cipher.open("dec_2", payload)


def test_a_batch_gets_one_fresh_nonce_per_document() -> None:
    cipher = InputCipher(KEY)
    batches = [cipher.seal_all([(f"dec_{n}", {**DOCUMENT, "decision_id": f"dec_{n}"}) for n in range(50)])
               for _ in range(2)]
    assert len({payload[:NONCE_BYTES] for payloads in batches for payload in payloads}) == 100  # across batches too
    payloads = batches[1]
    assert [cipher.open(f"dec_{n}", payload)["decision_id"] for n, payload in enumerate(payloads)] == [
        f"dec_{n}" for n in range(50)]


def test_format_1_records_still_open() -> None:
    nonce = os.urandom(NONCE_BYTES)
    old = nonce + AESGCM(KEY).encrypt(nonce, orjson.dumps({"format": 1, **DOCUMENT}), b"dec_1")
    assert InputCipher(KEY).open("dec_1", old) == {"format": 1, **DOCUMENT}


def test_an_unknown_format_is_refused() -> None:
    nonce = os.urandom(NONCE_BYTES)
    future = nonce + AESGCM(KEY).encrypt(nonce, orjson.dumps({"format": 3, **DOCUMENT}), b"dec_1")
    with pytest.raises(UnreadableRecord, match="format 3; this gateway reads 1-2: upgrade"):
        InputCipher(KEY).open("dec_1", future)
