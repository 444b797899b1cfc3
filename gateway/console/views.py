"""What the console's pages show, shaped for the templates (which only format and escape)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from gateway.catalog.definitions import definition_diff, description_diff, is_hidden, reveal_hidden
from gateway.discovery.model import APPROVED, REJECTED, ResourceReview, ToolReview, by_person
from gateway.links import resource_path, tool_path
from gateway.registry.model import Entitlement
from gateway.tasks.model import Task, TaskState

RECENT_TASKS_S = 24 * 3600.0  # ended tasks stay on the tasks page this long
TASKS_LIMIT = 200
DECIDED_LIMIT = 50  # recently decided tools, resources and templates on the catalog page
SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}
# Who settles a tool without a person: a manifest pin, first sight, or a definition changed back.


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One decision record as the decisions page shows it: never its argument preview."""

    at: float
    agent_id: str
    tool: str
    decision: str
    policy_ids: tuple[str, ...]
    decision_id: str
    trace_id: str = ""
    approval_id: str | None = None  # the approval this decision asked for, used or ran with
    ran_with_approval: bool = False  # decided with context.approval.granted


def when(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def when_short(epoch: float | None) -> str:
    """Minutes are enough in a table row (the request's own page has the seconds)."""
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def time_left(epoch: float, now: float) -> str:
    seconds = int(epoch - now)
    if seconds <= 0:
        return "now"
    hours, rest = divmod(seconds, 3600)
    minutes = rest // 60
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min" if minutes else f"{seconds} s"


def actor_label(actor: str | None, static_roles: Mapping[str, str]) -> str:
    """An audit actor as people read it: `alice (admin)`, not `admin:alice`; `sub (OIDC)` for OIDC."""
    if not actor:
        return "—"
    kind, _, name = actor.partition(":")
    if kind == "admin" and name:
        role = static_roles.get(name)
        return f"{name} ({role})" if role else name
    if kind == "oidc" and name:
        return f"{name} (OIDC)"
    return "the gateway" if actor == "narrowgate" else actor


def entitlement_lines(entitlement: Entitlement) -> list[str]:
    """What an agent may ever be granted, one line per kind (the agents page)."""
    lines = []
    if entitlement.servers:
        lines.append("servers: " + ", ".join(entitlement.servers))
    if entitlement.tools:
        lines.append("tools: " + ", ".join(entitlement.tools))
    if not lines:
        lines.append("nothing")
    lines.append("calls need a task token" if entitlement.require_task else "calls without a task allowed")
    return lines


def pretty_json(value: Any) -> str:
    """The (already redacted) argument preview as indented JSON; the template escapes it."""
    if value is None:
        return "(no arguments recorded)"
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def recent_tasks(tasks: Iterable[Task], now: float) -> list[Task]:
    """Active tasks and those ended within RECENT_TASKS_S, newest first."""
    shown = [t for t in tasks if t.state is TaskState.ACTIVE or (t.ended_at or 0.0) >= now - RECENT_TASKS_S]
    return sorted(shown, key=lambda t: t.started_at, reverse=True)[:TASKS_LIMIT]


class ApprovalLinks:
    """Which approval a decision record belongs to. One approved call leaves three decisions, recorded
    apart: the step-up that asked (the approval's decision id), the step-up of the call that used it (a
    held call decided again after the wait, or the pending-mode retry: the approval's used decision id)
    and the allow that ran with it (`detail.approval_id` on the decision record)."""

    def __init__(self, by_decision: Mapping[str, str] | None = None) -> None:
        self.by_decision = dict(by_decision or {})

    @classmethod
    def from_audit(cls, approval_records: Iterable[Mapping[str, Any]]) -> ApprovalLinks:
        links = cls()
        for record in approval_records:
            detail = _detail(record)
            approval_id = detail.get("approval_id")
            if not isinstance(approval_id, str):
                continue
            for decision_id in (record.get("decision_id"), detail.get("used_decision_id")):
                if decision_id:
                    links.by_decision.setdefault(str(decision_id), approval_id)
        return links

    def approval_of(self, record: Mapping[str, Any]) -> str | None:
        ran_with = _detail(record).get("approval_id")
        if isinstance(ran_with, str):
            return ran_with
        return self.by_decision.get(str(record.get("decision_id") or ""))


def _detail(record: Mapping[str, Any]) -> Mapping[str, Any]:
    detail = record.get("detail")
    return detail if isinstance(detail, Mapping) else {}


def decision_rows(records: Iterable[Mapping[str, Any]], links: ApprovalLinks | None = None) -> list[DecisionRow]:
    return [DecisionRow(at=float(r.get("at") or 0.0), agent_id=str(r.get("agent_id") or ""),
                        tool=str(r.get("tool") or ""), decision=str(r.get("decision") or ""),
                        policy_ids=tuple(str(p) for p in r.get("policy_ids") or ()),
                        decision_id=str(r.get("decision_id") or ""), trace_id=str(r.get("trace_id") or ""),
                        approval_id=links.approval_of(r) if links is not None else None,
                        ran_with_approval=isinstance(_detail(r).get("approval_id"), str))
            for r in records]


def credential_expiry(credential: str) -> float | None:
    """When a JWT credential (already verified by the authenticator) expires; None for static tokens."""
    try:
        claims = jwt.decode(credential, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


# tool, resource and template reviews

Review = ToolReview | ResourceReview


def definition_json(value: Any) -> str:
    """A tool definition as indented JSON, hidden characters written as JSON escapes (`\\u200b`).

    Shown raw they would be invisible in the page, which is exactly how a poisoned description hides;
    as escapes they stay valid JSON and cannot be mistaken for text the upstream wrote.
    """
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return "".join(json.dumps(char)[1:-1] if is_hidden(char) else char for char in text)


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """(css class, line) for each line of a unified diff, so additions and removals stand out."""
    return [(_diff_class(line), line) for line in diff.splitlines()]


def _diff_class(line: str) -> str:
    if line.startswith(("+++", "---", "@@")):
        return "diff-meta"
    if line.startswith("+"):
        return "diff-add"
    return "diff-del" if line.startswith("-") else "diff-same"


@dataclass(frozen=True, slots=True)
class ReviewDetail:
    """What a review page shows besides the record: the field diff and the description's text diff."""

    fields: list[dict[str, Any]]
    description_diff: list[tuple[str, str]]
    flags: list[dict[str, str]]


def review_detail(review: Review) -> ReviewDetail:
    text_diff = description_diff(review.approved_definition, review.current_definition)
    fields = [_shown(entry) for entry in definition_diff(review.approved_definition, review.current_definition)]
    return ReviewDetail(fields=fields, description_diff=diff_lines(text_diff), flags=by_severity(review.flags))


def _shown(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A diff entry with its values as display JSON (schema path changes too)."""
    shown = {**entry, "old": definition_json(entry["old"]), "new": definition_json(entry["new"])}
    if "changes" in entry:
        shown["changes"] = [_shown(change) for change in entry["changes"]]
    return shown


def by_severity(flags: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    return sorted((dict(f) for f in flags), key=lambda f: SEVERITY_ORDER.get(f.get("severity", ""), 3))


def decided_by_a_person(review: Review) -> bool:
    return review.status in (APPROVED, REJECTED) and by_person(review.reviewed_by)


def recently_decided(reviews: Iterable[Review]) -> list[Review]:
    """Tools, resources and templates a person approved or rejected, latest decision first."""
    decided = [r for r in reviews if decided_by_a_person(r)]
    return sorted(decided, key=lambda r: r.reviewed_at or 0.0, reverse=True)[:DECIDED_LIMIT]


def review_label(review: Review) -> str:
    """What a review is about, as a row names it: a tool's exposed name, a resource's URI or a template;
    hidden characters written as [U+XXXX] (upstreams choose these strings)."""
    return reveal_hidden(review.exposed_name if isinstance(review, ToolReview) else review.key)


def review_href(review: Review) -> str:
    if isinstance(review, ToolReview):
        return tool_path(review.server_id, review.name)
    return resource_path(review.id)
