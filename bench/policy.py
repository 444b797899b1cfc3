"""Policy decision benchmark: Cedar's cost per decision against catalog size and registry size.

``.venv/bin/python -m bench.policy [--json out.json] [--calls N] [--tools 10,100]`` (or ``python bench/policy.py``)

In a temporary directory it writes catalogs of 10, 100, 1,000 and 10,000 tools (a fixed core of
four servers with typed input schemas, the rest spread over bulk servers of 50 tools in a mix of
risk tiers, some of them typed too), a copy of the repo's ``cedar/`` with ~95 generated policies
added (per-group permits, ``context.input`` conditions, ``like`` forbids, step-ups, time, label and
claim rules; about 100 in all, every one validated against the generated schema), and registries
of 10, 100 and 1,000 agents (Agent records with groups, labels and entitlements, and a Principal
for each). Then, in process, with the deciding thread's CPU clock (``time.thread_time_ns``: on a
shared machine wall-clock samples mostly measure other processes) around each call (warm-up
excluded, every loop bounded by a call count):

1. ``decide_tool`` per catalog size, one agent, over a fixed mix of calls on the core tools
   (allow, deny, step-up; a step-up evaluates twice) and for one allowed call alone; the mix both
   with no history and as a running gateway decides it: inside a task, with the chain history the
   gateway carries (64 recorded calls in the chain window, from gateway.chain's own tracker);
2. ``decide_tool`` per registry size on the 1,000-tool catalog, cycling through the agents:
   warm (each agent's entities cached) and cold (every call a changed Agent record, so its
   entities are rendered again, as after a registry update);
3. ``visible_tools`` for a 50-tool listing (10 on the 10-tool catalog) per catalog size;
4. the bytes of entity JSON one tools/call decision sends to Cedar, per catalog size.

Prints one table and, with ``--json``, writes every figure. Exit status 0, or 1 when the generated
policies do not validate or a decision does not come out as expected (a benchmark, not a test:
no wall-clock threshold decides the status).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

if __package__ in (None, ""):  # `python bench/policy.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.load import percentile
from gateway.catalog import Catalog, ToolEntry, load_catalog
from gateway.chain.tracker import ChainTracker
from gateway.identity.principal import Principal
from gateway.policy import PolicyEngine, PolicyLoadError, RequestFacts
from gateway.registry.model import Agent, Entitlement, Lifecycle, WorkloadIdentity
from gateway.settings.monitoring import MonitoringSettings

REPO = Path(__file__).resolve().parent.parent
CATALOG_SIZES = (10, 100, 1_000, 10_000)
REGISTRY_SIZES = (10, 100, 1_000)
REGISTRY_CATALOG = 1_000
LISTING = 50
BULK_PER_SERVER = 50
# Wednesday 2026-03-04 10:00 UTC: inside the default working hours, so outcomes are stable.
NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC).timestamp()
FACTS = RequestFacts(now=NOW, era="2025-11-25", client="bench")
GROUPS = ("eng", "sre", "finance", "support", "data", "security", "sales", "legal", "contractors", "interns")
RISK_CYCLE = ("read", "read", "read", "read", "read", "read", "write", "write", "privileged", "destructive")
DATA_CLASSES = ("public", "internal", "pii", "financial", "source-code", "secrets")

# ---------------------------------------------------------------------------- catalog

STR = {"type": "string"}
INT = {"type": "integer"}
CORE: dict[str, list[tuple[str, str, list[str], dict[str, Any] | None]]] = {
    "files": [
        ("read_file", "read", ["internal"], {"type": "object", "properties": {"path": STR}, "required": ["path"]}),
        ("write_file", "write", ["internal"], {
            "type": "object", "required": ["path", "content"],
            "properties": {"path": STR, "content": STR, "mode": {"type": "string", "enum": ["overwrite", "append"]}},
        }),
        ("delete_file", "destructive", ["internal"], {
            "type": "object", "required": ["path"], "properties": {"path": STR, "recursive": {"type": "boolean"}},
        }),
    ],
    "payments": [
        ("get_balance", "read", ["financial"], {"type": "object", "properties": {"account": STR}}),
        ("pay", "write", ["financial"], {
            "type": "object", "required": ["amount", "currency", "payee"],
            "properties": {
                "amount": INT,
                "currency": {"type": "string", "enum": ["EUR", "USD", "GBP", "JPY"]},
                "payee": {"type": "object", "properties": {"name": STR, "region": STR}, "required": ["name", "region"]},
                "memo": STR,
                "tags": {"type": "array", "items": STR},
            },
        }),
        ("transfer", "privileged", ["financial"], {
            "type": "object", "required": ["amount", "from_account", "to_account"],
            "properties": {"amount": INT, "from_account": STR, "to_account": STR},
        }),
    ],
    "tickets": [
        ("search", "read", ["internal", "pii"], {
            "type": "object", "required": ["query"], "properties": {"query": STR, "limit": INT},
        }),
        ("create_ticket", "write", ["internal"], {
            "type": "object", "required": ["project", "title"],
            "properties": {"project": STR, "title": STR, "priority": {"type": "string", "enum": ["p0", "p1", "p2"]}},
        }),
        ("close_ticket", "write", ["internal"], {"type": "object", "required": ["id"], "properties": {"id": INT}}),
    ],
    "admin": [("rotate_keys", "privileged", ["secrets"], {
        "type": "object", "required": ["service"], "properties": {"service": STR},
    })],
}
CORE_TOOLS = sum(len(t) for t in CORE.values())
BULK_SCHEMA = {"type": "object", "properties": {"id": STR, "limit": INT, "dry_run": {"type": "boolean"}}}
BULK_VERBS = ("get", "list", "search", "describe", "update", "create", "sync", "export", "purge", "drop")


@dataclass
class CatalogSet:
    tools: int
    catalog: Catalog
    schemas: dict[str, dict[str, Any] | None]
    manifests: int


def write_catalog(directory: Path, size: int) -> CatalogSet:
    """`size` tools: the typed core, then bulk servers of 50 tools with a mix of risk tiers."""
    directory.mkdir(parents=True)
    schemas: dict[str, dict[str, Any] | None] = {}
    manifests = 0
    for sid, tools in CORE.items():
        lines = _manifest_head(sid)
        for name, risk, classes, schema in tools:
            lines.append(f"  - {{name: {name}, risk: {risk}, data_classes: [{', '.join(classes)}]}}")
            schemas[f"{sid}__{name}"] = schema
        (directory / f"{sid}.yaml").write_text("\n".join(lines) + "\n")
        manifests += 1
    remaining, server = size - CORE_TOOLS, 0
    while remaining > 0:
        sid = f"svc{server:03d}"
        count = min(BULK_PER_SERVER, remaining)
        lines = _manifest_head(sid)
        for i in range(count):
            name = f"{BULK_VERBS[i % len(BULK_VERBS)]}_{i:02d}"
            lines.append(f"  - {{name: {name}, risk: {RISK_CYCLE[i % len(RISK_CYCLE)]}, "
                         f"data_classes: [{DATA_CLASSES[(server + i) % len(DATA_CLASSES)]}]}}")
            schemas[f"{sid}__{name}"] = BULK_SCHEMA if i % 10 == 0 else None
        (directory / f"{sid}.yaml").write_text("\n".join(lines) + "\n")
        remaining -= count
        server += 1
        manifests += 1
    catalog = load_catalog(directory)
    assert len(catalog.tools) == size, (len(catalog.tools), size)
    return CatalogSet(size, catalog, schemas, manifests)


def _manifest_head(sid: str) -> list[str]:
    return [f"id: {sid}", f"owner: {sid}-team@example.com", f"description: benchmark server {sid}",
            'transport: {url: "http://127.0.0.1:9/mcp"}', "tools:"]


# ---------------------------------------------------------------------------- policies


def generated_policies() -> list[str]:
    """~95 realistic policies over the core servers, risk tiers, groups, labels, claims and input."""
    out: list[str] = []

    def add(pid: str, body: str, reason: str = "", step_up: bool = False) -> None:
        head = f'@id("{pid}")\n'
        if reason:
            head += f'@reason("{reason}")\n'
        if step_up:
            head += '@step_up("hold")\n'
        out.append(head + body.strip() + ";\n")

    # Per-group permits (20): read tiers within entitlement, and whole core servers by group.
    for g in GROUPS:
        add(f"permit-{g}-reads", f"""
