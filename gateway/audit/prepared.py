"""An audit record serialized once, at enqueue: its stored columns and the hashed text, but for seq and prev_hash.

The chain's hash (gateway.audit.chain) is sha256(prev_hash + canonical_json(record without "hash")), and the
stored JSON columns are canonical_json of each JSON field. Canonical JSON is the record's "key":value pairs in
sorted key order, so the hashed text is the same pairs cut at the two fields only the writer knows:

    {<action .. policy_ids>,"prev_hash":<prev_hash>,"preview":<preview>,"seq":<seq>,<task_id .. trace_id>}

Enqueueing serializes each JSON field once (its column text, spliced into the hashed text as it is) and the
text around the two gaps; the writer joins five pieces and hashes them. The bytes are those `seal` and
`audit_row` give for the same event (tests/test_audit_bytes.py): the same normalization (`json_normalized`,
only when a value is not plain JSON), the same NUL replacement, the same canonical spelling.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable
from typing import Any

import orjson

from gateway.audit.canonical import canonical_bytes, is_plain, json_normalized, plain_number
from gateway.audit.chain import RECORD_FIELDS, TEXT_FIELDS, raw_record
from gateway.audit.model import AuditEvent
from gateway.audit.shape import NUL, TEXT_OR_NONE, RecordShape

# The hashed fields in canonical (sorted) order, cut where the writer's seq and prev_hash go.
_BEFORE = ("action", "actor", "agent_id", "args_digest", "at", "decision", "decision_id", "detail", "kind", "owner",
           "policy_ids")
_AFTER = ("task_id", "tool", "trace_id")
COLUMNS = RECORD_FIELDS[1:-2]  # the stored columns between seq and prev_hash
_columns = operator.itemgetter(*COLUMNS)
_texts = operator.attrgetter(*TEXT_FIELDS)  # in the order _plain unpacks them
_TEXT = frozenset({str})
_SEQUENCES = (tuple, list)
assert sorted((*_BEFORE, "prev_hash", "preview", "seq", *_AFTER)) == [*_BEFORE, "prev_hash", "preview", "seq", *_AFTER]
assert RECORD_FIELDS[0] == "seq" and RECORD_FIELDS[-2:] == ("prev_hash", "hash")

StoredValue = str | int | float | None  # one column as stored (a JSON column as its canonical text)


class PreparedRecord:
    """One unsealed audit record, serialized: `sealed_row(seq, prev_hash)` gives its stored row and hash."""

    __slots__ = ("_after", "_before", "_middle", "columns")

    def __init__(self, columns: tuple[StoredValue, ...], before: bytes, middle: bytes, after: bytes) -> None:
        self.columns = columns  # the stored values of COLUMNS (JSON columns as their canonical text)
        self._before = before  # b'{"action":..,"policy_ids":..,"prev_hash":'
        self._middle = middle  # b',"preview":..,"seq":'
        self._after = after  # b',"task_id":..,"trace_id":..}'

    def sealed_row(self, seq: int, prev_hash: str) -> tuple[tuple[StoredValue, ...], str]:
        """The stored row (RECORD_FIELDS order) as entry `seq` after the record hashed `prev_hash`, and its hash."""
        prev = prev_hash.encode("utf-8", "surrogatepass")
        quoted = b'"' + prev + b'"' if prev.isalnum() else canonical_bytes(prev_hash)  # a hex digest needs no escape
        digest = hashlib.sha256(b"".join((prev, self._before, quoted, self._middle, str(seq).encode(),
                                          self._after))).hexdigest()
        return (seq, *self.columns, prev_hash, digest), digest


def prepared_record(event: AuditEvent, at: float, digests: Callable[[str], str] | None = None) -> PreparedRecord:
    """`event` as the record gateway.audit.chain.unsealed_record makes of it (its argument digest keyed by
    `digests`), serialized for the writer."""
    at = float(at)
    try:
        shape = event.shape
        prepared = _plain(event, at, digests) if shape is None else _shaped(event, shape, at, digests)
        if prepared is not None:
            return prepared
    except (orjson.JSONEncodeError, UnicodeEncodeError):
        pass  # a lone surrogate (orjson refuses it, and so does the ASCII-only digest key): normalized below
    # Not plain JSON (or NUL in a text field): normalized as unsealed_record normalizes it, then spelled by
    # the stdlib where orjson's spelling would differ.
    return _normalized(json_normalized(raw_record(event, at)), digests)


def _plain(event: AuditEvent, at: float, digests: Callable[[str], str] | None) -> PreparedRecord | None:
    """The common case, serialized by orjson with no copy or walk beyond is_plain; None when it does not apply."""
    # Serialized below, before this returns: a dict needs no copy (unsealed_record copies to keep it).
    preview = event.preview if event.preview is None or type(event.preview) is dict else dict(event.preview)
    detail = event.detail if type(event.detail) is dict else dict(event.detail)
    if not plain_number(at) or not is_plain(detail) or not is_plain(preview):
        return None
    texts = _texts(event)
    if not TEXT_OR_NONE.issuperset(map(type, texts)):  # the types looked at in C; converted only when needed
        texts = tuple(value if value is None or type(value) is str else str(value) for value in texts)
    kind, action, actor, agent_id, owner, task_id, tool, decision, decision_id, trace_id, args_digest = texts
    if actor is None:
        actor = ""
    if digests is not None and args_digest:
        args_digest = digests(args_digest)
    ids = event.policy_ids
    # A tuple or list of str as it is; anything else (a generator, a bare string) read once, as raw_record does.
    plain_ids = type(ids) in _SEQUENCES and _TEXT.issuperset(map(type, ids))
    policy_ids = orjson.dumps(ids if plain_ids else [str(policy_id) for policy_id in ids])
    detail_json = orjson.dumps(detail, option=orjson.OPT_SORT_KEYS)
    preview_json = None if preview is None else orjson.dumps(preview, option=orjson.OPT_SORT_KEYS)
    before = orjson.dumps({  # in sorted key order already; the JSON fields spliced in as serialized above
        "action": action, "actor": actor, "agent_id": agent_id, "args_digest": args_digest, "at": at,
        "decision": decision, "decision_id": decision_id, "detail": orjson.Fragment(detail_json), "kind": kind,
        "owner": owner, "policy_ids": orjson.Fragment(policy_ids)})
    after = orjson.dumps({"task_id": task_id, "tool": tool, "trace_id": trace_id})
    if NUL in before or NUL in after:
        return None  # maybe NUL in a text field: replaced before hashing (rows._storable), on the slow path
    # COLUMNS by position (no dict of them: this runs per call; _normalized goes by name)
    columns = (at, kind, action, actor, agent_id, owner, task_id, tool, decision, policy_ids.decode(), decision_id,
               trace_id, args_digest, None if preview_json is None else preview_json.decode(), detail_json.decode())
    return _spliced(columns, before, after, preview_json)


def _shaped(event: AuditEvent, shape: RecordShape, at: float, digests: Callable[[str], str] | None
            ) -> PreparedRecord | None:
    """_plain for an event of a known shape: only its own five values serialized; the rest as the shape has it.
    Any of the shape's values not the very object it was made from (a copy with another outcome or detail, a
    field set afterwards): _plain, which serializes everything."""
    if (event.detail is not shape.detail or event.decision is not shape.decision or event.tool is not shape.tool
            or event.agent_id is not shape.agent_id or event.policy_ids is not shape.policy_ids
            or event.kind is not shape.kind or event.action is not shape.action or event.actor is not shape.actor
            or event.owner is not shape.owner or event.task_id is not shape.task_id):
        return _plain(event, at, digests)
    args_digest, decision_id, trace_id, preview = event.args_digest, event.decision_id, event.trace_id, event.preview
    if not TEXT_OR_NONE.issuperset((type(args_digest), type(decision_id), type(trace_id))):
        return _plain(event, at, digests)  # converted by str() there
    if preview is not None and type(preview) is not dict:
        preview = dict(preview)
    if not plain_number(at) or not is_plain(preview):
        return None
    if digests is not None and args_digest:
        args_digest = digests(args_digest)
    digest_json, decision_json, trace_json = orjson.dumps(args_digest), orjson.dumps(decision_id), orjson.dumps(
        trace_id)
    if NUL in decision_json or NUL in trace_json or NUL in digest_json:
        return None  # replaced before hashing (rows._storable), on the slow path
    preview_json = None if preview is None else orjson.dumps(preview, option=orjson.OPT_SORT_KEYS)
    columns = (at, shape.kind, shape.action, shape.actor, shape.agent_id, shape.owner,
               shape.task_id, shape.tool, shape.decision, shape.policy_ids_text, decision_id, trace_id, args_digest,
               None if preview_json is None else preview_json.decode(), shape.detail_text)
    return PreparedRecord(
        columns, b"".join((shape.head, digest_json, b',"at":', orjson.dumps(at), shape.decided, decision_json,
                           shape.tail)),
        _middle(preview_json), b"".join((shape.after, trace_json, b"}")))


def _normalized(record: dict[str, Any], digests: Callable[[str], str] | None) -> PreparedRecord:
    """The slow path, for a record json_normalized already: every piece by canonical_bytes."""
    if digests is not None and record["args_digest"]:
        record["args_digest"] = digests(record["args_digest"])
    for name in TEXT_FIELDS:  # what rows._storable does at write: PostgreSQL text cannot hold NUL
        value = record[name]
        if value is not None and "\x00" in value:
            record[name] = value.replace("\x00", "\ufffd")
    preview = None if record["preview"] is None else canonical_bytes(record["preview"])
    columns = _columns({**record, "policy_ids": canonical_bytes(record["policy_ids"]).decode(),
                        "preview": None if preview is None else preview.decode(),
                        "detail": canonical_bytes(record["detail"]).decode()})
    return _spliced(columns, canonical_bytes({name: record[name] for name in _BEFORE}),
                    canonical_bytes({name: record[name] for name in _AFTER}), preview)


def _spliced(columns: tuple[StoredValue, ...], before: bytes, after: bytes, preview: bytes | None) -> PreparedRecord:
    """The record with these columns whose hashed text is the serialized `before` object, prev_hash, the
    serialized preview, seq, and the serialized `after` object."""
    return PreparedRecord(columns, before[:-1] + b',"prev_hash":', _middle(preview), b"," + after[1:])


def _middle(preview: bytes | None) -> bytes:
    """The hashed text between prev_hash and seq: the serialized preview."""
    return b',"preview":' + (b"null" if preview is None else preview) + b',"seq":'
