"""What compliance evidence is made of: facts computed from the deployment, and controls judged from them.

A fact is one claim about the running deployment, with the command or query that produced it. Its
status says how it counts: `ok` (the deployment does what the control asks), `problem` (it does not,
and `statement` says why), `unavailable` (it could not be computed: never a pass), `info` (a figure
for the period, evidence but no judgement). A control is `met` only when at least one of its facts is
`ok` and none is `problem` or `unavailable`; otherwise it is a `gap` with the facts' reasons; a control
the gateway cannot speak to is `not_applicable` with why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

OK, PROBLEM, UNAVAILABLE, INFO = "ok", "problem", "unavailable", "info"
MET, GAP, NOT_APPLICABLE = "met", "gap", "not_applicable"


@dataclass(frozen=True, slots=True)
class Fact:
    id: str
    title: str
    status: str  # ok | problem | unavailable | info
    statement: str  # one or two sentences a person reads; for a problem, the reason
    source: str  # the command or query that produced it (and reproduces it)
    data: dict[str, Any] = field(default_factory=dict)  # the figures behind the statement, for tools

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status, "statement": self.statement,
                "source": self.source, "data": self.data}


@dataclass(frozen=True, slots=True)
class ControlSpec:
    """One control of a framework and the facts that speak to it (none: `not_applicable` says why)."""

    id: str
    name: str
    facts: tuple[str, ...] = ()
    scope: str = ""  # what of the control the gateway answers, and what it does not
    not_applicable: str = ""


@dataclass(frozen=True, slots=True)
class Framework:
    id: str  # the --framework name
    title: str
    reference: str  # where the control list comes from
    controls: tuple[ControlSpec, ...]

    def fact_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for control in self.controls for f in control.facts))


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def judge(control: ControlSpec, facts: dict[str, Fact]) -> tuple[str, list[str]]:
    """(status, reasons) of one control from its facts."""
    if not control.facts:
        return NOT_APPLICABLE, [control.not_applicable]
    own = [facts[f] for f in control.facts]
    failing = [f for f in own if f.status in (PROBLEM, UNAVAILABLE)]
    if failing:
        return GAP, [f"{f.title}: {f.statement}" for f in failing]
    if not any(f.status == OK for f in own):
        return GAP, ["no fact shows the control in force"]
    return MET, []


def control_dict(control: ControlSpec, facts: dict[str, Fact]) -> dict[str, Any]:
    status, reasons = judge(control, facts)
    return {"id": control.id, "name": control.name, "status": status, "reasons": reasons, "scope": control.scope,
            "facts": [facts[f].to_dict() for f in control.facts]}