permit (principal in AgentGroup::"{g}", action in Action::"risk:read", resource is Tool)
when {{ principal.lifecycle == "active" && principal.entitled_servers.contains(resource.server)
       && principal.hasTag("team") }}""", f"{g} may read within its entitlement")
    server_of = {"eng": "tickets", "sre": "admin", "finance": "payments", "support": "tickets", "data": "files",
                 "security": "admin", "sales": "tickets", "legal": "files", "contractors": "tickets",
                 "interns": "files"}
    for g, sid in server_of.items():
        add(f"permit-{g}-{sid}", f"""
permit (principal in AgentGroup::"{g}", action in Action::"server:{sid}", resource is Tool)
when {{ principal.entitled_servers.contains(resource.server) && resource.owner like "*@example.com" }}""")
    # Group forbids (6): destructive and privileged tiers kept away from some groups.
    for g in ("contractors", "interns", "sales", "legal", "support"):
        add(f"forbid-{g}-destructive", f"""
forbid (principal in AgentGroup::"{g}", action in Action::"risk:destructive", resource)
unless {{ principal.hasTag("oncall") && principal.getTag("oncall") == "true" }}""",
            "destructive tools are not available to this group")
    add("forbid-interns-privileged", """
forbid (principal in AgentGroup::"interns", action in Action::"risk:privileged", resource)""")
    # Input conditions on paths (16): canonicalized before evaluation, so `like` holds.
    for i, pat in enumerate(("/etc/*", "/root/*", "*/.ssh/*", "*.pem", "*id_rsa*", "/var/secrets/*", "*/.env",
                             "/proc/*")):
        add(f"forbid-read-path-{i}", f"""
