"""A tool's context holds only what the policies that can apply to it read (gateway.policy.scoped), and Cedar
answers it exactly as it answers the whole context: the same decision, determining policies and errors."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from gateway.catalog import Catalog, load_catalog
from gateway.identity.user import UserIdentity
from gateway.policy import PolicyEngine, RequestFacts, WorkingHours
from gateway.policy.context import NO_CHAIN, ContextBuilder
from gateway.policy.engine import CedarRequest
from gateway.policy.listing import context_reads
from gateway.policy.scoped import Target, ToolScope, ToolScopes, known_false, live_parts
from tests.test_policy_engine import (
    FILES_MANIFEST,
    PAYMENTS_MANIFEST,
    SCHEMAS,
    WEDNESDAY,
    WEDNESDAY_NIGHT,
    add_policy,
    agent_principal,
)
from tests.test_policy_engine import cedar_dir as cedar_dir
from tests.test_policy_engine import write_catalog as bulk_catalog

OUT_MANIFEST = """
id: out
owner: out@example.com
transport: {url: "http://127.0.0.1:9/mcp"}
tools:
  - {name: post, risk: read, egress: true}
  - {name: send, risk: write, egress: true}
"""
# Each reads the context under a scope (or behind a condition on the tool) that matches some tools and not others.
SCOPED_POLICIES = """
@id("t-action-eq")
forbid (principal, action == Action::"files__write_file", resource) when { context.task.depth > 3 };
@id("t-action-in-list")
forbid (principal, action in [Action::"risk:destructive", Action::"server:payments"], resource)
when { context.chain.calls_last_minute > 1000 };
@id("t-action-in")
permit (principal, action in Action::"risk:read", resource is Tool) when { context.request.client == "trusted" };
@id("t-unscoped")
forbid (principal, action, resource) when { context.chain.denials_last_minute > 1000 };
@id("t-resource-is-prompt")
forbid (principal, action, resource is Prompt) when { context.user.email == "x@example.com" };
@id("t-resource-in")
forbid (principal, action, resource in McpServer::"payments") when { context.chain.writes_last_minute > 1000 };
@id("t-resource-eq")
forbid (principal, action, resource == Tool::"files/read_file") when { context.task.purpose == "exfiltrate" };
@id("t-is-in")
forbid (principal, action, resource is Tool in McpServer::"files") when { context.user.acr == "none" };
@id("t-egress")
forbid (principal, action in Action::"call_tool", resource)
when { resource.egress && context.task.present && context.task.id == "forbidden" };
@id("t-if")
forbid (principal, action, resource is Tool) when { if resource.egress then context.request.hour == 3 else false };
@id("t-or-not")
forbid (principal, action, resource is Tool)
when { !(resource.risk == "read" || context.chain.previous_tool != "boom") };
@id("t-has")
forbid (principal, action in Action::"server:files", resource)
when { context.request has weekday && context.request.weekday == 9 };
// Errors (an overflow at 2 calls a minute) where in scope: both contexts must report them alike.
@id("t-overflow-write")
forbid (principal, action in Action::"risk:write", resource)
when { context.chain.calls_last_minute * 4611686018427387904 < 0 };
// Several conditions, evaluated in order: nothing after a false one (an overflow there would be an error).
@id("t-conditions-in-order")
forbid (principal, action, resource is Tool) when { resource.egress }
when { context.chain.calls_last_minute * 4611686018427387904 < 0 };
@id("t-unless-first")
forbid (principal, action, resource is Tool) unless { resource.risk != "write" }
when { context.chain.agent.calls_last_minute * 4611686018427387904 < 0 };
@id("t-overflow-destructive")
permit (principal, action in Action::"risk:destructive", resource)
when { context.chain.agent.calls_last_minute * 4611686018427387904 < 0 };
"""
PERSON = UserIdentity(subject="u1", issuer="https://idp.example", email="x@example.com", email_verified=True,
                      groups=("ops",), client_id="cli", auth_time=int(WEDNESDAY) - 60, acr="none", amr=("pwd",))
ARGUMENTS: dict[str, dict[str, Any]] = {
    "files__read_file": {"path": "/a"}, "files__write_file": {"path": "/a", "content": "x"},
    "payments__pay": {"amount": 5, "payee": {"name": "n", "region": "eu"}},
}


def write_catalog(directory: Path, egress: bool = True) -> Catalog:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "files.yaml").write_text(FILES_MANIFEST)
    (directory / "payments.yaml").write_text(PAYMENTS_MANIFEST)
    (directory / "out.yaml").write_text(OUT_MANIFEST if egress else OUT_MANIFEST.replace("true", "false"))
    return load_catalog(directory)


def grid() -> list[tuple[RequestFacts, bool]]:
    """Request facts that make each policy above true, false or an error somewhere, with an approval and without."""
    out = []
    tasks: list[dict[str, Any] | None] = [
        None, {"id": "forbidden", "purpose": "exfiltrate", "tools": ["a"], "depth": 4}]
    for now, calls, previous, task, user, approved in itertools.product(
            (WEDNESDAY, WEDNESDAY_NIGHT), (0, 2), ("", "boom"), tasks, (None, PERSON), (False, True)):
        chain = {**NO_CHAIN, "calls_last_minute": calls, "previous_tool": previous, "sensitive_read": calls > 0,
                 "agent": {**NO_CHAIN["agent"], "calls_last_minute": calls, "sensitive_read": True}}
        client = "trusted" if previous else "c"
        out.append((RequestFacts(now=now, era="2026-07-28", client=client, task=task, chain=chain, user=user),
                    approved))
    return out


def answer(policies: cedarpy.PolicySet, request: CedarRequest, cedar: dict[str, Any]) -> tuple[object, ...]:
    (result,) = cedarpy.is_authorized_batch([cedar], policies, request.entities)
    return result.decision, sorted(result.diagnostics.reasons), sorted(result.diagnostics.errors)


def test_cedar_answers_the_scoped_context_as_the_whole_one(cedar_dir: Path, tmp_path: Path) -> None:
    add_policy(cedar_dir, "90-scoped.cedar", SCOPED_POLICIES)
    catalog = write_catalog(tmp_path / "catalog")
    engine = PolicyEngine(cedar_dir, catalog, tool_schemas=SCHEMAS)
    builder = ContextBuilder(WorkingHours())
    sizes, answers, errors, subsets = set(), set(), 0, 0
    for who, tool in itertools.product((agent_principal(servers=("files", "payments", "out")), agent_principal("a2")),
                                       catalog.tools.values()):
        for facts, approved in grid():
            seen: list[CedarRequest] = []
            arguments = ARGUMENTS.get(tool.exposed_name, {})
            decision = engine.decide_tool(who, tool, arguments, facts, approved, seen)
            request = seen[0]
            whole = builder.build(True, facts, approved, request.cedar_input, request.input_whole)
            scoped = answer(request.policies or engine.bundle.policies, request, request.cedar)  # as it was sent
            assert scoped == answer(engine.bundle.policies, request, {**request.cedar, "context": whole}), (
                tool.exposed_name, request.context)
            subsets += request.policies is not None
            sizes.add(len(request.cedar.get("context", "")))
            answers.add(str(scoped[0]))
            errors += bool(decision.errors)
    assert len(sizes) > 3 and answers == {"Decision.Allow", "Decision.Deny"} and errors > 0  # not vacuous
    assert subsets > 0


def tool_scope(engine: PolicyEngine, name: str) -> ToolScope:
    """The scope the engine's bundle gives tool `name` of its catalog."""
    bundle = engine.bundle
    assert bundle.scoped is not None
    model = bundle.catalog.tools[name]
    return bundle.scoped.for_tool(model, bundle.catalog.servers[model.entry.server_id], bundle.catalog)


