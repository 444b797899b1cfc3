"""The reach core (gateway/privilege/reach.py): every catalog tool decided by the live engine.

Real cedarpy with the shipped policies (plus ones the tests write), a catalog loaded from YAML, the
real registry and task service on SQLite.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from gateway.audit import AuditLog
from gateway.audit.model import AuditEvent
from gateway.catalog import Catalog, load_catalog
from gateway.policy import PolicyEngine
from gateway.privilege import reach as reach_module
from gateway.privilege.reach import (
    GATE_NOT_IN_TASK,
    GATE_OUTSIDE_ENTITLEMENT,
    GATE_TASK_ENDED,
    ReachAnalyzer,
    UnknownAgent,
    UnknownTask,
    agent_reach,
    reach_to_dict,
)
from gateway.privilege.rightsize import RightsizeSources, rightsize_fleet
from gateway.registry.service import Registry
from gateway.settings.monitoring import MonitoringSettings
from gateway.store import Store, open_store
from gateway.tasks.service import TaskService
from tests.test_policy_engine import FILES_MANIFEST, REPO_CEDAR

MANIFESTS = {
    "files": FILES_MANIFEST + "  - {name: new_tool, risk: read}\n",
    "crm": """
id: crm
owner: sales@example.com
transport: {url: "http://127.0.0.1:9/mcp"}
tools:
  - {name: lookup_customer, risk: read, data_classes: [pii]}
""",
    "mail": """
id: mail
owner: it@example.com
transport: {url: "http://127.0.0.1:9/mcp"}
tools:
  - {name: send_email, risk: write, egress: true}
  - {name: post_chat, risk: write}
""",
    "payments": """
id: payments
owner: payments@example.com
transport: {url: "http://127.0.0.1:9/mcp"}
tools:
  - {name: pay, risk: write, data_classes: [financial]}