forbid (principal, action == Action::"files__read_file", resource)
when {{ context.input.path like "{pat}" }}""", "that path is off limits")
    for i, pat in enumerate(("/etc/*", "/usr/*", "/bin/*", "*/.git/*", "/boot/*")):
        add(f"forbid-write-path-{i}", f"""
forbid (principal, action == Action::"files__write_file", resource)
when {{ context.input.path like "{pat}" }}""", "that path is off limits")
    for i, pat in enumerate(("/", "/data", "/home/*")):
        add(f"forbid-delete-path-{i}", f"""
forbid (principal, action == Action::"files__delete_file", resource)
when {{ context.input.path like "{pat}" }}""", "that path cannot be deleted")
    # Input conditions on payments (8).
    add("forbid-pay-limit", """
forbid (principal, action == Action::"payments__pay", resource)
when { context.input.amount > 100000 && !(principal in AgentGroup::"finance") }""", "over the payment limit")
    for region in ("kp", "ir", "sy", "cu"):
        add(f"forbid-pay-region-{region}", f"""
forbid (principal, action in [Action::"payments__pay"], resource)
when {{ context.input.payee.region == "{region}" }}""", "payments to this region are blocked")
    add("forbid-pay-giftcards", """
forbid (principal, action == Action::"payments__pay", resource)
when { context.input has memo && context.input.memo like "*gift card*" }""")
    add("forbid-pay-test-in-prod", """
forbid (principal, action == Action::"payments__pay", resource)
when { context.input has tags && context.input.tags.contains("test")
       && principal.hasTag("env") && principal.getTag("env") == "prod" }""")
    add("forbid-pay-jpy", """
forbid (principal, action == Action::"payments__pay", resource)
when { context.input.currency == "JPY" && !(principal in AgentGroup::"finance") }""")
    add("forbid-transfer-self", """