def test_each_scope_form_keeps_what_can_apply(cedar_dir: Path, tmp_path: Path) -> None:
    add_policy(cedar_dir, "90-scoped.cedar", SCOPED_POLICIES)
    catalog = write_catalog(tmp_path / "catalog")
    engine = PolicyEngine(cedar_dir, catalog, tool_schemas=SCHEMAS)

    def reads(name: str) -> Any:
        return tool_scope(engine, name).reads

    read_file, write_file, post = reads("files__read_file"), reads("files__write_file"), reads("out__post")
    assert read_file["task"] == {"purpose": True} and "depth" not in read_file["task"]  # == Tool, not action ==
    assert write_file["task"] == {"depth": True}  # action ==
    assert all("calls_last_minute" in reads(name)["chain"] for name in ("payments__pay", "files__wipe"))
    assert "writes_last_minute" not in read_file["chain"]
    assert "writes_last_minute" in reads("payments__get_balance")["chain"]  # resource in McpServer
    assert "email" not in read_file.get("user", {})  # resource is Prompt: never for a tool
    assert read_file["user"]["acr"] is True and "user" not in reads("payments__get_balance")  # is Tool in files
    assert "hour" in post["request"] and "hour" not in read_file["request"]  # if resource.egress
    assert post["task"] == {"present": True, "id": True}  # resource.egress && ...: read only where it is true
    assert "previous_tool" in write_file["chain"] and "previous_tool" not in read_file["chain"]  # !(risk == read || ..)
    assert "client" in read_file["request"] and "client" not in write_file["request"]  # action in risk:read
    assert reads("files__read_file") is read_file  # remembered
    same = [reads(name) for name in ("payments__get_balance", "payments__get_balance")]
    assert same[0] is same[1]


