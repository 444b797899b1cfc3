"""An approval covers only the server and the rules a person saw (gateway.approvals.step_up.StepUpFlow.covers)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.approvals.model import Approval, ApprovalState
from gateway.approvals.step_up import StepUpCall, StepUpFlow
from gateway.catalog.model import ToolEntry
from gateway.policy.engine import Decision, RequestFacts

ENTRY = ToolEntry("log", "ops__log", "ops", "write", (), "owner@example.com")
GRANTED = Approval(
    id="apr_1", state=ApprovalState.APPROVED, agent_id="a", task_id=None, tool="ops__log", args_digest="d",
    policy_version="v", decision_id="dec_1", mode="pending", created_at=0, expires_at=900, owner="o",
    server_id="ops", risk="write", reason="r", policy_ids=("log-needs-approval",))


def call(policy_ids: tuple[str, ...], entry: ToolEntry = ENTRY) -> StepUpCall:
    refused = Decision("step_up", "dec_2", policy_ids, "r", (), "pv", "pending", rules_version="v")
    principal: Any = None
    return StepUpCall(principal, "2025-11-25", entry, {}, refused, RequestFacts(now=0, era="2025-11-25"), {}, False)


def test_the_same_rules_in_any_order_are_covered() -> None:
    assert StepUpFlow.covers(GRANTED, call(("log-needs-approval",)))
    two = replace(GRANTED, policy_ids=("a", "b"))
    assert StepUpFlow.covers(two, call(("b", "a"))) and StepUpFlow.covers(two, call(("a",)))


def test_a_rule_the_person_never_saw_needs_its_own_approval() -> None:
    assert not StepUpFlow.covers(GRANTED, call(("log-needs-approval", "no-egress-after-sensitive-read")))


def test_another_servers_tool_of_the_same_name_is_not_covered() -> None:
    assert not StepUpFlow.covers(GRANTED, call(("log-needs-approval",), replace(ENTRY, server_id="files")))


def test_rules_reloaded_since_need_a_new_approval() -> None:
    assert not StepUpFlow.covers(replace(GRANTED, policy_version="older"), call(("log-needs-approval",)))