forbid (principal, action == Action::"payments__transfer", resource)
when { context.input.from_account == context.input.to_account }""")
    # Step-ups (14).
    step_ups = [
        ("pay-large", 'action == Action::"payments__pay"', "context.input.amount >= 1000"),
        ("write-shared-interns", 'action == Action::"files__write_file"',
         'principal in AgentGroup::"interns" && context.input.path like "/data/shared/*"'),
        ("ticket-p0", 'action == Action::"tickets__create_ticket"',
         'context.input has priority && context.input.priority == "p0"'),
        ("close-contractors", 'action == Action::"tickets__close_ticket"', 'principal in AgentGroup::"contractors"'),
        ("search-bulk", 'action == Action::"tickets__search"', "context.input has limit && context.input.limit > 500"),
        ("rotate-nonsec", 'action == Action::"admin__rotate_keys"', '!(principal in AgentGroup::"security")'),
        ("delete-recursive", 'action == Action::"files__delete_file"',
         "context.input has recursive && context.input.recursive"),
        ("overwrite", 'action == Action::"files__write_file"',
         'context.input has mode && context.input.mode == "overwrite"'),
    ]
    for name, scope, cond in step_ups:
        add(f"step-up-{name}", f"""
forbid (principal, {scope}, resource)
when {{ {cond} }}
unless {{ context.approval.granted }}""", "needs an approval", step_up=True)
    for g in ("contractors", "interns", "sales"):
        add(f"step-up-{g}-writes", f"""
forbid (principal in AgentGroup::"{g}", action in Action::"risk:write", resource)
unless {{ context.approval.granted }}""", "writes by this group need an approval", step_up=True)
    for env in ("prod", "staging", "sandbox"):
        add(f"step-up-{env}-server-admin", f"""
forbid (principal, action in Action::"server:admin", resource)
when {{ principal.hasTag("env") && principal.getTag("env") == "{env}" }}
unless {{ context.approval.granted }}""", step_up=True)
    # Forbids with `like` on tool names (8) and data classes (4).
    for i, pat in enumerate(("*drop*", "*truncate*", "*purge*", "*impersonate*", "*sudo*", "*export_all*",
                             "*debug*", "*raw_sql*")):
        add(f"forbid-name-{i}", f"""
forbid (principal, action in Action::"call_tool", resource is Tool)
when {{ resource.name like "{pat}" && !(principal in AgentGroup::"sre") }}""", "this tool is restricted")
    for cls, allowed in (("financial", "finance"), ("pii", "support"), ("secrets", "security"),
                         ("source-code", "eng")):
        add(f"forbid-class-{cls}", f"""
forbid (principal, action in Action::"call_tool", resource is Tool)
when {{ resource.data_classes.contains("{cls}") && !(principal in AgentGroup::"{allowed}")
       && !(principal in AgentGroup::"sre") }}""", "this data class is restricted")
    # Time, client, labels and claims (9).
    add("forbid-contractors-weekend", """
forbid (principal in AgentGroup::"contractors", action in Action::"call_tool", resource)
when { context.request.weekday >= 6 }""")
    add("forbid-interns-night", """
forbid (principal in AgentGroup::"interns", action in Action::"call_tool", resource)
unless { context.request.hour >= 7 && context.request.hour < 20 }""")
    add("forbid-test-clients-destructive", """
forbid (principal, action in Action::"risk:destructive", resource)
when { context.request.client like "*test*" }""")
    add("forbid-legacy-era-privileged", """
forbid (principal in AgentGroup::"contractors", action in Action::"risk:privileged", resource)
when { context.request.era == "2025-11-25" }""")
    add("forbid-sandbox-writes", """
forbid (principal, action in Action::"risk:write", resource is Tool)
when { principal.hasTag("env") && principal.getTag("env") == "sandbox" && resource.server != "tickets" }""")
    add("forbid-admin-server", """
forbid (principal, action in Action::"server:admin", resource)
unless { principal in AgentGroup::"sre" || principal in AgentGroup::"security" }""")
    add("forbid-oidc-without-env", """
forbid (principal, action in Action::"call_tool", resource)
when { principal.auth_method == "oidc" && !principal.claims.hasTag("env") }""")
    add("forbid-dev-claims-financial", """
forbid (principal, action in Action::"call_tool", resource is Tool)
when { principal.claims.hasTag("env") && principal.claims.getTag("env") == "dev"
       && resource.data_classes.contains("financial") }""")
    add("forbid-cost-center-none", """
forbid (principal, action in Action::"risk:privileged", resource)
when { principal.hasTag("cost_center") && principal.getTag("cost_center") == "none" }""")
    # More permits and scoped rules (9).
    for g in ("eng", "support", "data"):
        add(f"permit-{g}-writes", f"""
