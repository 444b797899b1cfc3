"""A decision's Cedar context holds only what the policies read, and pruning it never changes a decision."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.catalog import load_catalog
from gateway.policy import PolicyEngine, RequestFacts, WorkingHours
from gateway.policy.context import NO_CHAIN, ContextBuilder
from tests.test_policy_engine import REPO_CEDAR, WEDNESDAY, agent_principal

MANIFEST = """
id: odd
owner: odd@example.com
transport: {url: "http://127.0.0.1:9/mcp"}
tools:
  - {name: escape, risk: read}
"""
# An upstream may name an argument like one of Cedar's JSON escapes.
ESCAPE_SCHEMA = {"type": "object", "properties": {"__extn": {
    "type": "object", "properties": {"fn": {"type": "string"}, "arg": {"type": "string"}}}}}


def test_only_what_is_read_is_built_and_sets_are_distinct() -> None:
    builder = ContextBuilder(WorkingHours())
    chain = {**NO_CHAIN, "tools": ["b", "a", "b", "b", "a"], "previous_tool": "a", "calls_last_minute": 5}
    facts = RequestFacts(now=WEDNESDAY, era="2026-07-28", client="x", chain=chain,
                         task={"id": "t", "purpose": "p", "tools": ["a"]})
    reads = {"chain": {"tools": True, "agent": {"sensitive_read": True}}, "approval": True,
             "input": {"path": True}}
    context = builder.build(reads, facts, True, {"path": "/a", "content": "big"})
    assert context == {"chain": {"tools": ["a", "b"], "agent": {"sensitive_read": False}},
                       "approval": {"granted": True}, "input": {"path": "/a"}}
    whole = builder.build(True, facts, False, {"path": "/a"})
    assert set(whole) == {"request", "approval", "task", "chain", "user", "input"}
    assert whole["chain"]["tools"] == ["a", "b"] and chain["tools"] == ["b", "a", "b", "b", "a"]  # not modified


def test_request_facts_within_a_second_share_the_clock_reading() -> None:
    builder = ContextBuilder(WorkingHours(end="10:00"))
    before = builder.request_facts(RequestFacts(now=WEDNESDAY - 0.25, era="2026-07-28"))
    at = builder.request_facts(RequestFacts(now=WEDNESDAY + 0.75, era="2026-07-28"))
    assert before["working_hours"] is True and before["hour"] == 9
    assert at["working_hours"] is False and at["hour"] == 10 and at["time"] == int(WEDNESDAY)


def test_unread_input_cedar_cannot_parse_is_still_refused(tmp_path: Path) -> None:
    """No shipped policy reads context.input, so it is normally left out; an argument named like a Cedar
    escape is sent anyway, and Cedar refuses the request as it always did (NoDecision: deny)."""
    cedar = tmp_path / "cedar"
    shutil.copytree(REPO_CEDAR, cedar, ignore=shutil.ignore_patterns("tests", "README.md"))
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "odd.yaml").write_text(MANIFEST)
    catalog = load_catalog(tmp_path / "catalog")
    engine = PolicyEngine(cedar, catalog, tool_schemas={"odd__escape": ESCAPE_SCHEMA})
    facts = RequestFacts(now=WEDNESDAY, era="2026-07-28")
    tool = catalog.tools["odd__escape"]
    assert engine.decide_tool(agent_principal(servers=("odd",)), tool, {}, facts).outcome == "allow"
    bad = engine.decide_tool(agent_principal(servers=("odd",)), tool, {"__extn": {"fn": "decimal", "arg": "zz"}}, facts)
    assert bad.outcome == "deny" and bad.reason == "arguments do not match the tool's schema"
    assert any("decimal" in e for e in bad.errors)
