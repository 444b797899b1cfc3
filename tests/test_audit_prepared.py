"""The audit log serializes a record once, at enqueue (gateway.audit.prepared): the row and hash it gives must be
byte for byte those of the generic path (unsealed_record, then seal and audit_row in the store's transaction),
for any event, odd values included (tests/test_audit_bytes.py pins a fixed set against a recorded file)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import AuditEvent
from gateway.audit.chain import GENESIS_HASH, RECORD_FIELDS, record_hash, unsealed_record
from gateway.audit.digests import DigestKey
from gateway.audit.prepared import PreparedRecord, prepared_record
from gateway.store.rows import audit_record, sealed_rows

DIGESTS = DigestKey(bytes(range(32))).keyed
_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=6) | st.sampled_from(
    ["plain", "a\x00b", "\ud800", "é", '"q\\', "\u2028"])
_LEAVES = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.floats(min_value=-1e-3, max_value=1e-3) | _TEXT)
_VALUES = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                       | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=8)
_OPTIONAL_TEXT = st.none() | _TEXT
_DIGEST = st.none() | st.just("") | st.sampled_from(["ab" * 32, "hmac-sha256:" + "cd" * 32, "x\x00y", "\ud800"])


@st.composite
def events(draw: Any) -> AuditEvent:
    return AuditEvent(
        kind=draw(_TEXT), action=draw(_TEXT), actor=draw(_OPTIONAL_TEXT), agent_id=draw(_OPTIONAL_TEXT),
        owner=draw(_OPTIONAL_TEXT), task_id=draw(_OPTIONAL_TEXT), tool=draw(_OPTIONAL_TEXT),
        decision=draw(_OPTIONAL_TEXT), policy_ids=tuple(draw(st.lists(_TEXT, max_size=3))),
        decision_id=draw(_OPTIONAL_TEXT), trace_id=draw(_OPTIONAL_TEXT), args_digest=draw(_DIGEST),
        preview=draw(st.none() | st.dictionaries(_TEXT, _VALUES, max_size=3)),
        detail=draw(st.dictionaries(_TEXT | st.integers(), _VALUES, max_size=4)),
    )


def generic(event: AuditEvent, at: float) -> dict[str, Any]:
    """What the audit log queued before records were prepared: unsealed_record with its digest keyed."""
    record = unsealed_record(event, at)
    if record["args_digest"]:
        record["args_digest"] = DIGESTS(record["args_digest"])
    return record


_AT = st.floats(min_value=0, max_value=4e9) | st.sampled_from([1_767_225_600.123456, 0.0, 1e-5, 2.5e-300])
_HEAD = st.sampled_from([(0, GENESIS_HASH), (41, "ab" * 32), (7, "not hex \"quoted\" é")])


@settings(max_examples=400, deadline=None)
@given(st.lists(events(), min_size=1, max_size=3), _AT, _HEAD)
def test_prepared_rows_are_the_generic_rows(batch: list[AuditEvent], at: float, head: tuple[int, str]) -> None:
    try:
        expected = sealed_rows([generic(event, at) for event in batch], head)
    except (TypeError, ValueError, UnicodeError) as exc:  # refused at enqueue before: refused now the same way
        try:
            [prepared_record(event, at, DIGESTS) for event in batch]
        except type(exc):
            return
        raise AssertionError(f"the generic path refused ({exc!r}), the prepared one did not") from None
    prepared = [prepared_record(event, at, DIGESTS) for event in batch]
    assert all(type(record) is PreparedRecord for record in prepared)
    assert sealed_rows(prepared, head) == expected
    rows, _, _ = expected
    for row in rows:  # and the chain verifies as stored
        stored = audit_record(row)
        assert stored["hash"] == record_hash(stored)


def test_a_prepared_record_reads_as_the_stored_record() -> None:
    event = AuditEvent(kind="decision", action="call", actor="a1", agent_id="a1", tool="srv__echo", decision="allow",
                       policy_ids=("p1",), decision_id="d-1", args_digest="ab" * 32, preview={"text": "hi"},
                       detail={"era": "2025-11-25", "n": [1, 2.5]})
    prepared = prepared_record(event, 1_767_225_600.5, DIGESTS)
    (row,), _, _ = sealed_rows([prepared], (0, GENESIS_HASH))
    stored = audit_record(row)
    assert dict(prepared) == {name: stored[name] for name in RECORD_FIELDS if name in prepared}
    assert set(prepared) == set(RECORD_FIELDS) - {"seq", "prev_hash", "hash"}
    assert prepared["args_digest"] == DIGESTS("ab" * 32) and prepared["detail"] == {"era": "2025-11-25", "n": [1, 2.5]}


def test_the_keyed_digest_is_hmac_sha256_for_any_key_length() -> None:
    import hmac
    import os

    from gateway.audit.digests import PREFIX

    for size in (1, 16, 32, 64, 65, 200):
        key = os.urandom(size)
        assert DigestKey(key).keyed("ab" * 32) == PREFIX + hmac.digest(key, ("ab" * 32).encode(), "sha256").hex()
