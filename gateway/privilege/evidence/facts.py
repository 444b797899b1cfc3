"""The facts every framework maps to its controls: each one small function of the running deployment.

A fact names the command or query that produced it, so a reader can reproduce the claim. Frameworks
never compute anything; they only say which facts speak to which control (gateway/privilege/evidence/).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from gateway.catalog.model import HttpTransport
from gateway.policy.testing import TESTS_SUBDIR, run_policy_tests
from gateway.privilege.evidence.model import INFO, OK, PROBLEM, UNAVAILABLE, Fact
from gateway.privilege.evidence.model import iso_time as _iso
from gateway.privilege.evidence.sources import EvidenceRun
from gateway.privilege.rightsize import NoRecordedData, rightsize_fleet
from gateway.settings.network import is_loopback_host

FactFunction = Callable[[EvidenceRun], Awaitable[Fact]]
WORKLOAD_KINDS = frozenset({"oidc", "spiffe"})
SHOWN = 10  # ids named in a statement; the full lists are in the fact's data


def _names(ids: Iterable[str]) -> str:
    listed = list(ids)
    more = f" and {len(listed) - SHOWN} more" if len(listed) > SHOWN else ""
    return ", ".join(listed[:SHOWN]) + more


# agents


async def agent_accountability(run: EvidenceRun) -> Fact:
    agents = run.live_agents()
    lacking = {
        "owner": [a.id for a in agents if not a.owner.strip()],
        "purpose": [a.id for a in agents if not a.purpose.strip()],
        "expiry": [a.id for a in agents if a.expires_at is None],
    }
    missing = [f"{what} ({_names(ids)})" for what, ids in lacking.items() if ids]
    complete = len(agents) - len({i for ids in lacking.values() for i in ids})
    statement = (f"{complete} of {len(agents)} live agent(s) have an owner, a purpose and an expiry"
                 + (f"; lacking {'; '.join(missing)}" if missing else ""))
    return Fact("agent_accountability", "Agents with an owner, purpose and expiry", PROBLEM if missing else OK,
                statement, "narrowgate agents list (GET /admin/v1/agents): owner, purpose, expires_at",
                {"live_agents": len(agents), "complete": complete, **{f"lacking_{k}": v for k, v in lacking.items()}})


async def agent_authentication(run: EvidenceRun) -> Fact:
    settings = run.sources.settings
    configured = {token.agent for token in settings.auth.static_tokens}
    agents = run.live_agents()
    static = [a.id for a in agents if a.id in configured or any(i.kind == "static" for i in a.identities)]
    workload = [a.id for a in agents if a.id not in static and any(i.kind in WORKLOAD_KINDS for i in a.identities)]
    problems = []
    if configured:
        problems.append(f"{len(configured)} static agent token(s) in auth.static_tokens ({_names(sorted(configured))})")
    if static:
        problems.append(f"agents authenticated by a static token: {_names(static)}")
    if settings.auth.open_loopback:
        problems.append("auth.open_loopback lets unauthenticated local clients in")
    statement = (f"{len(workload)} of {len(agents)} live agent(s) authenticate only by workload identity "
                 "(OIDC or SPIFFE)" + (f"; {'; '.join(problems)}" if problems else ""))
    return Fact("agent_authentication", "Agents authenticated only by workload identity", PROBLEM if problems else OK,
                statement, "config auth.static_tokens and auth.open_loopback; GET /admin/v1/agents: identities[].kind",
                {"workload_only": workload, "static": static, "static_tokens_configured": len(configured),
                 "open_loopback": settings.auth.open_loopback})


async def task_grants(run: EvidenceRun) -> Fact:
    agents = run.live_agents()
    untasked = [a.id for a in agents if not a.entitlement.require_task]
    statement = (f"{len(agents) - len(untasked)} of {len(agents)} live agent(s) call only under a task grant "
                 "(purpose, a few tools, a deadline)")
    if untasked:
        statement += (f"; without one, {_names(untasked)} may call the whole entitlement "
                      "(entitlement.require_task: false)")
    return Fact("task_grants", "Calls only under a task grant", PROBLEM if untasked else OK, statement,
                "GET /admin/v1/agents: entitlement.require_task", {"without_task": untasked})


async def identity_bindings(run: EvidenceRun) -> Fact:
    owners: dict[tuple[str, str, str], list[str]] = {}
    pinned = unpinned = 0
    for agent in run.live_agents():
        for identity in agent.identities:
            owners.setdefault((identity.kind, identity.issuer, identity.subject), []).append(agent.id)
            if identity.kind == "oidc":
                pinned, unpinned = (pinned + 1, unpinned) if identity.claims else (pinned, unpinned + 1)
    shared = {f"{k[0]}:{k[2]}": ids for k, ids in owners.items() if len(ids) > 1}
    statement = (f"{len(owners)} identity binding(s), each bound to exactly one agent; "
                 f"{pinned} OIDC binding(s) pin further claims, {unpinned} do not")
    if shared:
        statement = f"identities bound to more than one agent: {_names(shared)}"
    return Fact("identity_bindings", "One identity, one agent", PROBLEM if shared else OK, statement,
                "GET /admin/v1/agents: identities[] (kind, issuer, subject, claims)",
                {"bindings": len(owners), "shared": shared, "oidc_pinned": pinned, "oidc_unpinned": unpinned})


# credentials and configuration


async def token_lifetimes(run: EvidenceRun) -> Fact:
    settings = run.sources.settings
    tokens = settings.tokens
    static = len(settings.auth.static_tokens)
    statement = (f"task tokens live at most {tokens.task_ttl_s:.0f} s (never past their task's deadline), "
                 f"per-call upstream tokens at most {tokens.upstream_ttl_s:.0f} s")
    if static:
        statement += f"; {static} static agent token(s) never expire"
    return Fact("token_lifetimes", "Longest token lifetimes", PROBLEM if static else OK, statement,
                "config tokens.task_ttl_s, tokens.upstream_ttl_s, auth.static_tokens",
                {"task_token_s": tokens.task_ttl_s, "upstream_token_s": tokens.upstream_ttl_s,
                 "static_agent_tokens": static, "longest_s": None if static else tokens.task_ttl_s})


async def upstream_credentials(run: EvidenceRun) -> Fact:
    servers = run.sources.catalog().servers.values()
    secret = sorted(s.id for s in servers if s.credentials.mode == "secret")
    statement = (f"{len(servers) - len(secret)} of {len(servers)} upstream(s) get a per-call gateway token "
                 "(one tool, one upstream, single use)")
    if secret:
        statement += f"; {_names(secret)} hold a static per-server secret (credentials.mode: secret)"
    return Fact("upstream_credentials", "Upstreams on per-call tokens", PROBLEM if secret else OK, statement,
                "tool_catalog/*.yaml credentials.mode (GET /admin/v1/catalog/tools)", {"static_secret": secret})


async def config_secrets(run: EvidenceRun) -> Fact:
    settings = run.sources.settings
    inline = [f"auth.static_tokens[{t.agent}]" for t in settings.auth.static_tokens if not t.token_env and t.token]
    inline += [f"admin.tokens[{t.name}]" for t in settings.admin.tokens if not t.token_env and t.token]
    statement = ("no token is written into the config file (each comes from token_env or is stored as its digest)"
                 if not inline else f"tokens written into the config file: {_names(inline)}")
    return Fact("config_secrets", "No secrets in the config file", PROBLEM if inline else OK, statement,
                "config auth.static_tokens[].token, admin.tokens[].token (token_env or token_sha256 instead)",
                {"inline": inline})


async def transport_security(run: EvidenceRun) -> Fact:
    settings = run.sources.settings
    plain = []
    if urlsplit(settings.base_url).scheme != "https" and not settings.is_loopback_bind():
        plain.append(f"the gateway itself ({origin(settings.base_url)})")
    for server in run.sources.catalog().servers.values():
        transport = server.transport
        if isinstance(transport, HttpTransport):
            url = urlsplit(transport.url)
            if url.scheme != "https" and not is_loopback_host(url.hostname or ""):
                plain.append(f"{server.id} ({origin(transport.url)})")
    statement = ("every connection that leaves the host uses TLS (loopback and stdio stay on the host)" if not plain
                 else f"plain HTTP across the network: {_names(plain)}")
    return Fact("transport_security", "Communication secured regardless of network location",
                PROBLEM if plain else OK, statement, "config listen/public_url; tool_catalog/*.yaml transport.url",
                {"plain_http": plain})


def origin(url: str) -> str:
    """Scheme, host and port only: a URL's user info, path and query may carry a secret (`${ENV}` expanded)."""
    parts = urlsplit(url)
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    host = parts.hostname or ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}" + (f":{port}" if port.isdigit() else "")


