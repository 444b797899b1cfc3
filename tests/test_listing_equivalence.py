"""tools/list answers stay exactly what they were: a fixture recorded before listing was made cheap.

Real cedarpy, real policy files (the shipped set, and a set whose rules hide tools by each kind of
thing a rule can read: a tool's attributes, its name, its identity, a name pattern, the agent's
groups, tags, claims and identity, the task, the chain, the clock), a catalog with tools that share
attributes and tools that stand out (a tool named like an agent, like its server, named in a rule),
and agents that differ in one thing each. Every (policy set, catalog, agent, facts) listing must
equal the recorded one, cold and warm, in one piece and in steps, and after a catalog change
(which a listing must never answer from the old catalog).

Re-record (only on purpose, on the code the fixture should pin):
``python -m tests.test_listing_equivalence --record``
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from gateway.catalog import Catalog, load_catalog
from gateway.catalog.model import ToolEntry
from gateway.identity.principal import Principal
from gateway.policy import PolicyEngine, RequestFacts
from gateway.policy.tool_listing import ToolLister
from gateway.registry.model import Agent, Entitlement, Lifecycle
from tests.test_policy_engine import FILES_MANIFEST, PAYMENTS_MANIFEST, SATURDAY, WEDNESDAY

REPO = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "listing_baseline.json"
RISKS = ("read", "write", "privileged", "destructive")

FILES = FILES_MANIFEST + "  - {name: files, risk: read}\n  - {name: agent-7, risk: read}\n"
PAYMENTS = PAYMENTS_MANIFEST

# Rules that make the listing depend on each kind of fact (valid against the shipped schema).
ATTRIBUTE_RULES = """
@id("hide-owner-x") forbid (principal, action in Action::"call_tool", resource is Tool)
when { resource.owner == "x@example.com" };
@id("pii-for-privacy-group") forbid (principal, action in Action::"call_tool", resource is Tool)
when { resource.data_classes.contains("pii") } unless { principal in AgentGroup::"privacy" };
@id("name-pattern") forbid (principal, action in Action::"call_tool", resource is Tool)
when { resource.name like "t1*" && principal.owner != "root@example.com" };
@id("one-action") forbid (principal, action == Action::"bulk__t3", resource);
@id("one-resource") forbid (principal, action in Action::"call_tool", resource == Tool::"bulk/t4");
@id("name-literal") forbid (principal, action in Action::"call_tool", resource is Tool)
when { resource.name == "t5" };
@id("exposed-pattern") forbid (principal, action in Action::"call_tool", resource is Tool)
when { resource.exposed_name like "*__t2*" && !(principal in AgentGroup::"twos") };
@id("task-scope") forbid (principal, action in Action::"call_tool", resource is Tool)
when { context.task.present && !context.task.tools.contains(resource.exposed_name) };
@id("prod-no-writes") forbid (principal, action in Action::"risk:write", resource)
when { principal.hasTag("env") && principal.getTag("env") == "prod" };
@id("own-tools") permit (principal, action in Action::"call_tool", resource is Tool)
when { principal.owner == resource.owner };
@id("blocked-agent") forbid (principal == Agent::"blocked", action, resource);
@id("big-payments") forbid (principal, action == Action::"payments__pay", resource)
when { context.input.amount >= 500 };
@id("egress-in-hours") forbid (principal, action in Action::"call_tool", resource is Tool)
when { if resource.egress then !context.request.working_hours else false };
@id("named-like-server") forbid (principal, action in Action::"call_tool", resource is Tool)
when { resource.name == resource.server && principal.purpose != "ops" };
@id("claim-names-tool") forbid (principal, action in Action::"call_tool", resource is Tool)
when { principal.claims.hasTag("deny_tool") && principal.claims.getTag("deny_tool") == resource.name };
@id("sub-names-tool") forbid (principal, action in Action::"call_tool", resource is Tool)
when { principal.claims.hasTag("sub") && principal.claims.getTag("sub") == resource.name };
@id("tag-names-owner") forbid (principal, action in Action::"call_tool", resource is Tool)
when { principal.hasTag("team") && principal.getTag("team") == resource.owner };
@id("chain-finance") forbid (principal, action in Action::"call_tool", resource is Tool)
when { context.chain.data_classes.contains("financial") && resource.data_classes.contains("pii") };
@id("client-pattern") forbid (principal, action in Action::"risk:destructive", resource)
when { context.request.client like "*bot*" };
@id("server-scope") forbid (principal, action in Action::"server:payments", resource)
when { principal in AgentGroup::"no-payments" };
@id("name-is-agent") forbid (principal, action in Action::"call_tool", resource is Tool)
when { principal.entitled_tools.contains(resource.name) };
"""
POLICY_SETS = {"shipped": "", "attributes": ATTRIBUTE_RULES}


def bulk_manifest(count: int) -> str:
    lines = ["id: bulk", "owner: bulk@example.com", 'transport: {url: "http://127.0.0.1:9/mcp"}', "tools:"]
    for i in range(count):
        owner = ("x@example.com", "bulk@example.com", "team@example.com")[i % 3]
        classes = ("[pii]", "[internal]", "[]", "[financial, pii]")[i % 4]
        egress = "true" if i % 5 == 0 else "false"
        lines.append(f"  - {{name: t{i}, risk: {RISKS[i % 4]}, owner: {owner}, data_classes: {classes}, "
                     f"egress: {egress}}}")
    lines.append("  - {name: bulk, risk: read}")
    lines.append("  - {name: blocked, risk: read}")
    return "\n".join(lines) + "\n"


def write_catalog(directory: Path, bulk: int = 24) -> Catalog:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "files.yaml").write_text(FILES)
    (directory / "payments.yaml").write_text(PAYMENTS)
    (directory / "bulk.yaml").write_text(bulk_manifest(bulk))
    return load_catalog(directory)


def with_status(catalog: Catalog, changes: dict[str, str]) -> Catalog:
    """The catalog with some tools' review status changed (as discovery does)."""
    servers = []
    for server in catalog.servers.values():
        tools = {name: dataclasses.replace(t, status=changes.get(t.exposed_name, t.status))
                 for name, t in server.tools.items()}
        servers.append(dataclasses.replace(server, tools=MappingProxyType(tools)))
    return Catalog.of(servers)


