"""Argument digests leave the gateway keyed (gateway.audit.digests): the key, its storage, the audit log."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from gateway.audit import AuditEvent, AuditLog
from gateway.audit.digests import KEY_NAME, PREFIX, DigestKey
from gateway.store import Store, open_store
from gateway.store.base import AuditQuery
from gateway.verifier import argument_digest

PLAIN = argument_digest({"amount": 120, "currency": "EUR"})


def test_a_keyed_digest_cannot_be_computed_from_the_arguments_alone() -> None:
    key = DigestKey(b"k" * 32)
    keyed = key.keyed(PLAIN)
    assert keyed == PREFIX + hmac.new(b"k" * 32, PLAIN.encode(), hashlib.sha256).hexdigest()
    assert keyed == key.keyed(PLAIN)  # the same call shows the same value
    assert keyed != DigestKey(b"j" * 32).keyed(PLAIN) and PLAIN not in keyed
    assert key.keyed(keyed) == keyed  # keying twice changes nothing


def test_without_its_key_no_digest_is_exposed() -> None:
    with pytest.raises(RuntimeError, match="not loaded"):
        DigestKey().keyed(PLAIN)
    assert "k" * 32 not in repr(DigestKey(b"k" * 32))


async def test_the_key_is_made_once_and_kept_in_the_state_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/gw.db"
    first = open_store(url)
    await first.migrate()
    key = DigestKey()
    await key.load(first)
    await first.close()
    again = open_store(url)  # a restart, or another process on the same store
    await again.migrate()
    assert await again.gateway_secret(KEY_NAME, b"another candidate") != b"another candidate"
    reloaded = DigestKey()
    await reloaded.load(again)
    assert reloaded.keyed(PLAIN) == key.keyed(PLAIN)
    await again.close()


async def test_the_audit_log_writes_argument_digests_keyed(store: Store) -> None:
    key = DigestKey(b"k" * 32)
    log = AuditLog(store, digests=key.keyed)
    await log.open()
    await log.record_durable(AuditEvent(kind="decision", action="call", actor="agent-a", args_digest=PLAIN))
    await log.record_durable(AuditEvent(kind="decision", action="call", actor="agent-a"))
    await log.close()
    records = await store.audit_records(AuditQuery())
    assert [r["args_digest"] for r in records] == [key.keyed(PLAIN), None]