async def rate_limits(run: EvidenceRun) -> Fact:
    monitoring = run.sources.settings.monitoring
    limits = {"per_agent": monitoring.per_agent, "per_task": monitoring.per_task, "per_tool": monitoring.per_tool}
    shown = {k: None if v is None else {"calls": v.calls, "per_s": v.per_s} for k, v in limits.items()}
    on = [f"{k} {v.calls} calls / {v.per_s:.0f} s" for k, v in limits.items() if v is not None]
    statement = ("rate limits: " + ", ".join(on)) if monitoring.per_agent is not None else \
        "no per-agent rate limit (monitoring.per_agent: null): one agent can call as fast as upstreams answer"
    return Fact("rate_limits", "Rate limits per agent", OK if monitoring.per_agent is not None else PROBLEM, statement,
                "config monitoring.per_agent, per_task, per_tool", shown)


# policy and catalog


async def policy_in_force(run: EvidenceRun) -> Fact:
    status = run.sources.policy.status()
    last = status["last_reload"]
    ok = bool(last["ok"])
    statement = (f"{status['policy_count']} Cedar policy file(s), version {status['version']}, decide every call "
                 f"against {status['catalog_tools']} catalogued tool(s); anything not a clean allow is denied")
    if not ok:
        statement = f"the last policy reload failed and the previous set is serving: {'; '.join(last['problems'])}"
    return Fact("policy_in_force", "Policy decides every call", OK if ok else PROBLEM, statement,
                "narrowgate policy validate; GET /admin/v1/policies",
                {"version": status["version"], "policy_files": status["policy_count"], "last_reload_ok": ok})


