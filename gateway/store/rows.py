"""Rows as every backend stores them: model <-> column values, and query filters, written once.

SQLite and PostgreSQL store the same columns with the same text (JSON documents included), so a
row means the same on both and the audit chain hashes the same bytes. Filters are `(clause, value)`
pairs whose clause has one `{}` where the backend puts its placeholder (`?` or `$n`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.approvals.model import Approval
from gateway.audit.chain import RECORD_FIELDS, canonical_json, seal
from gateway.audit.prepared import PreparedRecord
from gateway.discovery.model import ResourceReview, ToolReview
from gateway.registry.model import Agent, Lifecycle, LifecycleEvent, agent_from_dict, agent_to_dict
from gateway.store.base import AuditedDecision, AuditedDecisionQuery, AuditQuery, DecisionInputQuery, DecisionInputRow
from gateway.tasks.model import Task, TaskEvent, TaskState, link_from_dict, link_to_dict

Filters = list[tuple[str, Any]]

AGENT_COLUMNS = "id, state, created_at, changed_at, expires_at, doc"
AGENT_EVENT_COLUMNS = "agent_id, action, from_state, to_state, actor, reason, at, fields"
TASK_COLUMNS = (
    "id, agent_id, purpose, tools, deadline, budget, calls_made, state, started_by, started_at, ended_at, end_reason,"
    " parent_id, chain"
)
TASK_EVENT_COLUMNS = "task_id, from_state, to_state, actor, reason, at"
APPROVAL_COLUMNS = "id, state, agent_id, task_id, created_at, expires_at, doc"
TOOL_REVIEW_COLUMNS = "server_id, name, status, changed_at, doc"
RESOURCE_REVIEW_COLUMNS = "server_id, kind, key, status, changed_at, doc"
SIGNING_KEY_COLUMNS = "kid, alg, private_key_pem, created_at, not_after, state"
AUDIT_COLUMNS = ", ".join(RECORD_FIELDS)
_AUDIT_JSON_FIELDS = frozenset({"policy_ids", "preview", "detail"})


def where(filters: Filters, placeholder: Callable[[int], str], first: int = 1) -> tuple[str, list[Any]]:
    """` WHERE a AND b` (or "") and its parameters; placeholder(n) spells parameter n (numbered from `first`)."""
    clauses = [clause.format(placeholder(first + n)) for n, (clause, _) in enumerate(filters)]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), [value for _, value in filters]


def present(*filters: tuple[str, Any]) -> Filters:
    """The filters whose value is set (not None)."""
    return [(clause, value) for clause, value in filters if value is not None]


# agents


def agent_row(agent: Agent) -> tuple[Any, ...]:
    doc = json.dumps(agent_to_dict(agent), sort_keys=True)
    return (agent.id, agent.state.value, agent.created_at, agent.changed_at, agent.expires_at, doc)


def agent_from_doc(doc: str) -> Agent:
    return agent_from_dict(json.loads(doc))


def agent_event_row(agent: Agent, event: LifecycleEvent) -> tuple[Any, ...]:
    if event.agent_id != agent.id:
        raise ValueError(f"event for agent {event.agent_id!r} cannot be saved with agent {agent.id!r}")
    from_state = None if event.from_state is None else event.from_state.value
    return (event.agent_id, event.action, from_state, event.to_state.value, event.actor, event.reason, event.at,
            json.dumps(list(event.fields)))


def agent_event_from_row(row: Sequence[Any]) -> LifecycleEvent:
    return LifecycleEvent(
        agent_id=row[0],
        from_state=None if row[2] is None else Lifecycle(row[2]),
        to_state=Lifecycle(row[3]),
        actor=row[4],
        reason=row[5],
        at=row[6],
        action=row[1],
        fields=tuple(json.loads(row[7])),
    )


# tasks


def task_row(task: Task) -> tuple[Any, ...]:
    return (task.id, task.agent_id, task.purpose, json.dumps(list(task.tools)), task.deadline, task.budget,
            task.calls_made, task.state.value, task.started_by, task.started_at, task.ended_at, task.end_reason,
            task.parent_id, json.dumps([link_to_dict(link) for link in task.chain]))


def task_from_row(row: Sequence[Any]) -> Task:
    return Task(
        id=row[0],
        agent_id=row[1],
        purpose=row[2],
        tools=tuple(json.loads(row[3])),
        deadline=row[4],
        budget=row[5],
        calls_made=row[6],
        state=TaskState(row[7]),
        started_by=row[8],
        started_at=row[9],
        ended_at=row[10],
        end_reason=row[11],
        parent_id=row[12],
        chain=tuple(link_from_dict(link) for link in json.loads(row[13] or "[]")),
    )


def task_event_row(task: Task, event: TaskEvent) -> tuple[Any, ...]:
    if event.task_id != task.id:
        raise ValueError(f"event for task {event.task_id!r} cannot be saved with task {task.id!r}")
    from_state = None if event.from_state is None else event.from_state.value
    return (event.task_id, from_state, event.to_state.value, event.actor, event.reason, event.at)


def task_event_from_row(row: Sequence[Any]) -> TaskEvent:
    return TaskEvent(row[0], None if row[1] is None else TaskState(row[1]), TaskState(row[2]), row[3], row[4], row[5])


def task_list_query(clause: str, limit_placeholder: str | None) -> str:
    """list_tasks' query, oldest first; with a limit, the newest `limit` rows of the filter (so a
    listing never loads more rows than it may return, however many tasks the store holds)."""
    if limit_placeholder is None:
        return f"SELECT {TASK_COLUMNS} FROM tasks{clause} ORDER BY started_at, id"
    newest = f"SELECT {TASK_COLUMNS} FROM tasks{clause} ORDER BY started_at DESC, id DESC LIMIT {limit_placeholder}"
    return f"SELECT {TASK_COLUMNS} FROM ({newest}) AS newest ORDER BY started_at, id"


def task_filters(agent_id: str | None, state: str | None, ended_since: float | None,
                 ended_only: bool = False) -> Filters:
    """list_tasks' filters; `ended_since` keeps active tasks plus those that ended at or after it
    (`ended_only`: only those)."""
    since = "ended_at >= {}" if ended_only else "(state = 'active' OR ended_at >= {})"
    return present(("agent_id = {}", agent_id), ("state = {}", state), (since, ended_since))


# approvals and reviews: a JSON document plus the columns queries need


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def approval_row(approval: Approval) -> tuple[Any, ...]:
    return (approval.id, approval.state.value, approval.agent_id, approval.task_id, approval.created_at,
            approval.expires_at, compact_json(approval.to_dict()))


def approval_from_doc(doc: str) -> Approval:
    return Approval.from_dict(json.loads(doc))


def tool_review_row(review: ToolReview) -> tuple[Any, ...]:
    return (review.server_id, review.name, review.status, review.changed_at, compact_json(review.to_dict()))


def tool_review_from_doc(doc: str) -> ToolReview:
    return ToolReview.from_dict(json.loads(doc))


def resource_review_row(review: ResourceReview) -> tuple[Any, ...]:
    return (review.server_id, review.kind, review.key, review.status, review.changed_at,
            compact_json(review.to_dict()))


def resource_review_from_doc(doc: str) -> ResourceReview:
    return ResourceReview.from_dict(json.loads(doc))


# the audit log


def audit_row(sealed: Mapping[str, Any]) -> tuple[Any, ...]:
    """A sealed record's column values; JSON fields as canonical text, the very text that was hashed."""
    return tuple(_audit_column(name, sealed[name]) for name in RECORD_FIELDS)


