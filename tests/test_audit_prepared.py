"""The audit log serializes a record once, at enqueue (gateway.audit.prepared): the row and hash it gives must be
byte for byte those of the generic path (unsealed_record, then seal and audit_row in the store's transaction),
for any event, odd values included (tests/test_audit_bytes.py pins a fixed set against a recorded file)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import AuditEvent
from gateway.audit.chain import GENESIS_HASH, RECORD_FIELDS, record_hash, unsealed_record
from gateway.audit.digests import DigestKey
from gateway.audit.prepared import COLUMNS, PreparedRecord, _plain, prepared_record
from gateway.audit.shape import record_shape
from gateway.store.rows import audit_record, sealed_rows

DIGESTS = DigestKey(bytes(range(32))).keyed
# Most text plain (a lone surrogate or NUL sends the whole record down the slow path); some with anything.
_SAFE_TEXT = st.text(st.characters(codec="utf-8"), max_size=6) | st.sampled_from(
    ["plain", "é", '"q\\', "\u2028"])
_ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=6) | st.sampled_from(
    ["\ud800", "a\x00b"])
_PLAIN_LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
                 | st.floats(min_value=1e-4, max_value=1e300) | st.just(0.0) | _SAFE_TEXT)
_ODD_LEAVES = (st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True, allow_infinity=True)
               | st.floats(min_value=-1e-3, max_value=1e-3) | _ANY_TEXT)


def _values(leaves: st.SearchStrategy[Any], keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                        | st.dictionaries(keys, inner, max_size=3), max_leaves=8)


_DIGEST = st.none() | st.just("") | st.sampled_from(["ab" * 32, "hmac-sha256:" + "cd" * 32])
_ODD_DIGEST = st.sampled_from(["x\x00y", "\ud800"])


@st.composite
def events(draw: Any) -> AuditEvent:
    odd = draw(st.integers(0, 3)) == 0  # a quarter of the events may hold anything, the rest plain JSON
    text = _SAFE_TEXT | _ANY_TEXT if odd else _SAFE_TEXT
    values = _values(_PLAIN_LEAVES | _ODD_LEAVES, text) if odd else _values(_PLAIN_LEAVES, text)
    optional = st.none() | text
    return AuditEvent(
        kind=draw(text), action=draw(text), actor=draw(optional), agent_id=draw(optional),
        owner=draw(optional), task_id=draw(optional), tool=draw(optional),
        decision=draw(optional), policy_ids=tuple(draw(st.lists(text, max_size=3))),
        decision_id=draw(optional), trace_id=draw(optional),
        args_digest=draw(_DIGEST | _ODD_DIGEST if odd else _DIGEST),
        preview=draw(st.none() | st.dictionaries(text, values, max_size=3)),
        detail=draw(st.dictionaries(text | st.integers(), values, max_size=4) if odd
                    else st.dictionaries(text, values, max_size=4)),
    )


def generic(event: AuditEvent, at: float) -> dict[str, Any]:
    """What the audit log queued before records were prepared: unsealed_record with its digest keyed."""
    record = unsealed_record(event, at)
    if record["args_digest"]:
        record["args_digest"] = DIGESTS(record["args_digest"])
    return record


_AT = st.floats(min_value=0, max_value=4e9) | st.sampled_from([1_767_225_600.123456, 0.0, 1e-5, 2.5e-300])
_HEAD = st.sampled_from([(0, GENESIS_HASH), (41, "ab" * 32), (7, "not hex \"quoted\" é")])


_PATHS: Counter[str] = Counter()  # which path the generated batches took


def _check(batch: list[AuditEvent], at: float, head: tuple[int, str]) -> None:
    """The prepared rows are the generic rows (or both paths refuse the batch the same way)."""
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


@settings(max_examples=400, deadline=None)
@given(st.lists(events(), min_size=1, max_size=3), _AT, _HEAD)
def _generated_batches(batch: list[AuditEvent], at: float, head: tuple[int, str]) -> None:
    _PATHS.update(_path(event, at) for event in batch)
    _check(batch, at, head)


def _path(event: AuditEvent, at: float) -> str:
    try:
        return "fast" if _plain(event, at, DIGESTS) is not None else "slow"
    except (TypeError, ValueError, UnicodeError):  # what orjson refuses (a lone surrogate): the slow path too
        return "slow"


def test_prepared_rows_are_the_generic_rows() -> None:
    _PATHS.clear()
    _generated_batches()
    assert _PATHS["fast"] >= 200 and _PATHS["slow"] >= 100, _PATHS  # both paths, each many times


class _Detail(dict[str, Any]):
    """A dict subclass: orjson serializes it, the stdlib too, but is_plain does not vouch for it."""


PLAIN = AuditEvent(kind="decision", action="call", actor="a1", agent_id="a1", tool="srv__echo", decision="allow",
                   policy_ids=("p1",), decision_id="d-1", args_digest="ab" * 32, preview={"text": "hi"},
                   detail={"era": "2025-11-25", "n": [1, 2.5]})
_ODD = [float("nan"), float("inf"), -float("inf"), 1e-5, 2**64, -(2**63) - 1, {1: "int key"}, _Detail(x=1),
        (1, 1e-7)]


@pytest.mark.parametrize("field", ["detail", "preview"])
@pytest.mark.parametrize("leaf", _ODD, ids=repr)
def test_one_odd_leaf_takes_the_slow_path_with_the_same_bytes(field: str, leaf: Any) -> None:
    event = replace(PLAIN, **{field: {**(getattr(PLAIN, field) or {}), "odd": {"in": [leaf]}}})
    assert _path(PLAIN, 1.5) == "fast" and _path(event, 1.5) == "slow"
    _check([PLAIN, event], 1.5, (41, "ab" * 32))


def test_a_dict_subclass_as_the_whole_detail_gives_the_same_bytes() -> None:
    _check([replace(PLAIN, detail=_Detail(PLAIN.detail)), replace(PLAIN, preview=_Detail(x=float("nan")))],
           1.5, (0, GENESIS_HASH))


def test_a_prepared_record_holds_the_stored_columns() -> None:
    prepared = prepared_record(PLAIN, 1_767_225_600.5, DIGESTS)
    (row,), _, _ = sealed_rows([prepared], (0, GENESIS_HASH))
    stored = audit_record(row)
    assert prepared.columns == row[1:-2] and RECORD_FIELDS[1:-2] == COLUMNS
    assert stored["args_digest"] == DIGESTS("ab" * 32) and stored["detail"] == {"era": "2025-11-25", "n": [1, 2.5]}


def test_the_keyed_digest_is_hmac_sha256_for_any_key_length() -> None:
    import hmac
    import os

    from gateway.audit.digests import PREFIX

    for size in (1, 16, 32, 64, 65, 200):
        key = os.urandom(size)
        assert DigestKey(key).keyed("ab" * 32) == PREFIX + hmac.digest(key, ("ab" * 32).encode(), "sha256").hex()


@pytest.mark.parametrize("ids", ["p1", ["p1", "p2"], ("p1", 7)], ids=repr)
def test_policy_ids_of_any_iterable_give_the_generic_bytes(ids: Any) -> None:
    """A tuple or list of str is serialized as it is; anything else (a bare string, other member types) as the
    generic path reads it, member by member."""
    _check([replace(PLAIN, policy_ids=ids)], 1.5, (0, GENESIS_HASH))


def test_policy_ids_from_a_generator_are_read_once_and_kept() -> None:
    """A generator is consumed by the first look at it: the record must still hold every id (review finding)."""
    def event() -> AuditEvent:
        return replace(PLAIN, policy_ids=(policy_id for policy_id in ("p1", "p2")))  # type: ignore[arg-type]

    expected = sealed_rows([generic(event(), 1.5)], (0, GENESIS_HASH))
    assert sealed_rows([prepared_record(event(), 1.5, DIGESTS)], (0, GENESIS_HASH)) == expected
    (row,), _, _ = expected
    assert audit_record(row)["policy_ids"] == ["p1", "p2"]


def shaped(event: AuditEvent) -> tuple[AuditEvent, bool]:
    """`event` as the Authorizer makes a tool decision's event: the ten shared values its shape's own objects
    (gateway.audit.shape); and whether it has a shape (not when those values are not plain)."""
    shape = record_shape(event.kind, event.action, event.actor, event.agent_id, event.owner, event.task_id,
                         event.tool, event.decision, event.policy_ids, event.detail)  # type: ignore[arg-type]
    if shape is None:
        return event, False
    return AuditEvent(shape.kind, shape.action, shape.actor, shape.agent_id, shape.owner, shape.task_id, shape.tool,
                      shape.decision, shape.policy_ids, event.decision_id, event.trace_id, event.args_digest,
                      event.preview, shape.detail, shape), True


_SHAPED: Counter[bool] = Counter()


@settings(max_examples=300, deadline=None)
@given(st.lists(events(), min_size=1, max_size=3), _AT, _HEAD)
def _shaped_batches(batch: list[AuditEvent], at: float, head: tuple[int, str]) -> None:
    pairs = [shaped(event) for event in batch]
    _SHAPED.update(has for _, has in pairs)
    _check([event for event, _ in pairs], at, head)
    # A shape whose values are not the event's own objects any more (a copy with another answer or detail, a
    # field set afterwards, another event's shape) is not used: the same bytes still.
    first = pairs[0][0]
    _check([replace(first, decision="deny"), replace(first, detail={**first.detail, "approval_id": "apr_1"}),
            *(replace(event, shape=first.shape) for event in batch)], at, head)


def test_shaped_records_give_the_generic_rows() -> None:
    _SHAPED.clear()
    _shaped_batches()
    # Shaped and not, each many times: 190-283 shaped of 300 batches over 15 runs (200 failed one run in eight).
    assert _SHAPED[True] >= 100 and _SHAPED[False] >= 50, _SHAPED


def test_a_shaped_record_takes_the_shape_and_serializes_its_own_values() -> None:
    event, has = shaped(PLAIN)
    assert has and event.shape is not None and event == PLAIN  # the shape is not part of what the record says
    calls = [replace(event, decision_id=f"d-{n}", trace_id="ab" * 16 if n else None, args_digest=None if n else "x",
                     preview={"n": n, "v": "é\x00" if n == 2 else "x"}) for n in range(3)]
    _check(calls, 1.5, (41, "ab" * 32))
    assert prepared_record(calls[1], 1.5, DIGESTS).columns[-1] == event.shape.detail_text
    with pytest.raises(TypeError):  # an event's shared detail is read-only: it cannot change under its shape
        event.detail["era"] = "other"  # type: ignore[index]