def test_a_catalog_change_is_read_anew(cedar_dir: Path, tmp_path: Path) -> None:
    """`egress` flipped by a catalog change: the tool's read set follows it (no read set of the old catalog's
    tool is used), so the chain policy's context is there once the tool can send data out."""
    engine = PolicyEngine(cedar_dir, write_catalog(tmp_path / "a", egress=False), tool_schemas=SCHEMAS)
    who = agent_principal(servers=("out",))
    facts = RequestFacts(now=WEDNESDAY, era="2026-07-28", chain={**NO_CHAIN, "sensitive_read": True})
    tool = engine.bundle.catalog.tools["out__post"].entry
    seen: list[CedarRequest] = []
    assert engine.decide_tool(who, tool, {}, facts, seen=seen).outcome == "allow"
    assert seen[0].context == {}
    egress = write_catalog(tmp_path / "b")
    assert engine.set_catalog(egress, SCHEMAS).ok
    seen.clear()
    decision = engine.decide_tool(who, egress.tools["out__post"], {}, facts, seen=seen)
    assert decision.outcome == "step_up" and seen[0].context["chain"]["sensitive_read"] is True


def test_a_shadow_set_sees_the_whole_context(cedar_dir: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shutil.copytree(cedar_dir, shadow)
    catalog = write_catalog(tmp_path / "catalog")
    engine = PolicyEngine(cedar_dir, catalog, tool_schemas=SCHEMAS, shadow_dir=shadow)
    seen: list[CedarRequest] = []
    engine.decide_tool(agent_principal(servers=("files",)), catalog.tools["files__read_file"], {"path": "/a"},
                       RequestFacts(now=WEDNESDAY, era="2026-07-28"), seen=seen)
    assert set(seen[0].context) >= {"request", "approval", "task", "chain", "user"}


# ---- the analysis on its own: forms it does not know keep everything -------------------------------------

READ_CHAIN = {".": {"left": {".": {"left": {"Var": "context"}, "attr": "chain"}}, "attr": "sensitive_read"}}


def known_target(action: tuple[str, str], resource: tuple[str, str], records: list[Any]) -> Target:
    target = Target.of(action, resource, records)
    assert target is not None
    return target


TARGET = known_target(("Action", "files__read_file"), ("Tool", "files/read_file"), [
    {"uid": {"type": "Tool", "id": "files/read_file"}, "attrs": {"egress": False, "risk": "read"},
     "parents": [{"type": "McpServer", "id": "files"}]},
    {"uid": {"type": "McpServer", "id": "files"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Action", "id": "files__read_file"}, "attrs": {},
     "parents": [{"type": "Action", "id": "call_tool"}, {"type": "Action", "id": "risk:read"}]},
])


def policy(action: Any = None, resource: Any = None, conditions: Any = None) -> dict[str, Any]:
    return {"effect": "forbid", "principal": {"op": "All"}, "action": action or {"op": "All"},
            "resource": resource or {"op": "All"},
            "conditions": conditions if conditions is not None else [{"kind": "when", "body": READ_CHAIN}]}


WRITE = {"type": "Action", "id": "risk:write"}


@pytest.mark.parametrize("est", [
    policy(),  # unscoped
    policy(action={"op": "in", "entity": {"type": "Action", "id": "risk:read"}}),
    policy(action={"op": "in", "entities": [WRITE, {"type": "Action", "id": "call_tool"}]}),
    policy(action={"op": "==", "entity": {"type": "Action", "id": "files__read_file"}}),
    policy(resource={"op": "is", "entity_type": "Tool", "in": {"entity": {"type": "McpServer", "id": "files"}}}),
    # Forms not known here (a template's slots, an entity spelled another way, an unknown operator or
    # condition kind): kept whole, as if they could apply.
    policy(resource={"op": "in", "slot": "?resource"}),
    policy(action={"op": "==", "entity": {"__entity": {"type": "Action", "id": "risk:write"}}}),
    policy(action={"op": "within", "entity": WRITE}),
    policy(resource={"op": "==", "slot": "?resource"}),
    policy(resource={"op": "is", "entity_type": "Tool", "in": {"slot": "?resource"}}),
    policy(conditions=[{"kind": "if", "body": {"Value": False}}, {"kind": "when", "body": READ_CHAIN}]),
    policy(conditions=[{"kind": "when", "body": {"like": {"left": {".": {"left": {"Var": "resource"}, "attr": "risk"}},
                                                             "pattern": ["x"]}}},
                       {"kind": "when", "body": READ_CHAIN}]),
])
def test_what_can_apply_keeps_its_reads(est: dict[str, Any]) -> None:
    full = context_reads({"p": est})
    assert full == {"chain": {"sensitive_read": True}}
    assert ToolScopes({"p": est}, full).reads(TARGET) == full
    assert not known_false(est, TARGET) and ToolScopes({"p": est}, full).applicable(TARGET) == ("p",)


@pytest.mark.parametrize("est", [
    policy(action={"op": "in", "entity": WRITE}),
    policy(action={"op": "in", "entities": [WRITE, {"type": "Action", "id": "risk:privileged"}]}),
    policy(action={"op": "==", "entity": {"type": "Action", "id": "call_tool"}}),  # == is not in
    policy(resource={"op": "is", "entity_type": "Prompt"}),
    policy(resource={"op": "in", "entity": {"type": "McpServer", "id": "payments"}}),
    policy(resource={"op": "is", "entity_type": "Tool", "in": {"entity": {"type": "McpServer", "id": "payments"}}}),
    policy(resource={"op": "==", "entity": {"type": "Tool", "id": "files/wipe"}}),
    policy(conditions=[{"kind": "when", "body": {"&&": {"left": {".": {"left": {"Var": "resource"}, "attr": "egress"}},
                                                          "right": READ_CHAIN}}}]),
    policy(conditions=[{"kind": "unless", "body": {"==": {"left": {".": {"left": {"Var": "resource"}, "attr": "risk"}},
                                                            "right": {"Value": "read"}}}},
                       {"kind": "when", "body": READ_CHAIN}]),
])
def test_what_cannot_apply_reads_nothing(est: dict[str, Any]) -> None:
    full = context_reads({"p": est})
    assert full == {"chain": {"sensitive_read": True}} and live_parts(est, TARGET) == []
    assert ToolScopes({"p": est}, full).reads(TARGET) == {}
    assert known_false(est, TARGET) and ToolScopes({"p": est, "q": policy()}, full).applicable(TARGET) == ("q",)


def test_parts_before_a_false_one_are_kept() -> None:
    """An earlier condition is evaluated (its error stays an error): only what follows a false one goes, and the
    policy stays in the tool's set."""
    egress = {".": {"left": {"Var": "resource"}, "attr": "egress"}}
    est = policy(conditions=[{"kind": "when", "body": READ_CHAIN}, {"kind": "when", "body": egress},
                             {"kind": "when", "body": {".": {"left": {"Var": "context"}, "attr": "approval"}}}])
    assert ToolScopes({"p": est}, True).reads(TARGET) == {"chain": {"sensitive_read": True}}
    assert not known_false(est, TARGET)  # false for the tool, but what comes first may be an error: kept
    one = {"&&": {"left": {"Value": 1}, "right": READ_CHAIN}}  # Cedar's type error: nothing known, all kept
    one_is_not_a_bool = policy(conditions=[{"kind": "when", "body": one}])
    assert ToolScopes({"p": one_is_not_a_bool}, True).reads(TARGET) == {"chain": {"sensitive_read": True}}
    assert not known_false(one_is_not_a_bool, TARGET)


def test_a_tool_no_policy_can_apply_to_is_denied_by_an_empty_set(tmp_path: Path) -> None:
    """No policy can apply to a read tool here: its set is empty (and no context is sent), and Cedar denies by
    default, as under the whole set; a write tool is decided by the one policy."""
    cedar = tmp_path / "cedar"
    (cedar / "policies").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parent.parent / "cedar" / "schema.cedarschema", cedar)
    (cedar / "policies" / "writes.cedar").write_text(
        '@id("writes-with-approval")\npermit (principal, action in Action::"risk:write", resource)\n'
        "when { context.approval.granted };\n")
    catalog = write_catalog(tmp_path / "catalog")
    engine = PolicyEngine(cedar, catalog, tool_schemas=SCHEMAS)
    facts = RequestFacts(now=WEDNESDAY, era="2026-07-28")
    seen: list[CedarRequest] = []
    decision = engine.decide_tool(agent_principal(), catalog.tools["files__read_file"], {"path": "/a"}, facts,
                                  True, seen)
    request = seen[0]
    assert request.policies is not None and not request.policies and "context" not in request.cedar
    assert decision.outcome == "deny" and decision.policy_ids == () and not decision.errors
    approved = engine.decide_tool(agent_principal(), catalog.tools["files__write_file"], {"path": "/a"}, facts, True)
    assert approved.outcome == "allow" and approved.policy_ids == ("writes-with-approval",)


def test_tools_of_one_kind_share_one_scope(cedar_dir: Path, tmp_path: Path) -> None:
    """The analysis runs once per kind of tool (what the policies can tell apart), not once per tool: bulk read tools
    of one server share one scope; a tool the policies tell apart (egress, another risk) has its own."""
    catalog = bulk_catalog(tmp_path / "catalog", extra_tools=50)
    engine = PolicyEngine(cedar_dir, catalog, tool_schemas=SCHEMAS)
    bundle = engine.bundle
    assert bundle.scoped is not None

    def scope(name: str) -> ToolScope:
        return tool_scope(engine, name)

    bulk = {id(scope(f"bulk__t{i}")) for i in range(50)}
    assert len(bulk) == 1 and scope("files__read_file") is scope("bulk__t0")  # shipped policies: read is read
    assert scope("files__write_file") is not scope("files__read_file") and scope("files__wipe").reads != {}
    assert len(bundle.scoped._by_kind) <= 4


# ---- entity JSON in a form not known here: the target is unknown, and everything is kept ------------------

UID_FORMS_POLICIES = ('permit (principal, action, resource);\n'
                      'forbid (principal, action in Action::"call_tool", resource in McpServer::"s");')
SERVER_UID = {"type": "McpServer", "id": "s"}
CALL_TOOL = {"type": "Action", "id": "call_tool"}


def uid_form_records(form: str) -> list[Any]:
    """A tool's three records, one part of them spelled in a form Cedar accepts (or refuses) but Target does not
    know: the forbid above matches in Cedar's eyes wherever it is."""
    tool: Any = {"uid": {"type": "Tool", "id": "s/t"}, "attrs": {}, "parents": [SERVER_UID]}
    action: Any = {"uid": {"type": "Action", "id": "s__t"}, "attrs": {}, "parents": [CALL_TOOL]}
    server: Any = {"uid": SERVER_UID, "attrs": {}, "parents": []}
    if form == "tool-parent":
        tool["parents"] = [{"__entity": SERVER_UID}]
    elif form == "action-parent":
        action["parents"] = [{"__entity": CALL_TOOL}]
    elif form == "tool-uid":
        tool["uid"] = {"__entity": tool["uid"]}
    elif form == "action-uid":
        action["uid"] = {"__entity": action["uid"]}
    elif form == "duplicate":
        return [tool, server, action, {**tool, "parents": []}]
    elif form == "not-a-record":
        return [tool, server, action, ["odd"]]
    elif form == "parents-not-a-list":
        tool["parents"] = {"x": SERVER_UID}
    elif form == "attrs-not-a-record":
        tool["attrs"] = ["egress"]
    elif form == "more-keys":
        tool["tags"] = {}
    elif form == "no-resource-record":
        return [server, action]
    return [tool, server, action]


@pytest.mark.parametrize("form", ["tool-parent", "action-parent", "tool-uid", "action-uid", "duplicate",
                                  "not-a-record", "parents-not-a-list", "attrs-not-a-record", "more-keys",
                                  "no-resource-record"])
def test_entities_spelled_otherwise_keep_every_policy(form: str) -> None:
    """A uid or parent `Target` does not recognise (Cedar takes `{"__entity": ..}`) used to be skipped, so the
    forbid looked as if it could not match: the subset allowed where the whole set denies. Now any record not
    known here makes the target unknown: every policy and the whole read set are kept."""
    est = json.loads(cedarpy.policies_to_json_str(UID_FORMS_POLICIES))["staticPolicies"]
    records = uid_form_records(form)
    scopes = ToolScopes(est, context_reads(est))
    target = Target.of(("Action", "s__t"), ("Tool", "s/t"), records)
    assert target is None
    assert scopes.applicable(target) == tuple(est) and scopes.reads(target) is scopes.full
    scope = scopes._scope(target)
    assert scope.policies is None and scopes.policy_set(scope) is None
    if form in ("tool-parent", "action-parent", "tool-uid"):  # Cedar takes these: the whole set's answer stands
        request = {"principal": {"type": "Agent", "id": "a"}, "action": {"type": "Action", "id": "s__t"},
                   "resource": {"type": "Tool", "id": "s/t"}}
        (whole,) = cedarpy.is_authorized_batch([request], cedarpy.PolicySet.from_str(UID_FORMS_POLICIES),
                                               json.dumps(records))
        assert str(whole.decision) == "Decision.Deny" and whole.diagnostics.reasons == ["policy1"]


def test_plain_records_are_still_known() -> None:
    est = {"p": policy(action={"op": "in", "entity": CALL_TOOL})}
    target = Target.of(("Action", "s__t"), ("Tool", "s/t"), uid_form_records("plain"))
    assert target is not None and target.within(("Tool", "s/t"), ("McpServer", "s"))
    assert ToolScopes(est, context_reads(est)).applicable(target) == ("p",)


@pytest.mark.parametrize("conditions", [[["when", READ_CHAIN]], [{"kind": "when", "body": READ_CHAIN}, "odd"],
                                        {"kind": "when", "body": READ_CHAIN}])
def test_conditions_spelled_otherwise_keep_every_read(conditions: Any) -> None:
    """A policy whose conditions are not a list of `when`/`unless` records: not known false, and all reads kept
    (the analysis neither skips nor trips over it)."""
    odd = {**policy(action={"op": "in", "entity": WRITE}), "conditions": conditions}
    full = {"chain": {"sensitive_read": True}}
    scopes = ToolScopes({"p": odd, "q": policy()}, full)
    assert live_parts(odd, TARGET) is None and not known_false(odd, TARGET)
    assert scopes.reads(TARGET) is full and scopes.applicable(TARGET) == ("p", "q")


# ---- bounds: parsed subsets, the per-tool memo, context plans ----------------------------------------------

def per_action_scopes(count: int) -> tuple[ToolScopes, list[Target], str]:
    """`count` tools each with its own set of applicable policies (a forbid per tool, and one permit)."""
    forbid = 'forbid (principal, action == Action::"s__t{}", resource) when {{ context.chain.sensitive_read }};'
    text = "\n".join(forbid.format(i) for i in range(count)) + "\npermit (principal, action, resource);"
    est = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]
    targets = [known_target(("Action", f"s__t{i}"), ("Tool", f"s/t{i}"), [
        {"uid": {"type": "Tool", "id": f"s/t{i}"}, "attrs": {}, "parents": [SERVER_UID]},
        {"uid": {"type": "Action", "id": f"s__t{i}"}, "attrs": {}, "parents": [CALL_TOOL]}]) for i in range(count)]
    return ToolScopes(est, context_reads(est)), targets, text


