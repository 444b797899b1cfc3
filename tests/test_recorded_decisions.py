"""Decisions do not change when the decision path is made faster (issue 19).

A recorded set of requests is decided and every outcome compared with a checked-in expectation
(tests/fixtures/decisions/recorded.json) generated from the code before the Cedar speed work:
outcome, determining policy ids, reason, step-up mode, approvers, approval TTL, evaluation errors
and the canonical arguments. The set covers:

- every case of the shipped policy tests (cedar/tests/*.yaml);
- the policy benchmark's ~100 policies plus probe policies that read every part of the context
  (chain tools as a set, previous tool, counts, agent signals, task, request facts, approval),
  decided for several agents, each benchmark call, with and without approval, under request facts
  that vary time, era, client, task and chain history (64 recorded calls, repeats included);
- prompts and resources, and what tools/list, prompts/list and resources/list would show.

Regenerate only on purpose (a policy or catalog change, never a speed change):
`.venv/bin/python -m tests.test_recorded_decisions --write`.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from bench.policy import CASES, fixed_principal, make_agents, write_catalog, write_policies
from gateway.catalog import Catalog
from gateway.identity.principal import Principal
from gateway.policy import PolicyEngine, RequestFacts
from gateway.policy.engine import NO_CHAIN, Decision
from gateway.policy.testing import run_policy_tests
from tests.test_policy_engine import REPO_CEDAR, WEDNESDAY

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "decisions" / "recorded.json"
SATURDAY_NIGHT = datetime(2026, 3, 7, 23, 30, tzinfo=UTC).timestamp()

# Policies that read every part of the context, so a change to how any of it reaches Cedar shows.
PROBE_POLICIES = """
@id("probe-chain-tools")
@reason("probe: a delete earlier in this task")
forbid (principal, action in Action::"risk:write", resource)
when { context.chain.tools.contains("files__delete_file") };

@id("probe-chain-tools-any")
@reason("probe: money moved earlier")
@step_up
forbid (principal, action in Action::"risk:privileged", resource)
when { context.chain.tools.containsAny(["payments__transfer", "payments__pay"]) }
unless { context.approval.granted };

@id("probe-chain-tools-all")
@reason("probe: read then paid")
forbid (principal, action == Action::"tickets__search", resource)
when { context.chain.tools.containsAll(["files__read_file", "payments__pay"])
       && context.chain.data_classes.contains("financial") };

@id("probe-previous-tool")
@reason("probe: right after a transfer")
forbid (principal, action == Action::"payments__pay", resource)
when { context.chain.previous_tool == "payments__transfer" };

@id("probe-counts")
@reason("probe: busy")
forbid (principal, action in Action::"call_tool", resource)
when { context.chain.calls_last_minute > 100 || context.chain.writes_last_minute >= 20
       || context.chain.denials_last_minute >= 5 || context.chain.agent.calls_last_minute > 200 };

@id("probe-agent-signals")
@reason("probe: the agent read secrets")
@step_up("pending")
@approvers("security")
@approval_ttl("5m")
forbid (principal, action in Action::"risk:write", resource)
when { context.chain.agent.sensitive_read && context.chain.agent.data_classes.contains("secrets") }
unless { context.approval.granted };

@id("probe-sensitive")
@reason("probe: sensitive task")
forbid (principal, action == Action::"tickets__create_ticket", resource)
when { context.chain.sensitive_read && context.chain.agent.writes_last_minute > 3 };

@id("probe-task-scope")
@reason("probe: outside the task")
forbid (principal, action in Action::"call_tool", resource is Tool)
when { context.task.present && !context.task.tools.contains(resource.exposed_name) };

@id("probe-task-audit")
@reason("probe: audit tasks may read")
permit (principal, action in Action::"risk:read", resource is Tool)
when { context.task.present && context.task.purpose like "*audit*" && context.task.id != "" };

@id("probe-client")
@reason("probe: untrusted client")
forbid (principal, action in Action::"call_tool", resource)
when { context.request.client like "*evil*" };

@id("probe-overflow")
@reason("probe: errors (overflows) once the task is busy")
forbid (principal, action in Action::"risk:read", resource)
when { context.chain.calls_last_minute * 1000000000000000000 > 1 };

@id("probe-era-time")
@reason("probe: old era at night")
@step_up
forbid (principal, action in Action::"risk:destructive", resource)
when { context.request.era == "2025-11-25" && (context.request.hour < 6 || context.request.weekday == 6)
       && context.request.time > 0 && !context.request.working_hours }
