"""Listing by classes (gateway.policy.tool_listing): few Cedar questions, shared answers, never stale.

Real cedarpy and real policy files; every answer is also checked against the engine's own per-tool
listing (what tools/list used before), so cheaper never means different.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from types import MappingProxyType

from gateway.catalog import Catalog
from gateway.policy import PolicyEngine
from gateway.policy.tool_listing import ToolLister
from tests.test_listing_equivalence import all_facts, cedar_dir, principal, schemas, write_catalog

BULK = 200


def engine_and_catalog(tmp_path: Path, extra: str = "") -> tuple[PolicyEngine, Catalog]:
    catalog = write_catalog(tmp_path / "catalog", bulk=BULK)
    return PolicyEngine(cedar_dir(tmp_path / "cedar", extra), catalog, tool_schemas=schemas(catalog)), catalog


def test_tools_alike_are_one_question_and_agents_alike_share(tmp_path: Path) -> None:
    engine, catalog = engine_and_catalog(tmp_path)
    tools = list(catalog.tools.values())
    lister = ToolLister(engine)
    facts = all_facts()["weekday"]
    first = lister.visible_now(principal("agent-1"), tools, facts)
    assert first == engine.visible_tools(principal("agent-1"), tools, facts)
    # ~200 bulk tools in 16 attribute combinations, plus the few that stand out: far fewer than a question each.
    assert lister.evaluated < 40, lister.evaluated
    asked = lister.evaluated
    twin = lister.visible_now(principal("agent-2"), tools, facts)
    assert twin == first and lister.evaluated == asked  # equal attributes, another id: nothing asked
    other = lister.visible_now(principal("agent-3", groups=("privacy",)), tools, facts)
    assert other == engine.visible_tools(principal("agent-3", groups=("privacy",)), tools, facts)
    assert lister.evaluated > asked  # another group is another principal: asked again


def test_a_one_tool_change_asks_about_that_tool_only(tmp_path: Path) -> None:
    engine, catalog = engine_and_catalog(tmp_path)
    lister = ToolLister(engine)
    facts = all_facts()["weekday"]
    who = principal("agent-1")
    lister.visible_now(who, list(catalog.tools.values()), facts)
    asked = lister.evaluated
    servers = []
    for server in catalog.servers.values():
        tools = dict(server.tools)
        if server.id == "files":
            tools["read_file"] = dataclasses.replace(tools["read_file"], owner="someone-new@example.com")
        servers.append(dataclasses.replace(server, tools=MappingProxyType(tools)))
    changed = Catalog.of(servers)
    engine.set_catalog(changed, schemas(changed))
    shown = lister.visible_now(who, list(changed.tools.values()), facts)
    assert shown == engine.visible_tools(who, list(changed.tools.values()), facts)
    assert lister.evaluated - asked <= 1  # that tool's new class; every other answer is remembered


def test_a_policy_change_is_never_answered_from_the_old_set(tmp_path: Path) -> None:
    engine, catalog = engine_and_catalog(tmp_path)
    tools = list(catalog.tools.values())
    lister = ToolLister(engine)
    facts = all_facts()["weekday"]
    who = principal("agent-1")
    before = asyncio.run(lister.visible(who, tools, facts))
    assert "bulk__t0" in before
    (tmp_path / "cedar" / "policies" / "80-hide.cedar").write_text(
        '@id("hide-bulk") forbid (principal, action in Action::"server:bulk", resource);\n')
    assert engine.reload().changed
    after = asyncio.run(lister.visible(who, tools, facts))
    assert not any(name.startswith("bulk__") for name in after)
    assert after == engine.visible_tools(who, tools, facts)


def test_a_rule_that_errors_hides_the_whole_class(tmp_path: Path) -> None:
    # The forbid overflows for agents of one owner (Cedar then skips it, and the permit allows): an
    # Allow spoiled by an error is not shown. Other owners never reach the overflow.
    engine, catalog = engine_and_catalog(tmp_path, '@id("overflows") forbid (principal, action, resource is Tool)\n'
                                                   'when { principal.owner == "team@example.com" && '
                                                   'context.request.time * 4611686018427387904 > 0 };\n')
    tools = list(catalog.tools.values())
    lister = ToolLister(engine)
    facts = all_facts()["weekday"]
    assert lister.visible_now(principal("agent-1"), tools, facts) == frozenset()
    other = principal("agent-2", owner="other@example.com")
    shown = lister.visible_now(other, tools, facts)
    assert shown and shown == engine.visible_tools(other, tools, facts)


def test_a_claim_spelling_the_placeholder_never_shares_another_agents_answer(tmp_path: Path) -> None:
    """Agent ids are renamed to one placeholder so agents alike share a listing; a claim value is the
    issuer's to choose, so one that already spells the placeholder must not merge two agents a policy
    tells apart (here: a forbid unless the `nick` claim equals the `sub` claim)."""
    engine, catalog = engine_and_catalog(tmp_path, extra=(
        '@id("nick-is-sub") forbid (principal, action, resource) unless {\n'
        '  principal.claims.hasTag("nick") && principal.claims.hasTag("sub") &&\n'
        '  principal.claims.getTag("nick") == principal.claims.getTag("sub")\n};\n'))
    tools = list(catalog.tools.values())
    lister = ToolLister(engine)
    facts = all_facts()["weekday"]
    honest = principal("agent-y", claims={"sub": "agent-y", "nick": "agent-y"})
    shown = lister.visible_now(honest, tools, facts)
    assert shown and shown == engine.visible_tools(honest, tools, facts)
    forged = principal("agent-x", claims={"sub": "agent-x", "nick": "\x00agent"})
    assert lister.visible_now(forged, tools, facts) == engine.visible_tools(forged, tools, facts) == frozenset()