permit (principal in AgentGroup::"{g}", action in Action::"risk:write", resource is Tool)
when {{ principal.entitled_servers.contains(resource.server) && principal.lifecycle == "active" }}""")
    add("permit-data-bulk", """
permit (principal in AgentGroup::"data", action in Action::"call_tool", resource is Tool)
when { resource.server like "svc*" && principal.entitled_servers.contains(resource.server)
       && resource.data_classes.contains("public") }""")
    add("permit-ticket-search", """
permit (principal, action == Action::"tickets__search", resource)
when { principal.entitled_servers.contains("tickets") && context.input has limit && context.input.limit <= 100 }""")
    add("forbid-sales-exports", """
forbid (principal in AgentGroup::"sales", action in Action::"call_tool", resource is Tool)
when { resource.exposed_name like "svc*__export_*" }""")
    add("forbid-legal-outside-files", """
forbid (principal in AgentGroup::"legal", action in Action::"risk:write", resource is Tool)
unless { resource.server == "files" }""")
    add("forbid-foreign-issuer", """
forbid (principal, action in Action::"call_tool", resource)
when { principal.auth_method == "oidc" && principal.claims.hasTag("iss")
       && !(principal.claims.getTag("iss") like "https://idp.example.com*") }""")
    add("forbid-unowned-tools", """
forbid (principal, action in Action::"call_tool", resource is Tool)
when { resource.owner == "" }""", "this tool has no owner")
    return out


def write_policies(target: Path) -> int:
    """Copy the repo's cedar/ (schema + shipped policies), add the generated ones; return the total count."""
    shutil.copytree(REPO / "cedar", target, ignore=shutil.ignore_patterns("tests", "README.md"))
    generated = generated_policies()
    (target / "policies" / "90-bench-generated.cedar").write_text("\n".join(generated))
    return sum(p.read_text().count("@id(") for p in (target / "policies").glob("*.cedar"))


# ---------------------------------------------------------------------------- agents


def make_agents(count: int) -> list[Principal]:
    """Agents with 1-3 groups, labels, entitlements (core + bulk servers, some tools) and claims."""
    principals = []
    for i in range(count):
        groups = tuple(dict.fromkeys(GROUPS[(i * k + k) % len(GROUPS)] for k in range(1, 2 + i % 3)))
        servers = ("files", "payments", "tickets", *(f"svc{(i + k) % 20:03d}" for k in range(3)))
        if i % 4 == 0:
            servers = (*servers, "admin")
        agent = Agent(
            id=f"agent-{i:04d}", display_name=f"Agent {i}", owner=f"team{i % 17}@example.com",
            purpose="benchmark agent", state=Lifecycle.ACTIVE if i % 25 else Lifecycle.SUSPENDED,
            created_at=1.0, changed_at=1.0, expires_at=None,
            identities=(WorkloadIdentity("static", "narrowgate", f"agent-{i:04d}"),),
            groups=groups,
            labels=MappingProxyType({"team": f"team{i % 17}", "env": ("prod", "staging", "sandbox")[i % 3],
                                     "oncall": "true" if i % 7 == 0 else "false", "cost_center": f"cc{i % 9}"}),
            entitlement=Entitlement(tools=(f"svc{(i + 5) % 20:03d}__get_00", "admin__rotate_keys"), servers=servers),
        )
        claims = MappingProxyType({"sub": agent.id, "iss": "https://idp.example.com", "env": "prod"})
        principals.append(Principal(agent.id, "oidc" if i % 2 else "static-token", claims, agent))
    return principals


def fixed_principal() -> Principal:
    agent = Agent(
        id="bench-fixed", display_name="fixed", owner="platform@example.com", purpose="benchmark",
        state=Lifecycle.ACTIVE, created_at=1.0, changed_at=1.0, expires_at=None,
        identities=(WorkloadIdentity("static", "narrowgate", "bench-fixed"),),
        groups=("eng", "sre", "finance"),
        labels=MappingProxyType({"team": "platform", "env": "prod", "oncall": "true", "cost_center": "cc1"}),
        entitlement=Entitlement(tools=(), servers=("files", "payments", "tickets", "admin", "svc000", "svc001")),
    )
    return Principal(agent.id, "static-token", MappingProxyType({"sub": agent.id}), agent)