async def policy_tests(run: EvidenceRun) -> Fact:
    directory = run.sources.policy.policies_dir
    results = await asyncio.to_thread(run_policy_tests, directory, run.sources.catalog())
    failed = [f"{r.name}" for r in results if not r.ok]
    if not results:
        status, statement = PROBLEM, f"no policy test cases in {directory / TESTS_SUBDIR}"
    elif failed:
        status, statement = PROBLEM, f"{len(failed)} of {len(results)} policy test case(s) fail: {_names(failed)}"
    else:
        status, statement = OK, f"all {len(results)} policy test case(s) pass against the live catalog"
    return Fact("policy_tests", "Policy tests passing", status, statement,
                f"narrowgate policy test (cases in {directory / TESTS_SUBDIR})",
                {"cases": len(results), "failed": failed})


async def tool_reviews(run: EvidenceRun) -> Fact:
    reviews = run.sources.reviews.list()
    by_status: dict[str, int] = {}
    for review in reviews:
        by_status[review.status] = by_status.get(review.status, 0) + 1
    by_person = sum(1 for r in reviews if r.reviewed_by)
    pinned = sum(1 for s in run.sources.catalog().servers.values() for t in s.tools.values() if t.pin)
    statement = (f"{len(reviews)} upstream tool definition(s) tracked: {by_status.get('approved', 0)} approved "
                 f"({by_person} decided by a person, {pinned} pinned in a manifest), "
                 f"{by_status.get('quarantined', 0)} quarantined (not listed, not callable), "
                 f"{by_status.get('rejected', 0)} rejected; new and changed definitions wait for review")
    return Fact("tool_reviews", "Tools reviewed and quarantined", OK, statement,
                "narrowgate catalog review (GET /admin/v1/catalog/tools)",
                {"tracked": len(reviews), **by_status, "decided_by_person": by_person, "pinned": pinned})