def test_parsed_subsets_are_bounded_and_not_parsed_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scope names its subset by key and holds no parsed set (it used to hold its own: clearing the kept ones
    freed nothing); at most POLICY_SETS_KEPT are alive, least recently used out; with more sets in use than
    kept, a call of a pushed-out one is decided by the whole set (the same answer), not by parsing it again."""
    import gateway.policy.scoped as scoped_module
    monkeypatch.setattr(scoped_module, "POLICY_SETS_KEPT", 2)
    scopes, targets, text = per_action_scopes(5)
    whole = cedarpy.PolicySet.from_str(text)
    rounds = 20
    for _ in range(rounds):
        for i, target in enumerate(targets):
            scope = scopes._scope(target)
            assert not isinstance(scope.policies, cedarpy.PolicySet) and scope.policies is not None
            subset = scopes.policy_set(scope)
            assert len(scopes._sets) <= 2
            request = {"principal": {"type": "Agent", "id": "a"}, "action": {"type": "Action", "id": f"s__t{i}"},
                       "resource": {"type": "Tool", "id": f"s/t{i}"}, "context": {"chain": {"sensitive_read": True}}}
            (sent,) = cedarpy.is_authorized_batch([request], subset if subset is not None else whole, "[]")
            (answer,) = cedarpy.is_authorized_batch([request], whole, "[]")
            assert (sent.decision, sent.diagnostics.reasons) == (answer.decision, answer.diagnostics.reasons)
    calls = rounds * len(targets)
    assert scopes.sets_parsed <= len(targets) + calls // scoped_module.REBUILD_AFTER_MISSES + 1  # not one a call
    recent = scopes._scope(targets[-1])
    assert scopes.policy_set(recent) is scopes.policy_set(recent)  # one in use stays parsed


def test_a_recently_used_subset_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.policy.scoped as scoped_module
    monkeypatch.setattr(scoped_module, "POLICY_SETS_KEPT", 2)
    scopes, targets, _ = per_action_scopes(4)
    hot = scopes._scope(targets[0])
    first = scopes.policy_set(hot)
    for target in targets[1:]:
        scopes.policy_set(scopes._scope(target))
        assert scopes.policy_set(hot) is first  # least recently used goes, not all of them


def test_an_old_catalogs_tools_are_not_held(cedar_dir: Path, tmp_path: Path) -> None:
    """A catalog change that needs no compile (an owner changed) keeps the bundle's ToolScopes: its per-tool memo
    used to keep the old catalog's models (with their input schemas) beside the new ones until 16,384 entries."""
    engine = PolicyEngine(cedar_dir, write_catalog(tmp_path / "a"), tool_schemas=SCHEMAS)
    scoped = engine.bundle.scoped
    assert scoped is not None
    who, facts = agent_principal(servers=("files",)), RequestFacts(now=WEDNESDAY, era="2026-07-28")
    engine.decide_tool(who, engine.bundle.catalog.tools["files__read_file"].entry, {"path": "/a"}, facts)
    old = engine.bundle.catalog
    changed = tmp_path / "b"
    write_catalog(changed)
    (changed / "files.yaml").write_text(FILES_MANIFEST.replace("storage@example.com", "other@example.com"))
    assert engine.set_catalog(load_catalog(changed), SCHEMAS).ok
    assert engine.bundle.scoped is scoped and engine.bundle.catalog is not old  # not compiled again
    tool = engine.bundle.catalog.tools["files__read_file"]
    assert engine.decide_tool(who, tool.entry, {"path": "/a"}, facts).outcome == "allow"
    held = [entry[0] for entry in scoped._memo[1].values()]
    assert held == [tool] and all(model is not old.tools["files__read_file"] for model in held)