# The fixed mix of calls on the core tools and the outcome expected for the fixed agent.
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("files__read_file", {"path": "/data/public/report.txt"}, "allow"),
    ("files__read_file", {"path": "/data/public/../../etc/passwd"}, "deny"),
    ("files__write_file", {"path": "/data/shared/notes.md", "content": "hello", "mode": "append"}, "allow"),
    ("files__delete_file", {"path": "/data/tmp/x.txt", "recursive": False}, "step_up"),
    ("payments__get_balance", {"account": "acc-1"}, "allow"),
    ("payments__pay", {"amount": 120, "currency": "EUR", "payee": {"name": "ACME", "region": "de"},
                       "memo": "invoice 42", "tags": ["q3"]}, "allow"),
    ("payments__pay", {"amount": 5000, "currency": "USD", "payee": {"name": "ACME", "region": "us"}}, "step_up"),
    ("payments__pay", {"amount": 10, "currency": "EUR", "payee": {"name": "X", "region": "kp"}}, "deny"),
    ("payments__transfer", {"amount": 10, "from_account": "a", "to_account": "b"}, "step_up"),
    ("tickets__search", {"query": "login bug", "limit": 20}, "allow"),
    ("tickets__create_ticket", {"project": "web", "title": "Login fails", "priority": "p1"}, "allow"),
    ("tickets__close_ticket", {"id": 42}, "allow"),
    ("admin__rotate_keys", {"service": "db"}, "step_up"),
]
ALLOW_CASE = 5  # payments__pay, allowed: one evaluation with a typed nested input
HISTORY_CALLS = 64  # the chain window a running gateway carries per task (monitoring.max_history)
BENCH_TASK = "task-bench"


def gateway_facts(catalog: Catalog, principal: Principal) -> RequestFacts:
    """FACTS as a running gateway builds them for a busy caller: its task, and the chain signals after
    HISTORY_CALLS decided calls of the benchmark mix (gateway.chain's tracker, default settings)."""
    tracker = ChainTracker(MonitoringSettings(), clock=lambda: NOW)
    tools = [name for name, _, _ in CASES]

    async def history() -> dict[str, Any]:  # the tracker's methods are coroutines (one seam with Redis's)
        for i in range(HISTORY_CALLS):
            name, _, outcome = CASES[i % len(CASES)]
            await tracker.observe_call(principal.agent_id, BENCH_TASK, catalog.tools[name], outcome)
        return await tracker.context(principal.agent_id, BENCH_TASK)

    chain = asyncio.run(history())
    assert len(chain["tools"]) == HISTORY_CALLS, len(chain["tools"])
    task = {"id": BENCH_TASK, "purpose": "benchmark task", "tools": tools}
    return dataclasses.replace(FACTS, task=task, chain=chain)


# ---------------------------------------------------------------------------- measuring


@dataclass
class Stat:
    p50_us: float
    p99_us: float
    samples: int

    @classmethod
    def of(cls, samples_ns: list[int]) -> Stat:
        ordered = sorted(samples_ns)
        return cls(percentile(ordered, 50) * 1000, percentile(ordered, 99) * 1000, len(ordered))


def timed(fn: Callable[[int], object], calls: int, warmup: int) -> Stat:
    """fn(calls .. calls+warmup-1) untimed, then fn(0 .. calls-1), each call timed alone (CPU time)."""
    for i in range(calls, calls + warmup):
        fn(i)
    clock = time.thread_time_ns
    samples = [0] * calls
    for i in range(calls):
        start = clock()
        fn(i)
        samples[i] = clock() - start
    return Stat.of(samples)


@dataclass
class CatalogResult:
    tools: int
    servers: int
    build_s: float
    entity_bytes: int
    decide_mix: Stat
    decide_history: Stat  # the mix in a task with HISTORY_CALLS recorded calls (gateway_facts)
    decide_allow: Stat
    listing_tools: int
    visible_tools: Stat