async def catalog_inventory(run: EvidenceRun) -> Fact:
    catalog = run.sources.catalog()
    tiers: dict[str, int] = {}
    for tool in catalog.tools.values():
        tiers[str(tool.risk)] = tiers.get(str(tool.risk), 0) + 1
    ownerless = sorted(t.exposed_name for t in catalog.tools.values() if not t.owner.strip())
    counts = _counts(tiers)
    statement = (f"{len(catalog.servers)} upstream server(s) and {len(catalog.tools)} tool(s) are catalogued with a "
                 f"risk tier and data classes" + (f" ({counts})" if counts else ""))
    statement += f"; tools without an owner: {_names(ownerless)}" if ownerless else ", each with an owner"
    return Fact("catalog_inventory", "Every tool a catalogued resource", PROBLEM if ownerless else OK, statement,
                "narrowgate catalog validate; tool_catalog/*.yaml", {"servers": len(catalog.servers),
                                                                     "tools": len(catalog.tools), "by_risk": tiers,
                                                                     "without_owner": ownerless})


# the audit log and the period


async def audit_chain(run: EvidenceRun) -> Fact:
    verifier = (await run.audit()).verifier
    data = {"records": verifier.count, "head_seq": verifier.last_seq, "head_hash": verifier.last_hash,
            "problems": [str(p) for p in verifier.problems[:SHOWN]]}
    if verifier.problems:
        return Fact("audit_chain", "Audit chain verified", PROBLEM,
                    f"{len(verifier.problems)} problem(s) in the hash chain of {verifier.count} record(s), first: "
                    f"{verifier.problems[0]}", "narrowgate audit verify", data)
    if not verifier.count:  # nothing verified is no evidence that the log is whole
        return Fact("audit_chain", "Audit chain verified", UNAVAILABLE, "the audit log holds no record to verify",
                    "narrowgate audit verify", data)
    return Fact("audit_chain", "Audit chain verified", OK,
                f"{verifier.count} record(s) verified, head seq {verifier.last_seq} hash {verifier.last_hash}",
                "narrowgate audit verify", data)


async def decisions(run: EvidenceRun) -> Fact:
    tally = (await run.audit()).decisions
    total = sum(tally.values())
    parts = _counts(tally)
    return Fact("decisions", "Decisions in the period", INFO,
                f"{total} recorded decision(s) since {_iso(run.since)}" + (f": {parts}" if parts else ""),
                f"narrowgate audit search --kind decision --since {_iso(run.since)}", dict(tally))


async def detections(run: EvidenceRun) -> Fact:
    tally = await run.audit()
    total = sum(tally.detections.values())
    parts = _counts(tally.detections)
    return Fact("detections", "Detections in the period", INFO,
                f"{total} chain-monitoring detection(s) since {_iso(run.since)}" + (f": {parts}" if parts else ""),
                f"narrowgate audit search --kind monitoring --since {_iso(run.since)}",
                {"by_detector": dict(tally.detections), "by_severity": dict(tally.severities)})