def sealed_rows(records: Sequence[Mapping[str, Any] | PreparedRecord],
                head: tuple[int, str]) -> tuple[list[tuple[Any, ...]], int, str]:
    """Seal `records` in order after `head` (seq, hash): their rows and the new head. Call it inside the
    write transaction, after reading the head there, so seq and prev_hash follow commit order."""
    seq, prev_hash = head
    rows = []
    for record in records:
        seq += 1
        if isinstance(record, PreparedRecord):  # the audit log's: serialized at enqueue, the same bytes
            row, prev_hash = record.sealed_row(seq, prev_hash)
            rows.append(row)
            continue
        sealed = seal(_storable(record), seq, prev_hash)
        prev_hash = sealed["hash"]
        rows.append(audit_row(sealed))
    return rows, seq, prev_hash


def _storable(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """`record` with NUL in its text columns replaced: PostgreSQL text cannot hold NUL, and one record the
    database refuses would jam the log (its batch is retried until written). JSON columns escape NUL already.
    Done before sealing, on every backend, so the hash covers what is stored and one chain means the same
    wherever it is kept."""
    if not any(isinstance(value, str) and "\x00" in value for value in record.values()):
        return record
    return {name: value.replace("\x00", "\ufffd") if isinstance(value, str) else value
            for name, value in record.items()}


def audit_record(row: Sequence[Any]) -> dict[str, Any]:
    record = dict(zip(RECORD_FIELDS, row, strict=True))
    for name in _AUDIT_JSON_FIELDS:
        record[name] = _json_or_text(record[name])
    return record


def audit_filters(query: AuditQuery) -> Filters:
    return present(
        ("seq > {}", query.after_seq or None),
        ("seq < {}", query.before_seq),
        ("agent_id = {}", query.agent_id),
        ("tool = {}", query.tool),
        ("decision = {}", query.decision),
        ("kind = {}", query.kind),
        ("at >= {}", query.since),
        ("at < {}", query.until),
    )


def audited_decision_filters(query: AuditedDecisionQuery) -> Filters:
    return [("at >= {}", query.since), ("at < {}", query.until), ("kind = {}", "decision"),
            *present(("agent_id = {}", query.agent_id))]


def audited_decision(row: Sequence[Any]) -> AuditedDecision:
    """(seq, decision_id, at) -> the audited decision."""
    seq, decision_id, at = row
    return AuditedDecision(str(decision_id or ""), float(at), int(seq))


def after_key(after: tuple[float, int] | None, placeholder: Callable[[int], str], first: int,
              joiner: str) -> tuple[str, list[Any]]:
    """The keyset condition of a page in (at, seq) order after `after` (the last row read), or nothing."""
    if after is None:
        return "", []
    return f"{joiner}(at, seq) > ({placeholder(first)}, {placeholder(first + 1)})", [after[0], after[1]]


def _audit_column(name: str, value: Any) -> Any:
    if name in _AUDIT_JSON_FIELDS:
        return None if value is None else canonical_json(value)
    return value


def _json_or_text(text: str | None) -> Any:
    # A tampered column may not be JSON any more: keep its text, so verify reports a hash
    # mismatch at that seq instead of crashing.
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


# recorded decision inputs

DECISION_INPUT_COLUMNS = "decision_id, at, agent_id, kind, target, outcome, payload"
assert DECISION_INPUT_COLUMNS.split(", ") == list(DecisionInputRow._fields[:7])  # decision_input_row slices


def decision_input_row(row: DecisionInputRow) -> tuple[object, ...]:
    return row[:7]  # DECISION_INPUT_COLUMNS are its first seven fields, in order (all but the store's seq)


def decision_input_from_row(row: Sequence[Any]) -> DecisionInputRow:
    """(seq, *DECISION_INPUT_COLUMNS) -> the row."""
    seq, decision_id, at, agent_id, kind, target, outcome, payload = row
    return DecisionInputRow(str(decision_id), float(at), str(agent_id), str(kind), str(target), str(outcome),
                            bytes(payload), int(seq))


def decision_input_filters(query: DecisionInputQuery) -> Filters:
    return present(
        ("seq > {}", None if query.by_time else query.after_seq or None),
        ("at >= {}", query.since),
        ("at < {}", query.until),
        ("agent_id = {}", query.agent_id),
    )