@dataclass
class RegistryResult:
    agents: int
    warm: Stat
    cold: Stat


@dataclass
class Report:
    policies: int
    catalogs: list[CatalogResult] = field(default_factory=list)
    registries: list[RegistryResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def build_engine(cedar: Path, cs: CatalogSet) -> tuple[PolicyEngine, float]:
    start = time.perf_counter()
    engine = PolicyEngine(cedar, cs.catalog, tool_schemas=cs.schemas)
    elapsed = time.perf_counter() - start
    gc.collect()
    gc.freeze()  # as the gateway does at start: long-lived objects out of the collector's way
    return engine, elapsed


def check_outcomes(engine: PolicyEngine, catalog: Catalog, principal: Principal, report: Report) -> None:
    for facts in (FACTS, gateway_facts(catalog, principal)):
        for name, args, expected in CASES:
            got = engine.decide_tool(principal, catalog.tools[name], args, facts).outcome
            if got != expected:
                report.problems.append(f"{name} {orjson.dumps(args).decode()}: expected {expected}, got {got}"
                                       f"{' (with chain history)' if facts is not FACTS else ''}")


def bench_catalog(engine: PolicyEngine, cs: CatalogSet, build_s: float, calls: int, report: Report) -> CatalogResult:
    catalog, principal = cs.catalog, fixed_principal()
    check_outcomes(engine, catalog, principal, report)
    cases = [(catalog.tools[name], args) for name, args, _ in CASES]
    mix = timed(lambda i: engine.decide_tool(principal, *cases[i % len(cases)], FACTS), calls, calls // 10)
    busy = gateway_facts(catalog, principal)
    history = timed(lambda i: engine.decide_tool(principal, *cases[i % len(cases)], busy), calls, calls // 10)
    allow_tool, allow_args = cases[ALLOW_CASE]
    allow = timed(lambda i: engine.decide_tool(principal, allow_tool, allow_args, FACTS), calls, calls // 10)
    listing = _listing(catalog)
    visible = timed(lambda i: engine.visible_tools(principal, listing, FACTS), max(30, calls // 30), 10)
    entity_bytes = len(engine.tool_entities(principal, allow_tool, NOW).encode())
    return CatalogResult(cs.tools, len(catalog.servers), build_s, entity_bytes, mix, history, allow, len(listing),
                         visible)


def _listing(catalog: Catalog) -> list[ToolEntry]:
    """Up to 50 tools: the core ones first, then bulk tools spread over the catalog."""
    tools = list(catalog.tools.values())
    core = tools[:CORE_TOOLS]
    rest = tools[CORE_TOOLS:]
    step = max(1, len(rest) // max(1, LISTING - len(core)))
    return (core + rest[::step])[:LISTING]


def bench_registry(engine: PolicyEngine, catalog: Catalog, agents: Sequence[Principal], calls: int) -> RegistryResult:
    cases = [(catalog.tools[name], args) for name, args, _ in CASES]
    n = len(agents)

    def call(principal: Principal, i: int) -> None:
        engine.decide_tool(principal, *cases[(i // n) % len(cases)], FACTS)

    for p in agents:  # fill the per-agent entity cache
        call(p, 0)
    warm = timed(lambda i: call(agents[i % n], i), calls, calls // 10)
    # Cold: each call carries a changed Agent record (as after a registry update), prepared ahead,
    # so the cache misses and the agent's entities are rendered again.
    fresh: list[Principal] = []
    for i in range(calls + calls // 10):
        p = agents[i % n]
        assert p.agent is not None
        fresh.append(dataclasses.replace(p, agent=dataclasses.replace(p.agent, changed_at=float(i + 2))))
    cold = timed(lambda i: call(fresh[i], i), calls, calls // 10)
    return RegistryResult(n, warm, cold)


def run(calls: int, tmp: Path, sizes: Sequence[int] = CATALOG_SIZES) -> Report:
    cedar = tmp / "cedar"
    report = Report(policies=write_policies(cedar))
    registry_catalog: tuple[PolicyEngine, Catalog] | None = None
    for size in sizes:
        cs = write_catalog(tmp / f"catalog-{size}", size)
        try:
            engine, build_s = build_engine(cedar, cs)
        except PolicyLoadError as exc:
            report.problems.extend(exc.problems)
            return report
        result = bench_catalog(engine, cs, build_s, calls, report)
        report.catalogs.append(result)
        print(f"  catalog {size:>6} tools: built in {build_s:.2f}s, decide p50 {result.decide_mix.p50_us:.0f}us",
              file=sys.stderr, flush=True)
        if size == REGISTRY_CATALOG:
            registry_catalog = (engine, cs.catalog)
        else:
            del engine
            gc.unfreeze()
    if registry_catalog is not None:
        engine, catalog = registry_catalog
        for count in REGISTRY_SIZES:
            result = bench_registry(engine, catalog, make_agents(count), calls)
            report.registries.append(result)
            print(f"  registry {count:>5} agents: warm p50 {result.warm.p50_us:.0f}us cold p50 "
                  f"{result.cold.p50_us:.0f}us", file=sys.stderr, flush=True)
    return report


# ---------------------------------------------------------------------------- output


def format_report(report: Report) -> str:
    lines = [f"Cedar decisions, {report.policies} policies (p50 / p99 CPU microseconds, in process; "
             f"'+ history': in a task with {HISTORY_CALLS} recorded calls)", ""]
    head = (f"{'tools':>6} {'servers':>7} {'build s':>7}  {'decide mix':>15}  {'mix + history':>15}  "
            f"{'decide allow':>15}  {'visible_tools':>17}  {'entity bytes':>12}")
    lines += [head, "-" * len(head)]
    for c in report.catalogs:
        lines.append(
            f"{c.tools:>6} {c.servers:>7} {c.build_s:>7.2f}  {_pair(c.decide_mix):>15}  "
            f"{_pair(c.decide_history):>15}  {_pair(c.decide_allow):>15}  "
            f"{_pair(c.visible_tools):>12} ({c.listing_tools:>2})  {c.entity_bytes:>12}"
        )
    if report.registries:
        lines += ["", f"registry sweep on the {REGISTRY_CATALOG:,}-tool catalog, decide mix, cycling agents"]
        head = f"{'agents':>6}  {'warm cache':>15}  {'cold (re-render)':>16}"
        lines += [head, "-" * len(head)]
        for r in report.registries:
            lines.append(f"{r.agents:>6}  {_pair(r.warm):>15}  {_pair(r.cold):>16}")
    for problem in report.problems:
        lines.append(f"PROBLEM: {problem}")
    return "\n".join(lines)


def _pair(s: Stat) -> str:
    return f"{s.p50_us:.0f} / {s.p99_us:.0f}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_json(path: Path, report: Report, calls: int) -> None:
    from importlib.metadata import version

    meta = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "cedarpy": version("cedarpy"),
        "calls_per_measure": calls,
        "policies": report.policies,
        "cases": [{"tool": t, "arguments": a, "expected": e} for t, a, e in CASES],
    }
    body = {"meta": meta, "catalogs": [dataclasses.asdict(c) for c in report.catalogs],
            "registries": [dataclasses.asdict(r) for r in report.registries], "problems": report.problems}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Narrowgate policy decision benchmark (in process)")
    parser.add_argument("--calls", type=int, default=3000, help="timed calls per measurement (default 3000)")
    parser.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--tools", default=",".join(map(str, CATALOG_SIZES)),
                        help="catalog sizes, comma-separated (default %(default)s; the registry sweep needs "
                             f"{REGISTRY_CATALOG})")
    args = parser.parse_args(argv)
    if not 10 <= args.calls <= 200_000:
        parser.error("--calls must be between 10 and 200000")
    try:
        sizes = [int(size) for size in args.tools.split(",")]
    except ValueError:
        parser.error("--tools must be comma-separated numbers")
    if not all(CORE_TOOLS <= size <= 50_000 for size in sizes):
        parser.error(f"--tools sizes must be between {CORE_TOOLS} and 50000")
    with tempfile.TemporaryDirectory(prefix="narrowgate-bench-policy-") as tmp:
        report = run(args.calls, Path(tmp), sizes)
    print(format_report(report))
    if args.json:
        write_json(args.json, report, args.calls)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
