"""What a run of audit records has in common, serialized once (gateway.audit.prepared uses it).

An agent calling one tool under one policy version gets the same record, call after call, but for five values:
the time, the decision id, the argument digest, the preview and the trace id. A RecordShape holds the other
ten (kind .. detail) and the canonical JSON around the five, so enqueueing such a record serializes only
those five. An event names its shape (AuditEvent.shape); the shape is used only while every one of the ten
values of the event is the very object the shape was made from (an event copied with another outcome or
detail, or a field set afterwards, is serialized in full), so the bytes are those of the full path: the
hashed text is sorted-key canonical JSON either way (tests/test_audit_prepared.py compares them).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from gateway.audit.canonical import is_plain

NUL = b"\\u0000"  # a NUL in a text field is replaced before hashing: such records take the full path
TEXT_OR_NONE = frozenset({str, type(None)})
# kind, action, actor, agent_id, owner, task_id, tool, decision, policy_ids (the detail apart)
SharedValues = tuple[str, str, str, str | None, str | None, str | None, str | None, str | None, tuple[str, ...]]


class RecordShape:
    """The ten shared values of a run of records and their serialized text; made by `record_shape`."""

    __slots__ = ("action", "actor", "after", "agent_id", "decided", "decision", "detail", "detail_text", "head",
                 "kind", "owner", "policy_ids", "policy_ids_text", "tail", "task_id", "tool")

    def __init__(self, values: SharedValues, detail: Mapping[str, Any], pieces: tuple[bytes, bytes, bytes, bytes],
                 texts: tuple[str, str]) -> None:
        (self.kind, self.action, self.actor, self.agent_id, self.owner, self.task_id, self.tool, self.decision,
         self.policy_ids) = values
        self.detail = detail  # read-only: an event holds this very object while it has this shape
        # The hashed text is head + args_digest + ',"at":' + at + decided + decision_id + tail + <prev_hash ..>
        # + after + trace_id + "}" (canonical JSON: the keys in sorted order).
        self.head, self.decided, self.tail, self.after = pieces
        self.policy_ids_text, self.detail_text = texts  # the stored JSON columns


def record_shape(kind: str, action: str, actor: str, agent_id: str | None, owner: str | None,
                 task_id: str | None, tool: str | None, decision: str | None, policy_ids: tuple[str, ...],
                 detail: Mapping[str, Any]) -> RecordShape | None:
    """The shape of records with these values (`detail` copied, read-only); None when they are not plain
    (not exactly str, not plain JSON, or with NUL): such records are serialized in full each time."""
    texts = (kind, action, actor, agent_id, owner, task_id, tool, decision)
    if (type(actor) is not str or not TEXT_OR_NONE.issuperset(map(type, texts)) or type(policy_ids) is not tuple
            or not all(type(policy_id) is str for policy_id in policy_ids)
            or type(detail) is not dict or not is_plain(detail)):
        return None
    detail = dict(detail)
    try:
        policy_ids_json = orjson.dumps(policy_ids)
        detail_json = orjson.dumps(detail, option=orjson.OPT_SORT_KEYS)
        head = orjson.dumps({"action": action, "actor": actor, "agent_id": agent_id})
        middle = orjson.dumps({"decision": decision})
        tail = orjson.dumps({"detail": orjson.Fragment(detail_json), "kind": kind, "owner": owner,
                             "policy_ids": orjson.Fragment(policy_ids_json)})
        after = orjson.dumps({"task_id": task_id, "tool": tool})
    except (orjson.JSONEncodeError, UnicodeEncodeError):
        return None  # a lone surrogate
    pieces = (head[:-1] + b',"args_digest":', b',' + middle[1:-1] + b',"decision_id":',
              b',' + tail[1:-1] + b',"prev_hash":', b',' + after[1:-1] + b',"trace_id":')
    if any(NUL in piece for piece in pieces):
        return None
    return RecordShape((kind, action, actor, agent_id, owner, task_id, tool, decision, policy_ids),
                       MappingProxyType(detail), pieces, (policy_ids_json.decode(), detail_json.decode()))