""",
}
PAY_SCHEMA = {"type": "object", "properties": {"amount": {"type": "integer"}}, "required": ["amount"]}
# post_chat is egress only by configuration: the shipped Cedar chain rule reads the catalog flag alone.
MONITORING = MonitoringSettings(egress_tools=("mail__post_chat",))


def agent_spec(agent_id: str, servers: list[str], *, require_task: bool = False) -> dict[str, Any]:
    return {"id": agent_id, "owner": "team-a", "purpose": "support", "state": "active",
            "identities": [{"kind": "static", "issuer": "narrowgate", "subject": agent_id}],
            "entitlement": {"tools": [], "servers": servers, "require_task": require_task}}


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    directory = tmp_path / "catalog"
    directory.mkdir()
    for name, text in MANIFESTS.items():
        (directory / f"{name}.yaml").write_text(text)
    return with_status(load_catalog(directory), "files", "new_tool", "quarantined")  # awaiting review


def with_status(catalog: Catalog, server_id: str, name: str, status: str) -> Catalog:
    server = catalog.servers[server_id]
    tools = {**server.tools, name: replace(server.tools[name], status=status)}
    return Catalog.of([replace(s, tools=MappingProxyType(tools)) if s.id == server_id else s
                       for s in catalog.servers.values()])


@pytest.fixture
def cedar_dir(tmp_path: Path) -> Path:
    target = tmp_path / "cedar"
    shutil.copytree(REPO_CEDAR, target, ignore=shutil.ignore_patterns("tests", "README.md"))
    return target


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture
async def registry(store: Store) -> Registry:
    registry = await Registry.open(store)
    await registry.create(agent_spec("helper", ["files", "crm", "mail"]), "alice", "test")
    await registry.create(agent_spec("tasked", ["files"], require_task=True), "alice", "test")
    return registry


@pytest.fixture
async def tasks(store: Store, registry: Registry, catalog: Catalog) -> AsyncIterator[TaskService]:
    service = TaskService(store, registry, catalog)
    await service.open(background=False)
    yield service
    await service.close()


@pytest.fixture
def engine(cedar_dir: Path, catalog: Catalog) -> PolicyEngine:
    return PolicyEngine(cedar_dir, catalog, tool_schemas={"payments__pay": PAY_SCHEMA})


@pytest.fixture
def analyzer(engine: PolicyEngine, registry: Registry, tasks: TaskService) -> ReachAnalyzer:
    return ReachAnalyzer(engine, registry, tasks, MONITORING)


def verdicts(reach: Any) -> dict[str, str]:
    return {t.tool: t.verdict for t in reach.tools}


async def test_every_catalog_tool_gets_a_verdict_from_the_live_policies(analyzer: ReachAnalyzer,
                                                                       catalog: Catalog) -> None:
    reach = await agent_reach(analyzer, "helper")
    assert {t.tool for t in reach.tools} == set(catalog.tools)
    assert verdicts(reach) == {
        "files__read_file": "allow", "files__write_file": "allow", "files__wipe": "step_up",
        "files__new_tool": "deny", "crm__lookup_customer": "allow", "mail__send_email": "allow",
        "mail__post_chat": "allow", "payments__pay": "deny",
    }
    wipe, new, pay = reach.tool("files__wipe"), reach.tool("files__new_tool"), reach.tool("payments__pay")
    assert wipe is not None and wipe.policy_ids == ("step-up-privileged-destructive",) and wipe.risk == "destructive"
    assert new is not None and new.policy_ids == ("forbid-unapproved-tools",)
    assert pay is not None and pay.policy_ids == ()  # not entitled: no permit matched
    assert {t.tool for t in reach.by_verdict("step_up")} == {"files__wipe"}
    # The worst case over the time contexts: a write is allowed in hours, step-up outside them.
    write = reach.tool("files__write_file")
    assert write is not None and set(write.verdicts) == {"allow", "step_up"}
    assert reach.policy_version == analyzer.engine.version
    body = reach_to_dict(reach)
    assert body["agent_id"] == "helper" and len(body["tools"]) == len(catalog.tools)


async def test_egress_after_a_sensitive_read_follows_the_chain_policy(analyzer: ReachAnalyzer) -> None:
    reach = await agent_reach(analyzer, "helper")
    lookup, mail, chat = (reach.tool(n) for n in ("crm__lookup_customer", "mail__send_email", "mail__post_chat"))
    assert lookup is not None and lookup.sensitive and not lookup.egress
    assert mail is not None and mail.egress and chat is not None and chat.egress  # flag and configuration
    steps = {(s.read_tool, s.egress_tool): s for s in reach.egress_after_read}
    held = steps[("crm__lookup_customer", "mail__send_email")]
    assert held.verdict == "step_up" and held.policy_ids == ("no-egress-after-sensitive-read",)
    # Egress only by configuration: Cedar's chain rule does not see it, so nothing holds it.
    assert steps[("crm__lookup_customer", "mail__post_chat")].verdict == "allow"
    assert reach.sensitive_reads == 1


async def test_a_policy_change_is_seen_at_once_and_the_cache_serves_repeats(
        analyzer: ReachAnalyzer, engine: PolicyEngine, cedar_dir: Path) -> None:
    first = await agent_reach(analyzer, "helper")
    again = await agent_reach(analyzer, "helper")
    assert again is first and analyzer.computed == 1
    (cedar_dir / "policies" / "90-no-mail.cedar").write_text(
        '@id("forbid-mail")\nforbid (principal, action, resource is Tool) when { resource.server == "mail" };\n')
    (cedar_dir / "policies" / "91-step-up-reads.cedar").write_text(
        '@id("step-up-crm")\n@step_up\n@approvers("privacy")\n'
        'forbid (principal, action in Action::"server:crm", resource) unless { context.approval.granted };\n')
    assert engine.reload().ok
    after = await agent_reach(analyzer, "helper")
    assert analyzer.computed == 2 and after.policy_version != first.policy_version
    assert verdicts(after)["mail__send_email"] == "deny" and verdicts(after)["mail__post_chat"] == "deny"
    lookup = after.tool("crm__lookup_customer")
    assert lookup is not None and lookup.verdict == "step_up" and lookup.approvers == "privacy"
    assert after.egress_after_read == () and after.sensitive_reads == 0  # no sensitive read without approval


async def test_an_agent_change_is_seen_at_once(analyzer: ReachAnalyzer, registry: Registry) -> None:
    before = await agent_reach(analyzer, "helper")
    await registry.suspend("helper", "alice", "test")
    after = await agent_reach(analyzer, "helper")
    assert analyzer.computed == 2 and after.agent_version != before.agent_version
    assert set(verdicts(after).values()) == {"deny"}
    assert after.tool("files__read_file").policy_ids == ("forbid-inactive-agents",)  # type: ignore[union-attr]


async def test_input_conditions_count_as_met_for_some_arguments(
        analyzer: ReachAnalyzer, engine: PolicyEngine, cedar_dir: Path, registry: Registry) -> None:
    await registry.update("helper", {"entitlement": {"servers": ["files", "crm", "mail", "payments"],
                                                     "require_task": False}}, "alice", "test")
    (cedar_dir / "policies" / "90-small-payments.cedar").write_text(
        '@id("forbid-large-payments")\nforbid (principal, action == Action::"payments__pay", resource)\n'
        "when { context.input.amount > 100 };\n")
    assert engine.reload().ok
    pay = (await agent_reach(analyzer, "helper")).tool("payments__pay")
    assert pay is not None and pay.verdict == "allow"  # an amount of 100 or less goes through


async def test_a_permit_for_one_protocol_era_counts_the_caller_picks_the_era(
        analyzer: ReachAnalyzer, engine: PolicyEngine, cedar_dir: Path) -> None:
    (cedar_dir / "policies" / "90-legacy-pays.cedar").write_text(
        '@id("legacy-clients-pay")\n'
        'permit (principal == Agent::"helper", action == Action::"payments__pay", resource)\n'
        'when { context.request.era == "2025-11-25" };\n')
    assert engine.reload().ok
    pay = (await agent_reach(analyzer, "helper")).tool("payments__pay")
    assert pay is not None and pay.verdict == "allow" and pay.policy_ids == ("legacy-clients-pay",)


async def test_a_task_narrows_reach_to_its_tools(analyzer: ReachAnalyzer, tasks: TaskService) -> None:
    task = await tasks.start("helper", "read one file", ["files__read_file", "files__wipe"], started_by="alice")
    reach = await agent_reach(analyzer, "helper", task.id)
    assert reach.task_id == task.id
    assert {t.tool for t in reach.by_verdict("allow")} == {"files__read_file"}
    assert {t.tool for t in reach.by_verdict("step_up")} == {"files__wipe"}
    mail = reach.tool("mail__send_email")
    assert mail is not None and mail.verdict == "deny" and mail.policy_ids == (GATE_NOT_IN_TASK,)
    await tasks.complete(task.id, "alice", "done")
    ended = await agent_reach(analyzer, "helper", task.id)
    assert set(verdicts(ended).values()) == {"deny"}
    assert {t.policy_ids for t in ended.tools} == {(GATE_TASK_ENDED,)}


async def test_an_agent_that_requires_tasks_reaches_what_it_can_grant_itself(analyzer: ReachAnalyzer) -> None:
    reach = await agent_reach(analyzer, "tasked")
    assert all(label.startswith("a task it grants itself") for label in reach.contexts)
    assert {t.tool for t in reach.by_verdict("allow")} == {"files__read_file", "files__write_file"}


async def test_a_task_it_grants_itself_holds_only_entitled_tools(
        analyzer: ReachAnalyzer, engine: PolicyEngine, cedar_dir: Path) -> None:
    # A policy permitting beyond the entitlement: a bare token could call it, a task could never hold it.
    (cedar_dir / "policies" / "90-everyone-reads-crm.cedar").write_text(
        '@id("everyone-reads-crm")\npermit (principal, action == Action::"crm__lookup_customer", resource);\n')
    assert engine.reload().ok
    tasked = (await agent_reach(analyzer, "tasked")).tool("crm__lookup_customer")
    assert tasked is not None and tasked.verdict == "deny" and tasked.policy_ids == (GATE_OUTSIDE_ENTITLEMENT,)
    helper = (await agent_reach(analyzer, "helper")).tool("crm__lookup_customer")
    assert helper is not None and helper.verdict == "allow"


async def test_unknown_agent_and_task_are_refused(analyzer: ReachAnalyzer, tasks: TaskService) -> None:
    with pytest.raises(UnknownAgent):
        await agent_reach(analyzer, "nobody")
    with pytest.raises(UnknownTask):
        await agent_reach(analyzer, "helper", "task_nope")
    other = await tasks.start("tasked", "x", ["files__read_file"], started_by="alice")
    with pytest.raises(UnknownTask):  # another agent's task
        await agent_reach(analyzer, "helper", other.id)


async def test_a_catalog_change_is_seen_at_once(analyzer: ReachAnalyzer, engine: PolicyEngine,
                                               catalog: Catalog) -> None:
    before = await agent_reach(analyzer, "helper")
    changed = with_status(catalog, "files", "new_tool", "approved")
    assert engine.set_catalog(changed, {"payments__pay": PAY_SCHEMA}).ok
    after = await agent_reach(analyzer, "helper")
    assert after.catalog_version != before.catalog_version
    assert verdicts(after)["files__new_tool"] == "allow"


async def test_the_cache_keeps_the_policies_in_force_only_and_is_bounded(
        analyzer: ReachAnalyzer, engine: PolicyEngine, cedar_dir: Path, catalog: Catalog,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await agent_reach(analyzer, "helper")
    await agent_reach(analyzer, "tasked")
    assert analyzer.cached == 2
    (cedar_dir / "policies" / "90-x.cedar").write_text('@id("x")\nforbid (principal, action, resource) when { false };')
    assert engine.reload().ok
    await agent_reach(analyzer, "helper")
    assert analyzer.cached == 1  # the reaches of the old policy set are gone
    monkeypatch.setattr(reach_module, "CACHE_ROWS", len(catalog.tools))  # room for one reach
    await agent_reach(analyzer, "tasked")
    assert analyzer.cached == 1 and analyzer.computed == 4
    await agent_reach(analyzer, "helper")
    assert analyzer.computed == 5  # pushed out, computed again


async def record_a_read(store: Store) -> None:
    """One allowed call of files__read_file by helper in the audit log: right-sizing's window has data."""
    log = AuditLog(store, time.time)
    await log.open()
    log.record(AuditEvent(kind="decision", action="call", actor="helper", agent_id="helper", tool="files__read_file",
                          decision="allow"))
    await log.flush()
    await log.close()