def test_context_plans_are_kept_least_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan in use survives more other read sets than PLANS_KEPT (they used to be cleared all at once)."""
    import gateway.policy.context as context_module
    builder = ContextBuilder(WorkingHours())
    facts = RequestFacts(now=WEDNESDAY, era="2026-07-28")
    hot: Any = {"approval": {"granted": True}}
    builder.build_json(hot, facts, False)
    for i in range(context_module.PLANS_KEPT * 2):
        builder.build_json({"approval": {"granted": True}, "request": {"hour": True}, "task": {"id": True}}, facts,
                           bool(i % 2))
        builder.build_json(hot, facts, True)
        assert len(builder._plans) <= context_module.PLANS_KEPT
    assert builder.remembered(hot)[0] == 2  # both of its contexts, the first from before all the others


def test_remembered_contexts_are_bounded_across_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHAPE_BYTES_KEPT bounds the contexts all plans remember together (it bounded each plan's, x 16)."""
    import gateway.policy.context as context_module
    monkeypatch.setattr(context_module, "SHAPE_BYTES_KEPT", 300)
    builder = ContextBuilder(WorkingHours())
    read_sets: list[Any] = [{"request": {"client": True}, "approval": {"granted": True}} for _ in range(6)]
    for client in range(40):
        for reads in read_sets:
            facts = RequestFacts(now=WEDNESDAY, era="2026-07-28", client=f"client-{client}")
            context, _ = builder.build_json(reads, facts, False)
            assert context == {"request": {"client": f"client-{client}"}, "approval": {"granted": False}}
            total = sum(builder.remembered(r)[1] for r in read_sets)
            assert 0 < total <= 300 and builder.shape_bytes == total