unless { context.approval.granted };
"""

CHAIN_TOOLS = ("files__read_file", "payments__get_balance", "tickets__search", "files__read_file",
               "payments__pay", "tickets__search", "files__delete_file", "tickets__search")


def chain(tools: tuple[str, ...] = (), **signals: Any) -> dict[str, Any]:
    agent = {**NO_CHAIN["agent"], **signals.pop("agent", {})}
    return {**NO_CHAIN, "tools": list(tools), "previous_tool": tools[-1] if tools else "", **signals,
            "agent": agent}


FACTS: dict[str, RequestFacts] = {
    "plain": RequestFacts(now=WEDNESDAY, era="2025-11-25", client="bench"),
    "night-old-era": RequestFacts(now=SATURDAY_NIGHT, era="2025-11-25", client="Claude Desktop"),
    "evil-client": RequestFacts(now=WEDNESDAY, era="2026-07-28", client="evil-bot"),
    "audit-task": RequestFacts(now=WEDNESDAY, era="2026-07-28", client="bench",
                               task={"id": "t-1", "purpose": "quarterly audit",
                                     "tools": ["files__read_file", "tickets__search", "payments__get_balance"]}),
    "narrow-task": RequestFacts(now=WEDNESDAY, era="2026-07-28",
                                task={"id": "t-2", "purpose": "fix", "tools": ["files__write_file"]}),
    "history-64": RequestFacts(now=WEDNESDAY, era="2026-07-28", client="bench", chain=chain(
        CHAIN_TOOLS * 8, data_classes=["financial", "internal"], calls_last_minute=64)),
    "after-transfer": RequestFacts(now=WEDNESDAY, era="2026-07-28", chain=chain(
        ("tickets__search",) * 63 + ("payments__transfer",), calls_last_minute=12)),
    "busy": RequestFacts(now=WEDNESDAY, era="2026-07-28", chain=chain(
        ("tickets__search",) * 64, calls_last_minute=101, agent={"calls_last_minute": 140})),
    "agent-read-secrets": RequestFacts(now=WEDNESDAY, era="2026-07-28", chain=chain(
        ("admin__rotate_keys",), sensitive_read=True, data_classes=["secrets"],
        agent={"sensitive_read": True, "data_classes": ["pii", "secrets"], "writes_last_minute": 4})),
    "denials": RequestFacts(now=WEDNESDAY, era="2026-07-28", working_hours=False, chain=chain(
        ("payments__pay",) * 5, denials_last_minute=5, writes_last_minute=2)),
}
EXTRA_CALLS: list[tuple[str, dict[str, Any] | None]] = [
    ("svc000__get_00", {"id": "x", "limit": 5}),
    ("svc000__purge_08", None),
    ("svc001__export_07", {}),
    ("files__read_file", {"path": "/data/./public/../private/%2e%2e/x"}),
    ("payments__pay", {"amount": "12", "currency": "EUR", "payee": {"name": "x", "region": "de"}}),
]


def decision_record(decision: Decision, cedar_dir: Path) -> list[Any]:
    """Everything a decision says but its id and version (the canonical arguments by their digest's head:
    they are recorded whole once per call)."""
    errors = [e.replace(str(cedar_dir), "<cedar>") for e in decision.errors]
    return [decision.outcome, sorted(decision.policy_ids), decision.reason, decision.step_up_mode,
            decision.approvers, decision.approval_ttl_s, errors, (decision.args_digest or "")[:12]]


def shipped_cases() -> list[dict[str, Any]]:
    return [{"file": Path(r.file).name, "name": r.name, "ok": r.ok, "outcome": r.actual, "reason": r.reason,
             "policy_ids": sorted(r.policy_ids), "errors": list(r.errors)}
            for r in run_policy_tests(REPO_CEDAR, Catalog.of([]))]


def principals() -> dict[str, Principal]:
    agents = make_agents(5)  # agent-0000 is suspended; the others differ in groups, labels and auth method
    chosen = {p.agent_id: p for p in (fixed_principal(), *agents)}
    chosen["open-loopback"] = Principal("open-loopback", "open-loopback")
    chosen["spiffe"] = Principal("spiffe-agent", "spiffe", MappingProxyType({"sub": "spiffe://corp.example/a"}),
                                 agents[1].agent)
    return chosen


def probe_engine(tmp: Path) -> tuple[PolicyEngine, Catalog]:
    cedar = tmp / "cedar"
    write_policies(cedar)
    (cedar / "policies" / "95-context-probe.cedar").write_text(PROBE_POLICIES)
    cs = write_catalog(tmp / "catalog", 100)
    return PolicyEngine(cedar, cs.catalog, tool_schemas=cs.schemas), cs.catalog


def probe_decisions(engine: PolicyEngine, catalog: Catalog) -> dict[str, Any]:
    calls = [(name, args) for name, args, _ in CASES] + EXTRA_CALLS
    out: dict[str, Any] = {}
    for pname, principal in principals().items():
        for fname, facts in FACTS.items():
            for i, (tool, args) in enumerate(calls):
                for approved in (False, True):
                    decision = engine.decide_tool(principal, catalog.tools[tool], args, facts, approved)
                    out[f"{pname}|{fname}|{i}:{tool}|{'approved' if approved else 'plain'}"] = \
                        decision_record(decision, engine.policies_dir)
                    if decision.canonical_arguments is not None:
                        out[f"canonical|{i}"] = decision.canonical_arguments
    return out


def item_decisions(engine: PolicyEngine, catalog: Catalog) -> dict[str, Any]:
    prompts = [("files", "files__summarize"), ("payments", "payments__explain"), ("nowhere", "x")]
    resources = [("files", "file:///data/public/a.txt"), ("payments", "ledger://books/../2026"),
                 ("tickets", "file:///data/%2e%2e/secret"), ("nowhere", "file:///a")]
    out: dict[str, Any] = {}
    for pname, principal in principals().items():
        for fname in ("plain", "evil-client", "audit-task"):
            facts = FACTS[fname]
            for sid, name in prompts:
                out[f"{pname}|{fname}|prompt|{sid}|{name}"] = decision_record(
                    engine.decide_prompt(principal, sid, name, facts), engine.policies_dir)
            for sid, uri in resources:
                out[f"{pname}|{fname}|resource|{sid}|{uri}"] = decision_record(
                    engine.decide_resource(principal, sid, uri, facts), engine.policies_dir)
    return out


def listings(engine: PolicyEngine, catalog: Catalog) -> dict[str, Any]:
    tools = list(catalog.tools.values())
    prompts = [("files", "files__summarize"), ("payments", "payments__explain")]
    resources = [("files", "file:///data/public/a.txt"), ("tickets", "ticket://1")]
    out: dict[str, Any] = {}
    for pname, principal in principals().items():
        for fname, facts in FACTS.items():
            out[f"{pname}|{fname}"] = {
                "tools": sorted(engine.visible_tools(principal, tools, facts)),
                "prompts": sorted(engine.visible_prompts(principal, prompts, facts)),
                "resources": sorted(engine.visible_resources(principal, resources, facts)),
            }
    return out


def record() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="narrowgate-recorded-") as tmp:
        engine, catalog = probe_engine(Path(tmp))
        return {
            "shipped_cases": shipped_cases(),
            "tool_calls": probe_decisions(engine, catalog),
            "items": item_decisions(engine, catalog),
            "listings": listings(engine, catalog),
        }


def _differences(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    out = []
    for section, want in expected.items():
        got = actual.get(section)
        if isinstance(want, dict) and isinstance(got, dict):
            out += [f"{section} {key}: expected {want.get(key)}, got {got.get(key)}"
                    for key in sorted(set(want) | set(got)) if want.get(key) != got.get(key)]
        elif want != got:
            out.append(f"{section}: differs")
    return out


def test_decisions_match_the_recording() -> None:
    expected = orjson.loads(FIXTURE.read_bytes())
    actual = orjson.loads(orjson.dumps(record()))  # the same JSON types as the fixture (tuples -> lists)
    assert len(expected["tool_calls"]) > 1500 and expected["shipped_cases"]
    # The recording itself exercises every outcome, and denials by Cedar evaluation errors.
    decisions = [r for key, r in expected["tool_calls"].items() if not key.startswith("canonical|")]
    assert {r[0] for r in decisions} == {"allow", "deny", "step_up"}
    assert any(r[6] and r[6][0].startswith("error while evaluating policy") for r in decisions)
    differences = _differences(expected, actual)
    assert not differences, "\n".join(differences[:20])


def write_fixture() -> None:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    body = record()
    FIXTURE.write_bytes(_one_line_per_entry(body))
    print(f"wrote {FIXTURE} ({len(body['tool_calls'])} tool calls, {len(body['items'])} items, "
          f"{len(body['listings'])} listings, {len(body['shipped_cases'])} shipped cases)")


def _one_line_per_entry(body: dict[str, Any]) -> bytes:
    """Sorted JSON with one line per recorded request, so a diff shows which decisions changed."""
    lines = []
    for section, entries in sorted(body.items()):
        items = sorted(entries.items()) if isinstance(entries, dict) else list(enumerate(entries))
        rows = [(orjson.dumps(k).decode() + ": " if isinstance(entries, dict) else "")
                + orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode() for k, v in items]
        open_, close = ("{", "}") if isinstance(entries, dict) else ("[", "]")
        lines.append(f"{orjson.dumps(section).decode()}: {open_}\n  " + ",\n  ".join(rows) + f"\n{close}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_recorded_decisions --write")
    logging.getLogger("narrowgate").setLevel(logging.CRITICAL)  # the probe's evaluation errors, expected
    write_fixture()