def changed_catalog(catalog: Catalog) -> Catalog:
    """One tool quarantined, one risk changed, one tool added: what a discovery round does."""
    servers = []
    for server in catalog.servers.values():
        tools = dict(server.tools)
        if server.id == "bulk":
            tools["t6"] = dataclasses.replace(tools["t6"], risk="write")
            tools["t99"] = dataclasses.replace(tools["t7"], name="t99", exposed_name="bulk__t99")
        servers.append(dataclasses.replace(server, tools=MappingProxyType(tools)))
    return with_status(Catalog.of(servers), {"bulk__blocked": "quarantined"})


def principal(agent_id: str, *, servers: tuple[str, ...] = ("files", "payments", "bulk"),
              tools: tuple[str, ...] = (), groups: tuple[str, ...] = (), labels: dict[str, str] | None = None,
              claims: dict[str, Any] | None = None, owner: str = "team@example.com", purpose: str = "testing",
              state: Lifecycle = Lifecycle.ACTIVE) -> Principal:
    agent = Agent(
        id=agent_id, display_name=agent_id, owner=owner, purpose=purpose, state=state,
        created_at=0.0, changed_at=1.0, expires_at=None, identities=(), groups=groups,
        labels=MappingProxyType(labels or {}), entitlement=Entitlement(tools, servers),
    )
    return Principal(agent_id, "static-token", MappingProxyType(claims or {}), agent)


def principals() -> dict[str, Principal]:
    return {
        "plain": principal("agent-1"),
        "plain-twin": principal("agent-2"),  # same attributes, another id
        "named-like-a-tool": principal("agent-7", claims={"sub": "agent-7"}),
        "named-like-a-server": principal("files"),
        "blocked": principal("blocked"),
        "privacy": principal("agent-3", groups=("privacy", "twos")),
        "no-payments": principal("agent-4", groups=("no-payments",)),
        "prod": principal("agent-5", labels={"env": "prod", "team": "bulk@example.com"}),
        "claims": principal("agent-6", claims={"deny_tool": "t9", "sub": "bulk__t10"}),
        "root": principal("agent-8", owner="root@example.com", purpose="ops"),
        "by-tool": principal("agent-9", servers=(), tools=("bulk__t11", "files__wipe", "t12", "bulk__t13")),
        "owner-only": principal("agent-10", servers=(), owner="bulk@example.com"),
        "suspended": principal("agent-11", state=Lifecycle.SUSPENDED),
        "nothing": principal("agent-12", servers=()),
    }