async def test_right_sizing_parses_the_agents_file_off_the_event_loop(
        analyzer: ReachAnalyzer, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A large agents file: the proposal parses and edits it (pure-Python YAML, a few hundred ms here). That ran
    # on the event loop once per agent, so every request of the gateway waited on each parse. Which thread each
    # parse runs on is the property itself; a stall measured against a clock flaked on a loaded machine.
    fillers = [agent_spec(f"filler-{i}", ["files"]) for i in range(300)]
    fleet = [agent_spec("helper", ["files", "crm", "mail"]), *fillers]
    agents_file = tmp_path / "agents.yaml"
    agents_file.write_text(yaml.safe_dump({"agents": fleet}), encoding="utf-8")
    await record_a_read(store)
    await agent_reach(analyzer, "helper")  # the reach is cached: what follows is right-sizing's own work
    loop_thread = threading.get_ident()
    parsed_on: list[int] = []
    real_compose = yaml.compose

    def spying_compose(*args: Any, **kwargs: Any) -> Any:
        parsed_on.append(threading.get_ident())
        return real_compose(*args, **kwargs)

    monkeypatch.setattr(yaml, "compose", spying_compose)
    report = await rightsize_fleet(RightsizeSources(analyzer, store, agents_file), agent_id="helper")
    proposal = report.agents[0].proposal
    assert proposal.managed_by == "agents_file" and proposal.patch is not None  # the file was parsed and edited
    assert parsed_on, "the proposal never parsed the agents file"
    assert loop_thread not in parsed_on, f"{parsed_on.count(loop_thread)} parse(s) of the agents file ran on the loop"


# ---- values the caller picks: the time, the client it declares, the purpose of a task it grants itself ----

NOON = 1_796_558_400.0  # 2026-12-06 12:00 UTC: outside 2-4 am, so the current hour alone never meets it


@pytest.fixture
def at_noon(engine: PolicyEngine, registry: Registry, tasks: TaskService) -> ReachAnalyzer:
    return ReachAnalyzer(engine, registry, tasks, MONITORING, clock=lambda: NOON)


def write_policy(cedar_dir: Path, engine: PolicyEngine, name: str, *rules: str) -> None:
    (cedar_dir / "policies" / name).write_text("".join(rules))
    assert engine.reload().ok


HELPER = 'principal == Agent::"helper"'


def rule(policy_id: str, effect: str, tool: str, condition: str, principal: str = "principal") -> str:
    """One policy on one tool: `effect` ("permit", "forbid", or with annotations before it) and its conditions."""
    return f'@id("{policy_id}")\n{effect} ({principal}, action == Action::"{tool}", resource)\n{condition};\n'


async def test_a_permit_for_2_to_4_am_is_reachable_whenever_the_report_is_made(
        at_noon: ReachAnalyzer, engine: PolicyEngine, cedar_dir: Path) -> None:
    write_policy(cedar_dir, engine, "90-night.cedar",
                 rule("night-payments", "permit", "payments__pay",
                      "when { context.request.hour >= 2 && context.request.hour < 4 }", HELPER),
                 rule("reads-only-at-night", "forbid", "files__read_file",
                      "when { context.request.hour < 2 || context.request.hour >= 4 }"),
                 rule("never-on-sunday", "forbid", "files__wipe",
                      "when { context.request.weekday == 7 && context.request.time > 0 }"))
    reach = await agent_reach(at_noon, "helper")
    pay, read, wipe = (reach.tool(n) for n in ("payments__pay", "files__read_file", "files__wipe"))
    assert pay is not None and pay.verdict == "allow" and pay.policy_ids == ("night-payments",)
    assert read is not None and read.verdict == "allow"  # a forbid some hours escape: still reachable
    assert wipe is not None and wipe.verdict == "step_up"  # as the shipped step-up policy says
    assert reach.caveats == ()


async def test_a_permit_for_one_declared_client_is_reachable(
        at_noon: ReachAnalyzer, engine: PolicyEngine, cedar_dir: Path) -> None:
    write_policy(cedar_dir, engine, "90-client.cedar",
                 rule("payments-need-approval", '@step_up("pending")\nforbid', "payments__pay",
                      "unless { context.approval.granted }"),
                 rule("claude-code-may-pay", "permit", "payments__pay",
                      'when { context.request.client == "claude-code" }', HELPER),
                 rule("mail-from-claude-code-only", "forbid", "mail__send_email",
                      'unless { context.request.client == "claude-code" }'))
    reach = await agent_reach(at_noon, "helper")
    pay, mail = reach.tool("payments__pay"), reach.tool("mail__send_email")
    assert pay is not None and pay.verdict == "step_up" and pay.policy_ids == ("payments-need-approval",)
    assert mail is not None and mail.verdict == "allow"


async def test_a_permit_for_one_task_purpose_counts_for_a_task_the_agent_grants_itself(
        at_noon: ReachAnalyzer, engine: PolicyEngine, cedar_dir: Path, registry: Registry,
        tasks: TaskService) -> None:
    await registry.update("helper", {"entitlement": {"servers": ["files", "crm", "mail", "payments"],
                                                     "require_task": False}}, "alice", "test")
    write_policy(cedar_dir, engine, "90-purpose.cedar",
                 rule("pay-for-billing-only", "forbid", "payments__pay",
                      'unless { context.task.purpose == "billing" }'),
                 rule("crm-for-billing-only", "forbid", "crm__lookup_customer",
                      'unless { context.task.purpose like "bill*" }'),
                 rule("crm-needs-approval", '@step_up("pending")\nforbid', "crm__lookup_customer",
                      "unless { context.approval.granted }"))
    reach = await agent_reach(at_noon, "helper")
    pay, crm = reach.tool("payments__pay"), reach.tool("crm__lookup_customer")
    assert pay is not None and pay.verdict == "allow"  # the agent may name its own task "billing"
    assert crm is not None and crm.verdict == "step_up" and crm.policy_ids == ("crm-needs-approval",)
    # Only the task it grants itself picks the purpose: without a task the forbid holds.
    assert [v for v, label in zip(pay.verdicts, reach.contexts, strict=True) if label.startswith("no task")] == \
        ["deny"] * 4
    # An existing task's purpose is fixed: that task cannot pay.
    task = await tasks.start("helper", "support", ["payments__pay"], started_by="alice")
    fixed = (await agent_reach(at_noon, "helper", task.id)).tool("payments__pay")
    assert fixed is not None and fixed.verdict == "deny" and fixed.policy_ids == ("pay-for-billing-only",)


async def test_a_permit_on_a_token_claim_is_a_caveat_not_a_silent_deny(
        at_noon: ReachAnalyzer, engine: PolicyEngine, cedar_dir: Path) -> None:
    assert (await agent_reach(at_noon, "helper")).caveats == ()  # the shipped policies read no claim
    write_policy(cedar_dir, engine, "90-claims.cedar",
                 rule("billing-team-pays", "permit", "payments__pay",
                      'when { principal.claims.hasTag("team") && principal.claims.getTag("team") == "billing" }'))
    reach = await agent_reach(at_noon, "helper")
    pay = reach.tool("payments__pay")
    assert pay is not None and pay.verdict == "deny"  # claims are the identity provider's: not assumed
    assert reach.caveats == ("payments__pay: reported deny, but allow when token claims meet billing-team-pays "
                             "(the reach does not model them)",)
    assert reach_to_dict(reach)["caveats"] == list(reach.caveats)


async def test_right_sizing_builds_proposals_only_when_asked_and_once_per_file_and_grant(
        analyzer: ReachAnalyzer, store: Store, tmp_path: Path) -> None:
    agents_file = tmp_path / "agents.yaml"
    agents_file.write_text(yaml.safe_dump({"agents": [agent_spec("helper", ["files", "crm", "mail"]),
                                                      agent_spec("tasked", ["files"], require_task=True)]}))
    await record_a_read(store)
    sources = RightsizeSources(analyzer, store, agents_file)
    figures = await rightsize_fleet(sources, proposals=False)  # what compliance evidence asks for
    assert {a.agent_id: a.proposal for a in figures.agents} == {"helper": None, "tasked": None}
    assert sources.proposals.built == 0 and figures.unused > 0
    first = await rightsize_fleet(sources)
    assert sources.proposals.built == 2 and all(a.proposal is not None for a in first.agents)
    helper = first.agents[0].proposal
    assert helper is not None and helper.managed_by == "agents_file" and helper.patch is not None
    again = await rightsize_fleet(sources)  # unchanged file and use: nothing built again
    assert sources.proposals.built == 2 and again.agents[0].proposal is helper
    agents_file.write_text(agents_file.read_text() + "# reviewed\n")  # another file: its own proposals
    changed = await rightsize_fleet(sources)
    assert sources.proposals.built == 4 and changed.agents[0].proposal is not None
    assert changed.agents[0].proposal.base_sha256 != helper.base_sha256  # made against the new file