async def kill_switch(run: EvidenceRun) -> Fact:
    severity = run.sources.settings.monitoring.kill_switch_severity
    activations = (await run.audit()).kill_switch
    statement = (f"{len(activations)} kill-switch activation(s) since {_iso(run.since)}"
                 + (f" ({_names(sorted({str(a['agent_id']) for a in activations}))})" if activations else ""))
    data = {"severity": severity, "activations": activations}
    if severity == "off":
        return Fact("kill_switch", "Kill switch armed", PROBLEM,
                    f"the kill switch is off (monitoring.kill_switch_severity: off); {statement}",
                    "config monitoring.kill_switch_severity; narrowgate audit search --kind agent", data)
    return Fact("kill_switch", "Kill switch armed", OK,
                f"a {severity} detection suspends the agent at once; {statement}",
                "config monitoring.kill_switch_severity; narrowgate audit search --kind agent", data)


async def approvals(run: EvidenceRun) -> Fact:
    tally = (await run.audit()).approvals
    forbid_self = run.sources.settings.approvals.forbid_self_approval
    parts = _counts(tally) or "none"
    statement = f"approval records since {_iso(run.since)}: {parts}; each approval is bound to one exact call"
    if not forbid_self:
        statement += "; an agent's owner may approve its own agent's calls (approvals.forbid_self_approval: false)"
    return Fact("approvals", "People approve privileged calls", OK if forbid_self else PROBLEM, statement,
                f"config approvals.forbid_self_approval; narrowgate audit search --kind approval --since "
                f"{_iso(run.since)}", {"by_action": dict(tally), "forbid_self_approval": forbid_self})


async def unused_entitlements(run: EvidenceRun) -> Fact:
    window_s = run.now - run.since
    source = f"narrowgate rightsize --since {window_s:.0f} (GET /admin/v1/rightsize)"
    rightsize = run.sources.rightsize
    if rightsize is None:
        return Fact("unused_entitlements", "Unused entitlements", UNAVAILABLE,
                    "right-sizing not available: unused entitlements could not be measured", source)
    try:
        fleet = await rightsize_fleet(rightsize, window_s, now=run.now, proposals=False)  # the figures only
    except NoRecordedData as exc:  # never reported as 0% unused: nothing was measured
        return Fact("unused_entitlements", "Unused entitlements", UNAVAILABLE, str(exc), source)
    unused = {a.agent_id: [t.tool for t in a.unused] for a in fleet.agents if a.unused}
    data = {"granted": fleet.granted, "unused": fleet.unused, "unused_share": fleet.unused_share,
            "unused_by_agent": unused}
    if not unused:
        return Fact("unused_entitlements", "Unused entitlements", OK,
                    f"every one of {fleet.granted} granted tool(s) was used since {_iso(run.since)}", source, data)
    share = f" ({fleet.unused_share:.0%})" if fleet.unused_share is not None else ""
    named = "; ".join(f"{agent}: {_names(tools)}" for agent, tools in list(unused.items())[:SHOWN])
    return Fact("unused_entitlements", "Unused entitlements", PROBLEM,
                f"{fleet.unused} of {fleet.granted} granted tool(s){share} went unused since {_iso(run.since)}: "
                f"{named}", source, data)


FACTS: dict[str, FactFunction] = {function.__name__: function for function in (
    agent_accountability, agent_authentication, task_grants, identity_bindings, token_lifetimes,
    upstream_credentials, config_secrets, transport_security, rate_limits, policy_in_force, policy_tests,
    tool_reviews, catalog_inventory, audit_chain, decisions, detections, kill_switch, approvals,
    unused_entitlements,
)}


async def compute(run: EvidenceRun, ids: Iterable[str]) -> dict[str, Fact]:
    """The named facts, each computed once."""
    wanted = list(dict.fromkeys(ids))
    return dict(zip(wanted, [await FACTS[i](run) for i in wanted], strict=True))


def _counts(tally: Mapping[str, int]) -> str:
    """`3 allow, 1 deny`: a tally in a statement, by name."""
    return ", ".join(f"{n} {name}" for name, n in sorted(tally.items()))
