"""Abuse and exhaustion limits (issue 18 items 4, 5, 9, 11; issue 13 item 13), against real gateway processes.

* A sensitive read follows its agent into a new task: read in task A, send from task B, and the
  shipped egress policy still asks for an approval and the detector still fires.
* Rate limits count every request that reaches an upstream, not only tools/call.
* 2025-11-25 sessions are capped per agent and in total, and idle ones expire by last use.
* The console's failed sign-in throttle believes X-Forwarded-For only from configured proxies.
* Low-severity detections (`novel_sequence`) are audited and counted, but not logged as warnings or
  sent to the webhook.

Everything here is a real `narrowgate serve` subprocess, real HTTP, the real `mcp` SDK client, the
behaviour upstream and a real OIDC issuer; nothing of the gateway is mocked.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import PromptReference

from gateway.config import ConfigError, settings_from_mapping
from gateway.identity.principal import Principal
from gateway.transport.sessions import SessionLimitReached, SessionRegistry
from tests.support.clients import ERAS, mcp_client
from tests.support.console import Browser
from tests.support.identity_provider import TestIdentityProvider
from tests.support.processes import ADMIN_TOKEN, Gateway, behaviour_manifest
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_monitoring_e2e import (
    EGRESS_REASON,
    always_working_hours,
    detection_metric,
    detections_of,
    echo,
    leaves,
    manifests,
    monitoring_records,
    needs_approval,
    wait_for,
)

RATE_LIMITED = -32029
ACCEPT = "application/json, text/event-stream"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
TASK_AGENT, TASK_SUBJECT = "switcher", "repo:acme/switcher:ref:refs/heads/main"


def token_for(agent_id: str) -> str:
    return f"token-{agent_id}"


# --- 18.4: sensitive reads follow the agent across its tasks ---------------------------------------


@dataclass
class ChainDeployment:
    gw: Gateway
    receiver: WebhookReceiver  # the detection webhook's target


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int, port: int,
          idp: TestIdentityProvider) -> Iterator[ChainDeployment]:
    """vault (echo reads secrets), mail (echo is egress), notes; an OIDC agent that must work in tasks."""
    receiver = WebhookReceiver().start()
    gw = Gateway(tmp_path_factory.mktemp("abuse-chain"), manifests(behaviour_http),
                 tokens={"regular": token_for("regular")}, port=port, extra_config={
                     "policy": always_working_hours(),
                     "identity": {"audience": f"http://127.0.0.1:{port}", "clock_skew_s": 5,
                                  "oidc_issuers": [{"issuer": idp.issuer, "jwks_uri": idp.jwks_uri}]},
                     "monitoring": {"kill_switch_severity": "off", "per_agent": None, "per_task": None,
                                    "webhook_url": receiver.url},
                 })
    try:
        gw.start()
        body = {"id": TASK_AGENT, "owner": "tests@example.com", "purpose": "switches tasks", "state": "active",
                "identities": [{"kind": "oidc", "issuer": idp.issuer, "subject": TASK_SUBJECT, "claims": {}}],
                "entitlement": {"servers": ["vault", "mail", "notes"], "require_task": True}}
        answer = httpx2.post(f"{gw.base}/admin/v1/agents", json=body,
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
        assert answer.status_code == 201, answer.text
        yield ChainDeployment(gw, receiver)
    finally:
        gw.stop()
        receiver.stop()


def task_token(gw: Gateway, idp: TestIdentityProvider, scope: str) -> tuple[str, str]:
    """A new task for the OIDC agent (RFC 8693 at /oauth/token): its task token and id."""
    answer = httpx2.post(f"{gw.base}/oauth/token", timeout=10, data={
        "grant_type": EXCHANGE, "subject_token": idp.mint(sub=TASK_SUBJECT), "subject_token_type": JWT_TYPE,
        "scope": scope, "purpose": "abuse limits"})
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"], answer.json()["task_id"]


@pytest.mark.parametrize("mode", ERAS)
async def test_a_new_task_does_not_shed_a_sensitive_read(chain: ChainDeployment, idp: TestIdentityProvider,
                                                         mode: str) -> None:
    chain_gw = chain.gw
    reader, _ = task_token(chain_gw, idp, "vault__echo")
    async with mcp_client(chain_gw.url, reader, mode) as client:
        await echo(client, "vault__echo", f"the launch codes ({mode})")
    sender, sender_task = task_token(chain_gw, idp, "mail__echo")
    async with mcp_client(chain_gw.url, sender, mode) as client:
        # Task B has read nothing itself; the agent has, so the shipped policy holds the egress.
        await needs_approval(client, "mail__echo", {"text": "the launch codes"}, EGRESS_REASON)
    found = wait_for("the detection in task B", lambda: [r for r in monitoring_records(chain_gw)
                                                          if r["action"] == "sensitive_then_egress"
                                                          and r["task_id"] == sender_task])
    assert len(found) == 1, found
    assert found[0]["detail"]["severity"] == "high"
    assert "outside this task" in found[0]["detail"]["message"]


# --- 13.13: low-severity detections are quiet by default -------------------------------------------


async def test_low_severity_detections_are_audited_but_not_alerted(chain: ChainDeployment) -> None:
    chain_gw, receiver = chain.gw, chain.receiver
    before = detection_metric(chain_gw, "novel_sequence", "low")
    async with mcp_client(chain_gw.url, token_for("regular"), "legacy") as client:
        for n in range(10):  # ten calls of one tool: history enough for novelty to count
            await echo(client, "notes__echo", f"note {n}")
        await echo(client, "vault__echo", "a secret")  # notes -> vault: a pair never seen (low)
        await needs_approval(client, "mail__echo", {"text": "x"}, EGRESS_REASON)  # sensitive_then_egress (high)
    [novel] = wait_for("the novel_sequence record", lambda: [r for r in detections_of(chain_gw, "regular",
                                                                                       "novel_sequence")
                                                               if r["tool"] == "vault__echo"])
    assert novel["detail"]["severity"] == "low"
    assert detection_metric(chain_gw, "novel_sequence", "low") == before + 2  # notes -> vault, vault -> mail
    # The high one is alerted: a WARNING line and a webhook; the low one neither.
    receiver.wait_for(lambda body: body["agent_id"] == "regular" and body["detector"] == "sensitive_then_egress")
    sent = [json.loads(body) for _, body in receiver.posts()]
    sent = [body for body in sent if body["agent_id"] == "regular"]
    assert [body["detector"] for body in sent] == ["sensitive_then_egress"], sent
    log = chain_gw.log_text()
    assert "WARNING narrowgate.monitoring: detection sensitive_then_egress (high): agent regular" in log
    assert "DEBUG narrowgate.monitoring: detection novel_sequence (low): agent regular" in log
    assert "WARNING narrowgate.monitoring: detection novel_sequence" not in log
    actions = sorted(r["action"] for r in monitoring_records(chain_gw) if r["agent_id"] == "regular")
    assert actions == ["novel_sequence", "novel_sequence", "sensitive_then_egress"]  # vault -> mail is new too


# --- 18.5: every request that reaches an upstream is rate limited -----------------------------------


@pytest.fixture(scope="module")
def limits_gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Gateway]:
    agents = ("limited-legacy", "limited-2026-07-28", "reader-legacy", "reader-2026-07-28")
    gw = Gateway(tmp_path_factory.mktemp("abuse-rates"),
                 [behaviour_manifest("behav", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=10)],
                 tokens={a: token_for(a) for a in agents},
                 extra_config={"monitoring": {"kill_switch_severity": "off", "per_agent": {"calls": 3, "per_s": 60},
                                              "per_task": None}}).start()
    yield gw
    gw.stop()


def assert_rate_limited(error: MCPError) -> None:
    assert error.error.code == RATE_LIMITED, error.error
    assert "Rate limited: too many" in error.error.message
    data = error.error.data
    assert isinstance(data, dict) and data["scope"] == "agent" and 1 <= data["retryAfterSeconds"] <= 60, data


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # resources/subscribe
@pytest.mark.parametrize("mode", ERAS)
async def test_an_agent_at_its_limit_is_refused_on_every_upstream_method(limits_gw: Gateway, mode: str) -> None:
    async with mcp_client(limits_gw.url, token_for(f"limited-{mode}"), mode) as client:
        for n in range(3):
            await echo(client, "behav__echo", f"call {n}")
        attempts: dict[str, Any] = {
            "resources/read": lambda: client.read_resource("behaviour://status", cache_mode="bypass"),
            "prompts/get": lambda: client.get_prompt("behav__greet", {"name": "Ada"}),
            "completion/complete": lambda: client.complete(PromptReference(type="ref/prompt", name="behav__greet"),
                                                           {"name": "value", "value": "A"}),
        }
        if mode == "legacy":  # per-resource subscriptions exist only in 2025-11-25
            attempts["resources/subscribe"] = lambda: client.subscribe_resource("behaviour://status")
        for method, attempt in attempts.items():
            with pytest.raises(MCPError) as refused:
                await attempt()
            assert_rate_limited(refused.value), method
        # Lists never reach an upstream: they are still answered.
        assert [p.name for p in (await client.list_prompts()).prompts] == ["behav__greet"]


@pytest.mark.parametrize("mode", ERAS)
async def test_resource_reads_and_prompts_count_against_the_agents_limit(limits_gw: Gateway, mode: str) -> None:
    async with mcp_client(limits_gw.url, token_for(f"reader-{mode}"), mode) as client:
        for _ in range(2):
            contents = await client.read_resource("behaviour://status", cache_mode="bypass")
            assert contents.contents[0].text == "ok"
        prompt = await client.get_prompt("behav__greet", {"name": "Ada"})
        assert "Ada" in prompt.messages[0].content.text
        with pytest.raises(MCPError) as refused:
            await client.call_tool("behav__echo", {"text": "one too many"})
        assert_rate_limited(refused.value)


# --- 18.9: sessions are capped per agent and in total, and expire by last use -----------------------


IDLE_S = 6.0


@pytest.fixture(scope="module")
def sessions_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    agents = ("hog", "peer", "third", "sleeper")
    gw = Gateway(tmp_path_factory.mktemp("abuse-sessions"), [], tokens={a: token_for(a) for a in agents},
                 extra_config={"limits": {"max_sessions_per_agent": 2, "max_sessions": 4,
                                          "session_idle_s": IDLE_S}}).start()
    yield gw
    gw.stop()


def initialize(gw: Gateway, agent_id: str) -> httpx2.Response:
    return httpx2.post(gw.url, timeout=10, headers={"Authorization": f"Bearer {token_for(agent_id)}",
                                                    "Accept": ACCEPT}, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "abuse", "version": "0"}}})


def open_session(gw: Gateway, agent_id: str) -> str:
    answer = initialize(gw, agent_id)
    assert answer.status_code == 200, answer.text
    return answer.headers["mcp-session-id"]


def in_session(gw: Gateway, agent_id: str, session_id: str, verb: str = "POST") -> httpx2.Response:
    """A ping in the session (or, with verb DELETE, its end)."""
    headers = {"Authorization": f"Bearer {token_for(agent_id)}", "Accept": ACCEPT, "Mcp-Session-Id": session_id,
               "Mcp-Protocol-Version": "2025-11-25"}
    if verb == "DELETE":
        return httpx2.delete(gw.url, headers=headers, timeout=10)
    return httpx2.post(gw.url, headers=headers, timeout=10, json={"jsonrpc": "2.0", "id": 2, "method": "ping"})


def assert_session_refused(answer: httpx2.Response, status: int, limit: str) -> None:
    assert answer.status_code == status, answer.text
    assert "mcp-session-id" not in answer.headers
    error = answer.json()["error"]
    assert error["code"] == RATE_LIMITED and limit in error["message"], error
    assert error["data"]["limit"] == limit, error


async def test_sessions_are_capped_per_agent_and_in_total(sessions_gw: Gateway) -> None:
    hog = [open_session(sessions_gw, "hog") for _ in range(2)]
    assert_session_refused(initialize(sessions_gw, "hog"), 429, "limits.max_sessions_per_agent")
    # A real client is told why, not left guessing.
    refusals: list[MCPError] = []
    try:
        async with mcp_client(sessions_gw.url, token_for("hog"), "legacy"):
            pass
    except* MCPError as group:
        refusals.extend(leaves(group))
    assert [e.error.code for e in refusals] == [RATE_LIMITED], refusals
    assert "limits.max_sessions_per_agent" in refusals[0].error.message
    assert all(in_session(sessions_gw, "hog", s).status_code == 200 for s in hog)  # the open ones still work
    peer = [open_session(sessions_gw, "peer") for _ in range(2)]  # another agent is unaffected
    assert_session_refused(initialize(sessions_gw, "third"), 503, "limits.max_sessions")
    assert in_session(sessions_gw, "hog", hog.pop(), "DELETE").status_code == 200  # ending one frees a place
    third = open_session(sessions_gw, "third")
    for agent_id, session_id in [("hog", hog[0]), ("peer", peer[0]), ("peer", peer[1]), ("third", third)]:
        assert in_session(sessions_gw, agent_id, session_id, "DELETE").status_code == 200


def test_idle_sessions_expire_by_last_use(sessions_gw: Gateway) -> None:
    used, idle = open_session(sessions_gw, "sleeper"), open_session(sessions_gw, "sleeper")
    time.sleep(IDLE_S * 0.6)
    assert in_session(sessions_gw, "sleeper", used).status_code == 200  # keeps it alive
    time.sleep(IDLE_S * 0.6)  # `idle` has now been idle longer than session_idle_s; `used` has not
    assert in_session(sessions_gw, "sleeper", idle).status_code == 404
    fresh = open_session(sessions_gw, "sleeper")  # the expired one no longer counts against the cap
    assert in_session(sessions_gw, "sleeper", used).status_code == 200
    for session_id in (used, fresh):
        assert in_session(sessions_gw, "sleeper", session_id, "DELETE").status_code == 200


def principal(agent_id: str) -> Principal:
    return Principal(agent_id, "static-token")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_session_registry_expires_from_the_least_recently_used_end() -> None:
    clock = Clock()
    registry = SessionRegistry(idle_s=10, max_per_agent=3, max_total=5, clock=clock)
    first = await registry.create(principal("a"), "2025-11-25", {}, None)
    clock.now += 5
    await registry.create(principal("b"), "2025-11-25", {}, None)
    clock.now += 4
    assert await registry.get(first.id, principal("a")) is first  # used: now the most recent
    clock.now += 7  # second idle 11 s, first 7 s
    third = await registry.create(principal("a"), "2025-11-25", {}, None)
    assert [s.id for s in registry.all()] == [first.id, third.id]
    assert (await registry.count(), await registry.count("a"), await registry.count("b")) == (2, 2, 0)
    assert await registry.close_agent("a") == 2 and await registry.count() == 0


async def test_session_registry_caps_are_checked_before_anything_is_created() -> None:
    registry = SessionRegistry(idle_s=3600, max_per_agent=2, max_total=3, clock=Clock())
    for _ in range(2):
        await registry.create(principal("a"), "2025-11-25", {}, None)
    with pytest.raises(SessionLimitReached) as per_agent:
        await registry.create(principal("a"), "2025-11-25", {}, None)
    assert (per_agent.value.status, per_agent.value.data) == (429, {"limit": "limits.max_sessions_per_agent",
                                                                    "max": 2})
    await registry.create(principal("b"), "2025-11-25", {}, None)
    with pytest.raises(SessionLimitReached) as total:
        await registry.create(principal("c"), "2025-11-25", {}, None)
    assert (total.value.status, total.value.data["limit"]) == (503, "limits.max_sessions")
    assert await registry.count() == 3 and await registry.count("c") == 0


# --- 18.11: forwarding headers only from configured proxies ----------------------------------------


def failed_sign_ins(gw: Gateway, forwarded_for: list[str]) -> list[int]:
    """One wrong credential per X-Forwarded-For value, from loopback; the statuses answered."""
    browser = Browser(gw)
    try:
        statuses = []
        for address in forwarded_for:
            browser.http.headers["X-Forwarded-For"] = address
            statuses.append(browser.login(f"wrong-{address}").status_code)
        return statuses
    finally:
        browser.close()


def console_gateway(workdir: Path, **extra: Any) -> Gateway:
    return Gateway(workdir, [], tokens={}, extra_config=extra).start()


def test_rotating_x_forwarded_for_does_not_escape_the_sign_in_throttle(tmp_path: Path) -> None:
    gw = console_gateway(tmp_path)
    try:
        rotating = [f"198.51.100.{n}" for n in range(11)]
        assert failed_sign_ins(gw, rotating) == [401] * 10 + [429]
        assert "sign-in from 127.0.0.1 refused" in gw.log_text()
        assert "198.51.100." not in gw.log_text()
    finally:
        gw.stop()


def test_x_forwarded_for_is_used_from_a_configured_proxy(tmp_path: Path) -> None:
    gw = console_gateway(tmp_path, forwarded_allow_ips=["127.0.0.1"])
    try:
        assert failed_sign_ins(gw, ["203.0.113.7"] * 11) == [401] * 10 + [429]
        assert failed_sign_ins(gw, ["203.0.113.8"]) == [401]  # another client behind the proxy
        assert "sign-in from 203.0.113.7 refused" in gw.log_text()
    finally:
        gw.stop()


# --- the new keys ---------------------------------------------------------------------------------


def test_new_limits_keys_default_and_parse() -> None:
    defaults = settings_from_mapping({}, Path("."))
    assert (defaults.limits.max_sessions_per_agent, defaults.limits.max_sessions) == (64, 10_000)
    assert defaults.limits.max_sessions_per_client == 1024
    assert defaults.forwarded_allow_ips == ()
    assert defaults.monitoring.alert_severity == "medium" and defaults.monitoring.window_s == 3600.0
    parsed = settings_from_mapping({
        "limits": {"max_sessions_per_agent": 3, "max_sessions": 50, "max_sessions_per_client": 7},
        "forwarded_allow_ips": ["10.0.0.0/8", "192.0.2.1", "::1"],
        "monitoring": {"alert_severity": "low"},
    }, Path("."))
    assert (parsed.limits.max_sessions_per_agent, parsed.limits.max_sessions) == (3, 50)
    assert parsed.limits.max_sessions_per_client == 7
    assert parsed.forwarded_allow_ips == ("10.0.0.0/8", "192.0.2.1/32", "::1/128")
    assert parsed.monitoring.alert_severity == "low"
    assert settings_from_mapping({"forwarded_allow_ips": "10.0.0.1, *"}, Path(".")).forwarded_allow_ips == ("*",)


@pytest.mark.parametrize(("raw", "message"), [
    ({"limits": {"max_sessions_per_agent": 0}}, "limits.max_sessions_per_agent must be a whole number"),
    ({"limits": {"max_sessions": 2.5}}, "limits.max_sessions must be a whole number"),
    ({"limits": {"max_sessions_per_client": 0}}, "limits.max_sessions_per_client must be a whole number"),
    ({"limits": {"max_sessions": True}}, "limits.max_sessions must be a whole number"),
    ({"forwarded_allow_ips": ["proxy.internal"]}, "forwarded_allow_ips: 'proxy.internal' is not an IP"),
    ({"forwarded_allow_ips": {"a": 1}}, "forwarded_allow_ips must be a list"),
    ({"monitoring": {"alert_severity": "loud"}}, "monitoring.alert_severity must be one of low, medium"),
])
def test_bad_new_keys_are_refused_naming_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from_mapping(raw, Path("."))
