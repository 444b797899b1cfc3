"""Policy test cases (`cedar/tests/*.yaml`) and directory validation, for `narrowgate policy test|validate`.

A case file may bring its own small catalog and tool input schemas, so the shipped cases test the
shipped policies without depending on whichever catalog a deployment has. Format: cedar/README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from gateway.catalog.model import NAMESPACE_SEPARATOR, Catalog, HttpTransport, ServerEntry, ToolEntry
from gateway.identity.principal import Principal
from gateway.identity.user import UserIdentity
from gateway.policy.engine import NO_CHAIN, Decision, PolicyEngine, PolicyLoadError, RequestFacts
from gateway.policy.hours import WorkingHours
from gateway.registry.model import Agent, Entitlement, Lifecycle

TESTS_SUBDIR = "tests"
DEFAULT_AT = "2026-03-04T10:00:00+00:00"  # a Wednesday morning, UTC


@dataclass(frozen=True, slots=True)
class CaseResult:
    file: str
    name: str
    ok: bool
    expected: str
    actual: str
    reason: str = ""
    policy_ids: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    message: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def validate_policies_dir(policies_dir: Path, catalog: Catalog,
                          tool_schemas: Mapping[str, Mapping[str, Any] | None] | None = None) -> list[str]:
    """Every problem that would stop this directory loading against `catalog` (empty: valid)."""
    try:
        PolicyEngine(policies_dir, catalog, tool_schemas=tool_schemas)
    except PolicyLoadError as exc:
        return list(exc.problems)
    return []


def run_policy_tests(policies_dir: Path, catalog: Catalog) -> list[CaseResult]:
    """Run every case in `<policies_dir>/tests/*.yaml`; a file that cannot run yields one failed result."""
    results: list[CaseResult] = []
    for path in sorted((policies_dir / TESTS_SUBDIR).glob("*.y*ml")):
        results.extend(_run_file(policies_dir, path, catalog))
    return results


def _run_file(policies_dir: Path, path: Path, catalog: Catalog) -> list[CaseResult]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        file_catalog = _merged(_catalog(doc["catalog"]), catalog) if doc.get("catalog") else catalog
        hours = WorkingHours.from_mapping(doc.get("working_hours"))
        engine = PolicyEngine(policies_dir, file_catalog, working_hours=hours, tool_schemas=doc.get("schemas") or {})
    except PolicyLoadError as exc:
        return [CaseResult(str(path), "(load)", False, "load", "error", message="\n".join(exc.problems))]
    except (OSError, yaml.YAMLError, ValueError, KeyError, TypeError) as exc:
        return [CaseResult(str(path), "(file)", False, "load", "error", message=f"{type(exc).__name__}: {exc}")]
    agents = doc.get("agents") or {}
    results = []
    for index, case in enumerate(doc.get("cases") or []):
        name = str(case.get("name") or f"case {index + 1}")
        try:
            results.append(_run_case(engine, file_catalog, agents, case, str(path), name))
        except (ValueError, KeyError, TypeError) as exc:
            results.append(CaseResult(str(path), name, False, str(case.get("expect")), "error",
                                      message=f"bad case: {type(exc).__name__}: {exc}"))
    return results


def _run_case(engine: PolicyEngine, catalog: Catalog, agents: Mapping[str, Any], case: Mapping[str, Any],
              file: str, name: str) -> CaseResult:
    principal = _principal(case, agents)
    facts = _facts(case)
    decision = _decide(engine, catalog, principal, case, facts)
    expected = str(case["expect"])
    ok = decision.outcome == expected
    wanted_ids = case.get("expect_policies")
    if ok and wanted_ids is not None and sorted(wanted_ids) != sorted(decision.policy_ids):
        ok = False
    got = f"{decision.outcome} {list(decision.policy_ids)}"
    message = "" if ok else f"expected {expected} {wanted_ids or ''}, got {got}"
    return CaseResult(file, name, ok, expected, decision.outcome, decision.reason, decision.policy_ids,
                      decision.errors, message)


def _decide(engine: PolicyEngine, catalog: Catalog, principal: Principal, case: Mapping[str, Any],
            facts: RequestFacts) -> Decision:
    if "tool" in case:
        tool = catalog.tools[case["tool"]]
        return engine.decide_tool(principal, tool, case.get("args"), facts, bool(case.get("approved", False)))
    if "prompt" in case:
        return engine.decide_prompt(principal, case["prompt"]["server"], case["prompt"]["name"], facts)
    if "resource" in case:
        return engine.decide_resource(principal, case["resource"]["server"], case["resource"]["uri"], facts)
    raise ValueError("a case needs tool, prompt or resource")


def _principal(case: Mapping[str, Any], agents: Mapping[str, Any]) -> Principal:
    raw = case.get("agent")
    if raw is None:
        return Principal("open-loopback", "open-loopback")
    spec = dict(agents[raw]) if isinstance(raw, str) else dict(raw)
    agent_id = str(spec.get("id") or (raw if isinstance(raw, str) else "agent"))
    agent = Agent(
        id=agent_id,
        display_name=agent_id,
        owner=str(spec.get("owner", "owner@example.com")),
        purpose=str(spec.get("purpose", "testing")),
        state=Lifecycle(spec.get("state", "active")),
        created_at=0.0,
        changed_at=float(spec.get("changed_at", 1.0)),
        expires_at=spec.get("expires_at"),
        identities=(),
        groups=tuple(spec.get("groups") or ()),
        labels=MappingProxyType({str(k): str(v) for k, v in (spec.get("labels") or {}).items()}),
        entitlement=Entitlement(tuple(spec.get("entitled_tools") or ()), tuple(spec.get("entitled_servers") or ())),
    )
    claims = MappingProxyType(dict(case.get("claims") or spec.get("claims") or {}))
    return Principal(agent_id, str(case.get("auth_method", spec.get("auth_method", "static-token"))), claims, agent)


def _facts(case: Mapping[str, Any]) -> RequestFacts:
    now = case.get("now")
    if now is None:
        at = case.get("at", DEFAULT_AT)
        now = (at if isinstance(at, datetime) else datetime.fromisoformat(str(at))).timestamp()
    chain = case.get("chain")
    if chain is not None:
        # A case names only the signals it is about, the agent's among them.
        chain = {**NO_CHAIN, **chain, "agent": {**NO_CHAIN["agent"], **(chain.get("agent") or {})}}
    return RequestFacts(now=float(now), era=str(case.get("era", "2026-07-28")), client=str(case.get("client", "")),
                        chain=chain, user=_user(case.get("user"), float(now)))


def _user(raw: object, now: float) -> UserIdentity | None:
    """A case's person (context.user): {sub, issuer?, email?, email_verified?, groups?, client_id?, acr?, amr?,
    auth_age_s? (seconds before `now` they signed in) or auth_time?}; absent: a workload."""
    if not isinstance(raw, Mapping):
        return None
    auth_time = raw.get("auth_time")
    if raw.get("auth_age_s") is not None:
        auth_time = int(now - float(raw["auth_age_s"]))
    return UserIdentity(
        subject=str(raw.get("sub", "person")), issuer=str(raw.get("issuer", "https://login.example.com")),
        email=str(raw.get("email", "")), email_verified=bool(raw.get("email_verified", False)),
        groups=tuple(str(g) for g in raw.get("groups") or ()), client_id=str(raw.get("client_id", "client")),
        auth_time=None if auth_time is None else int(auth_time), acr=str(raw.get("acr", "")),
        amr=tuple(str(a) for a in raw.get("amr") or ()))


def _merged(own: Catalog, deployment: Catalog) -> Catalog:
    """A case file's own servers, plus the deployment's others, so deployment policies still load."""
    taken = set(own.tools)
    extra = [s for sid, s in deployment.servers.items()
             if sid not in own.servers and not any(t.exposed_name in taken for t in s.tools.values())]
    return Catalog.of([*own.servers.values(), *extra])


def _catalog(raw: list[Mapping[str, Any]]) -> Catalog:
    """A small in-file catalog: [{id, owner, namespace?, tools: [{name, risk, data_classes?, owner?}]}]."""
    servers = []
    for item in raw:
        server_id = str(item["id"])
        namespace = str(item.get("namespace", server_id))
        owner = str(item.get("owner", "owner@example.com"))
        tools = {}
        for tool in item.get("tools") or []:
            exposed = f"{namespace}{NAMESPACE_SEPARATOR}{tool['name']}" if namespace else str(tool["name"])
            tools[tool["name"]] = ToolEntry(str(tool["name"]), exposed, server_id, tool["risk"],
                                            tuple(tool.get("data_classes") or ()), str(tool.get("owner", owner)),
                                            bool(tool.get("egress", False)))
        servers.append(ServerEntry(server_id, namespace, owner, "", HttpTransport("http://127.0.0.1:9/mcp"), 30.0,
                                   MappingProxyType(tools), Path("(test case)")))
    return Catalog.of(servers)
