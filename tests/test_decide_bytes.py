"""The decide stage's shortcuts send Cedar the very bytes the plain path would, and Cedar answers the same.

A context of scalars is built once per plan and found again by the values its read paths find
(gateway.policy.context._Plan); Cedar's answer is read without its metrics (gateway.policy.authorize).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import cedarpy
import orjson
import pytest

from gateway.catalog import Catalog
from gateway.identity.user import UserIdentity
from gateway.policy import RequestFacts, WorkingHours
from gateway.policy.authorize import read_answer
from gateway.policy.context import NO_CHAIN, PLANS_KEPT, SHAPE_BYTES_KEPT, ContextBuilder
from gateway.policy.engine import ENTITY_CACHED_CHARS, CedarRequest
from tests.test_policy_engine import WEDNESDAY, WEDNESDAY_NIGHT, agent_principal, catalog, cedar_dir, engine_for

__all__ = ["catalog", "cedar_dir"]  # fixtures

PERSON = UserIdentity(subject="u1", issuer="https://idp.example", email="u1@example.com", email_verified=True,
                      groups=("ops",), client_id="cli", auth_time=int(WEDNESDAY) - 60, acr="mfa", amr=("pwd",))


def chain(sensitive: bool, agent_sensitive: bool) -> dict[str, Any]:
    return {**NO_CHAIN, "sensitive_read": sensitive, "tools": ["b", "a"],
            "agent": {**NO_CHAIN["agent"], "sensitive_read": agent_sensitive}}


def every_facts() -> list[tuple[RequestFacts, bool]]:
    """Each combination of what the shipped policies read, with an approval and without."""
    grid = []
    for now, sensitive, agent_sensitive, user, approved in itertools.product(
            (WEDNESDAY, WEDNESDAY_NIGHT), (False, True), (False, True), (None, PERSON), (False, True)):
        grid.append((RequestFacts(now=now, era="2026-07-28", client="c", chain=chain(sensitive, agent_sensitive),
                                  user=user), approved))
    grid.append((RequestFacts(now=WEDNESDAY, era="2025-11-25"), False))  # no chain signals at all
    return grid


def plain(builder: ContextBuilder, reads: Any, facts: RequestFacts, approved: bool,
          cedar_input: object = None, whole: bool = False) -> tuple[dict[str, Any], bytes]:
    context = builder.build(reads, facts, approved, cedar_input, whole)
    return context, orjson.dumps(context)


ARGUMENTS: dict[str, dict[str, Any]] = {
    "files__read_file": {"path": "/a"}, "files__write_file": {"path": "/a", "content": "x"},
    "payments__pay": {"amount": 5, "payee": {"name": "n", "region": "eu"}},
}
READS: list[Any] = [
    {"approval": {"granted": True}, "request": {"working_hours": True},
     "chain": {"sensitive_read": True, "agent": {"sensitive_read": True}}, "user": {"present": True}},
    {"chain": {"tools": True, "previous_tool": True}, "request": True},  # a set and a whole record: built as usual
    {"chain": {"agent": {"sensitive_read": True, "nothing": True}, "absent": True}, "task": {"depth": True}},
    {"user": {"groups": True, "acr": True}, "input": {"path": True}},
    True,
]


@pytest.mark.parametrize("reads", READS)
def test_a_planned_context_is_the_built_one(reads: Any) -> None:
    builder = ContextBuilder(WorkingHours())
    for cedar_input, whole in ((None, False), ({"path": "/a", "size": 3}, False), ({"path": "/a"}, True)):
        for facts, approved in every_facts():
            expected = plain(builder, reads, facts, approved, cedar_input, whole)
            assert builder.build_json(reads, facts, approved, cedar_input, whole) == expected
            assert builder.build_json(reads, facts, approved, cedar_input, whole) == expected  # remembered


def test_a_plan_tells_apart_what_only_looks_alike() -> None:
    """A scalar where a record was expected, a gap at another depth, and True against 1 shape different contexts."""
    builder = ContextBuilder(WorkingHours())
    reads = {"chain": {"agent": {"sensitive_read": True}, "calls_last_minute": True}}
    chains: list[dict[str, Any]] = [
        {"agent": False, "calls_last_minute": 1},
        {"agent": {"sensitive_read": False}, "calls_last_minute": 1},
        {"agent": {"sensitive_read": True}, "calls_last_minute": True},
        {"agent": {"sensitive_read": 1}, "calls_last_minute": 1},
        {"agent": {}, "calls_last_minute": 1},
        {"calls_last_minute": 1},
        {"agent": "x"},
        {"agent": {"sensitive_read": "1"}, "calls_last_minute": "1"},
    ]
    seen = set()
    for value in chains * 2:
        facts = RequestFacts(now=WEDNESDAY, era="2026-07-28", chain=value)
        context, text = builder.build_json(reads, facts, False)
        assert (context, text) == plain(builder, reads, facts, False)
        seen.add(text)
    assert len(seen) == len(chains)


def test_cedar_decides_the_recorded_requests_as_before(cedar_dir: Path, catalog: Catalog) -> None:
    """Every tool under every combination of read values: the engine's request bytes are the plain ones for the
    tool's read set (gateway.policy.scoped), and its decision is the one Cedar gives through cedarpy's public API
    (its own answer parse) for the plain request with everything the whole policy set reads, under the whole set."""
    engine = engine_for(cedar_dir, catalog)
    builder = ContextBuilder(WorkingHours())
    bundle = engine.bundle
    assert bundle.scoped is not None
    outcomes, unsent = set(), 0
    for who, tool in itertools.product((agent_principal(servers=("files", "payments")), agent_principal("a2")),
                                       catalog.tools.values()):
        model = bundle.catalog.tools[tool.exposed_name]
        scope = bundle.scoped.for_tool(model, bundle.catalog.servers[tool.server_id], bundle.catalog)
        subset = bundle.scoped.policy_set(scope)
        reads = scope.reads
        for facts, approved in every_facts():
            seen: list[CedarRequest] = []
            decision = engine.decide_tool(who, tool, ARGUMENTS.get(tool.exposed_name, {}), facts, approved, seen)
            request = seen[0]
            context, text = plain(builder, reads, facts, approved)
            # (an empty context is not sent at all: cedarpy's default for an absent one is the empty record)
            assert request.cedar.get("context", "{}") == text.decode() and request.context == context
            unsent += "context" not in request.cedar
            whole, _ = plain(builder, bundle.decision_reads, facts, approved)
            (answer,) = cedarpy.is_authorized_batch([{**request.cedar, "context": whole}], bundle.policies,
                                                    request.entities)
            (sent,) = cedarpy.is_authorized_batch([request.cedar], subset or bundle.policies,
                                                  request.entities)
            assert (sent.decision, sent.diagnostics.reasons, sent.diagnostics.errors) == (
                answer.decision, answer.diagnostics.reasons, answer.diagnostics.errors)
            expected_ids = {engine.bundle.public_id(p) for p in answer.diagnostics.reasons}
            assert set(decision.policy_ids) == expected_ids
            if answer.decision == cedarpy.Decision.Allow:
                assert decision.outcome == "allow"
            else:
                assert decision.outcome in ("deny", "step_up")
            outcomes.add(decision.outcome)
    assert outcomes == {"allow", "deny", "step_up"} and unsent > 0


def test_an_answer_is_read_as_cedarpy_reads_it(cedar_dir: Path, catalog: Catalog) -> None:
    """Allow, Deny with reasons, and NoDecision (an error answer has no metrics): the same decision, reasons and
    errors as cedarpy's AuthzResult over the whole text; error texts with quotes and the cut's own marker included."""
    engine = engine_for(cedar_dir, catalog)
    bundle = engine.bundle
    who = agent_principal(servers=("files",))
    seen: list[CedarRequest] = []
    engine.decide_tool(who, catalog.tools["files__wipe"], {}, RequestFacts(now=WEDNESDAY, era="2026-07-28"),
                       False, seen)
    request = seen[0].cedar
    bad_context = {**request, "context": orjson.dumps({"x": {"__extn": {"fn": 'no,"metrics":"', "arg": "1"}}}).decode()}
    bad_uid = {**request, "resource": {"type": "Tool", "id": 'x",\\"metrics\\":'}}
    texts = cedarpy._internal.is_authorized_batch([request, bad_context, bad_uid], bundle.policies, seen[0].entities,
                                                  None, False)
    decisions = []
    for text in texts:
        whole = cedarpy.AuthzResult(orjson.loads(text))
        read = read_answer(text)
        assert read.decision == whole.decision
        assert list(read.diagnostics.reasons) == whole.diagnostics.reasons  # (ours are tuples: shared, read-only)
        assert list(read.diagnostics.errors) == whole.diagnostics.errors
        # Only the metrics are left out: cedarpy writes nothing after them (a release that did fails here).
        kept = orjson.loads(orjson.dumps(read._authz_resp))  # (its lists kept as tuples)
        assert kept == {k: v for k, v in whole._authz_resp.items() if k != "metrics"}
        decisions.append(read.decision)
    assert decisions[0] == cedarpy.Decision.Deny and cedarpy.Decision.NoDecision in decisions


def test_long_agent_strings_are_not_remembered() -> None:
    """The client name and task purpose are the agent's own text (up to the body size): a context with a long
    one is built plainly each time, so distinct long names do not fill the plan's memory; decisions' bytes stay
    the built ones. Short strings are remembered, up to a byte budget."""
    builder = ContextBuilder(WorkingHours())
    reads = {"request": {"client": True}, "task": {"purpose": True}, "approval": {"granted": True}}
    for index in range(50):
        task = {"id": "t", "purpose": f"{index}" + "p" * 10_000, "tools": []}
        for facts in (RequestFacts(now=WEDNESDAY, era="2026-07-28", client=f"{index}" + "x" * 100_000),
                      RequestFacts(now=WEDNESDAY, era="2026-07-28", client="c", task=task)):
            assert builder.build_json(reads, facts, False) == plain(builder, reads, facts, False)
    assert builder.remembered(reads) == (0, 0)
    for index in range(5000):  # short but many and distinct: the byte budget holds
        facts = RequestFacts(now=WEDNESDAY, era="2026-07-28", client=f"{index}" + "x" * 250)
        assert builder.build_json(reads, facts, False) == plain(builder, reads, facts, False)
        assert builder.remembered(reads)[1] <= SHAPE_BYTES_KEPT
    assert 0 < builder.remembered(reads)[0] < 5000


def test_an_answer_in_another_order_or_without_a_decision() -> None:
    """A decision written after the metrics (another cedarpy order) is read from the whole text; a missing or
    unknown decision is a ValueError (what the engine denies on and records), never a KeyError."""
    diagnostics = '"diagnostics":{"reason":["policy0"],"errors":[]}'
    late = read_answer('{' + diagnostics + ',"metrics":{"total":1},"decision":"Allow"}')
    assert late.decision == cedarpy.Decision.Allow and late.diagnostics.reasons == ("policy0",)
    for text in ('{' + diagnostics + ',"metrics":{}}', '{"decision":"Maybe",' + diagnostics + ',"metrics":{}}',
                 '{"decision":null,' + diagnostics + '}', '["Allow"]',
                 '{"decision":["Allow"],' + diagnostics + ',"metrics":{}}',  # unhashable: not a TypeError
                 '{"decision":{"Allow":1},' + diagnostics + ',"metrics":{}}'):
        with pytest.raises(ValueError):
            read_answer(text)


def test_read_sets_with_remembered_contexts_are_bounded() -> None:
    """Each read set (a bundle's, or one of its tool groups', gateway.policy.scoped) has its own plan, found again
    by the read set object; after PLANS_KEPT others the first one's contexts are not kept (a reload's old sets go)."""
    builder = ContextBuilder(WorkingHours())
    old = {"request": {"client": True}}
    new = {"request": {"client": True}}
    for facts, approved in every_facts():
        builder.build_json(old, facts, approved)
    assert builder.remembered(old)[0] > 0
    assert builder.remembered(new) == (0, 0)  # an equal read set is another one
    assert builder.remembered(old)[0] > 0  # asking about another read set changed nothing
    facts = RequestFacts(now=WEDNESDAY, era="2026-07-28", client="c")
    assert builder.build_json(new, facts, False) == plain(builder, new, facts, False)
    assert builder.remembered(new)[0] == 1 and builder.remembered(old)[0] > 1  # both kept: two groups in use
    others = [{"request": {"client": True}} for _ in range(PLANS_KEPT)]
    for reads in others:
        assert builder.build_json(reads, facts, False) == plain(builder, reads, facts, False)
    assert builder.remembered(old) == (0, 0) and builder.remembered(new) == (0, 0)
    assert builder.remembered(others[-1])[0] == 1


def test_long_resource_uris_are_decided_but_their_entities_not_kept(cedar_dir: Path, catalog: Catalog) -> None:
    """A resource URI is the agent's own text: decided as any other, but an entity set that long is not kept parsed
    (2,048 of them would hold the URIs' bytes many times over)."""
    engine = engine_for(cedar_dir, catalog)
    who = agent_principal(servers=("files",))
    facts = RequestFacts(now=WEDNESDAY, era="2026-07-28")
    assert engine.decide_resource(who, "files", "file:///data/public/a", facts).allowed
    kept = len(engine._entity_handles)
    assert kept >= 1
    for index in range(20):
        uri = f"file:///data/public/{index}/" + "a" * ENTITY_CACHED_CHARS
        assert engine.decide_resource(who, "files", uri, facts).allowed
        assert not engine.decide_resource(who, "payments", f"ledger://{index}/" + "a" * ENTITY_CACHED_CHARS,
                                          facts).allowed  # a server the agent is not entitled to
    assert len(engine._entity_handles) == kept
    assert max(len(blob) for blob in engine._entity_handles) <= ENTITY_CACHED_CHARS