def all_facts() -> dict[str, RequestFacts]:
    task = {"id": "task-1", "purpose": "p", "tools": ["bulk__t1", "bulk__t14", "files__read_file", "bulk__t15"]}
    chain = {"data_classes": ["financial"], "sensitive_read": True, "tools": ["payments__pay"],
             "previous_tool": "payments__pay", "calls_last_minute": 3, "writes_last_minute": 1,
             "denials_last_minute": 0, "agent": {"data_classes": [], "sensitive_read": False,
                                                 "calls_last_minute": 3, "writes_last_minute": 1,
                                                 "denials_last_minute": 0}}
    return {
        "weekday": RequestFacts(now=WEDNESDAY, era="2026-07-28", client="pytest"),
        "weekend-bot": RequestFacts(now=SATURDAY, era="2025-11-25", client="helpbot"),
        "task": RequestFacts(now=WEDNESDAY + 60, era="2026-07-28", client="pytest", task=task),
        "chain": RequestFacts(now=WEDNESDAY, era="2026-07-28", client="pytest", chain=chain),
    }


def cedar_dir(target: Path, extra: str) -> Path:
    shutil.copytree(REPO / "cedar", target, ignore=shutil.ignore_patterns("tests", "README.md"))
    if extra:
        (target / "policies" / "70-extra.cedar").write_text(extra)
    return target


def schemas(catalog: Catalog) -> dict[str, dict[str, Any]]:
    pay = {"type": "object", "properties": {"amount": {"type": "integer"}}, "required": ["amount"]}
    return {name: pay if name == "payments__pay" else {"type": "object"} for name in catalog.tools}


def listings(lister: ToolLister, tools: list[ToolEntry]) -> dict[str, list[str]]:
    return {f"{who}/{when}": sorted(lister.visible_now(p, tools, f))
            for who, p in principals().items() for when, f in all_facts().items()}


def compute_all(tmp: Path) -> dict[str, dict[str, list[str]]]:
    """Every recorded listing, each policy set on a fresh engine: before and after a catalog change."""
    catalog = with_status(write_catalog(tmp / "catalog"), {"bulk__t16": "quarantined", "bulk__t17": "rejected"})
    changed = changed_catalog(catalog)
    result: dict[str, dict[str, list[str]]] = {}
    for name, extra in POLICY_SETS.items():
        engine = PolicyEngine(cedar_dir(tmp / f"cedar-{name}", extra), catalog, tool_schemas=schemas(catalog))
        lister = ToolLister(engine)
        result[name] = listings(lister, list(catalog.tools.values()))
        engine.set_catalog(changed, schemas(changed))
        result[f"{name}/changed"] = listings(lister, list(changed.tools.values()))
    return result


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict[str, list[str]]]:
    data: dict[str, dict[str, list[str]]] = json.loads(FIXTURE.read_text())
    return data


def test_listings_equal_the_recorded_ones(tmp_path: Path, recorded: dict[str, dict[str, list[str]]]) -> None:
    now = compute_all(tmp_path)
    assert now.keys() == recorded.keys()
    for key, cases in recorded.items():
        for case, names in cases.items():
            assert now[key][case] == names, f"{key} {case}"
    # The fixture is not trivial: rules of each kind hid something from somebody.
    attributes = recorded["attributes"]
    assert attributes["plain/weekday"] != attributes["privacy/weekday"]
    assert attributes["plain/weekday"] != attributes["named-like-a-tool/weekday"]
    assert recorded["attributes/changed"]["plain/weekday"] != attributes["plain/weekday"]


def test_warm_stepwise_and_fresh_listings_agree(tmp_path: Path, recorded: dict[str, dict[str, list[str]]]) -> None:
    """A second listing (remembered), one in steps and one on a fresh engine give the same answers."""
    catalog = with_status(write_catalog(tmp_path / "catalog"), {"bulk__t16": "quarantined", "bulk__t17": "rejected"})
    engine = PolicyEngine(cedar_dir(tmp_path / "cedar", ATTRIBUTE_RULES), catalog, tool_schemas=schemas(catalog))
    tools = list(catalog.tools.values())
    lister = ToolLister(engine)
    assert listings(lister, tools) == recorded["attributes"]
    asked = lister.evaluated
    assert listings(lister, tools) == recorded["attributes"]  # warm: nothing asked again
    assert lister.evaluated == asked

    async def stepwise(lister: ToolLister) -> dict[str, list[str]]:
        return {f"{who}/{when}": sorted(await lister.visible(p, tools, f))
                for who, p in principals().items() for when, f in all_facts().items()}

    assert asyncio.run(stepwise(ToolLister(engine))) == recorded["attributes"]
    # The engine's own per-tool listing (what the fixture was recorded with) agrees as well.
    assert {f"{who}/{when}": sorted(engine.visible_tools(p, tools, f))
            for who, p in principals().items() for when, f in all_facts().items()} == recorded["attributes"]


def record() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = compute_all(Path(tmp))
    FIXTURE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"recorded {sum(len(v) for v in data.values())} listings in {FIXTURE}")


if __name__ == "__main__" and "--record" in sys.argv:
    record()
