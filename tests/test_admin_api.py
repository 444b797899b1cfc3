"""The admin API (`/admin/v1/agents`) and the `narrowgate agents` CLI against a real gateway process.

Admin credentials are the config's admin token and OIDC tokens minted by the real test IdP; agent
credentials (static development tokens, workload tokens bound to an agent) must never work here.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.admin import bearer, unique
from tests.support.identity_provider import TestIdentityProvider, TestTrustDomain
from tests.support.processes import ADMIN_TOKEN, NARROWGATE, Gateway, behaviour_manifest, free_port

AGENT_TOKEN = "token-agent-a"
ADMIN_ROLE = "narrowgate-admin"
ADMIN_SUB = "alice@example.com"
BOUND_SUB = "bound-workload"


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def domain(port: int) -> TestTrustDomain:
    return TestTrustDomain("example.org", f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int, port: int,
       idp: TestIdentityProvider, domain: TestTrustDomain) -> Iterator[Gateway]:
    manifests = [behaviour_manifest("behav", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=5)]
    workdir = tmp_path_factory.mktemp("admin-api")
    gateway = Gateway(workdir, manifests, tokens={"agent-a": AGENT_TOKEN})
    gateway.port = port  # the audience names the port, so it is fixed before start
    gateway.extra_config = {"identity": {
        "audience": f"http://127.0.0.1:{port}",
        "clock_skew_s": 5,
        "oidc_issuers": [{"issuer": idp.issuer, "jwks_uri": idp.jwks_uri}],
        "spiffe_trust_domains": [{"trust_domain": "example.org",
                                  "bundle_file": str(domain.write_bundle(workdir / "bundle.json"))}],
    }}
    gateway.start()
    yield gateway
    gateway.stop()


class Api:
    """The admin API over real HTTP, with one bearer token."""

    def __init__(self, gateway: Gateway, token: str | None = ADMIN_TOKEN) -> None:
        self.base = f"{gateway.base}/admin/v1/agents"
        self.headers = bearer(token)

    def get(self, path: str = "") -> httpx2.Response:
        return httpx2.get(f"{self.base}{path}", headers=self.headers)

    def post(self, path: str = "", body: Any = None, *, content: bytes | None = None) -> httpx2.Response:
        if content is not None:
            return httpx2.post(f"{self.base}{path}", content=content,
                               headers={**self.headers, "Content-Type": "application/json"})
        return httpx2.post(f"{self.base}{path}", json=body, headers=self.headers)

    def patch(self, path: str, body: Any = None, *, content: bytes | None = None) -> httpx2.Response:
        if content is not None:
            return httpx2.patch(f"{self.base}{path}", content=content,
                                headers={**self.headers, "Content-Type": "application/json"})
        return httpx2.patch(f"{self.base}{path}", json=body, headers=self.headers)


def spec(agent_id: str, issuer: str = "https://token.actions.githubusercontent.com", **extra: Any) -> dict[str, Any]:
    return {"id": agent_id, "owner": "team-tools@example.com", "purpose": "files release notes",
            "identities": [{"kind": "oidc", "issuer": issuer, "subject": f"sub-{agent_id}"}], **extra}


def error_of(response: httpx2.Response) -> str:
    return str(response.json()["error"])


@pytest.fixture(scope="module")
def api(gw: Gateway) -> Api:
    return Api(gw)


@pytest.fixture(scope="module")
def bound_agent(api: Api, idp: TestIdentityProvider) -> str:
    """An agent bound to BOUND_SUB at the test IdP: that workload's tokens are agent credentials."""
    body = spec("bound-agent", state="active")
    body["identities"] = [{"kind": "oidc", "issuer": idp.issuer, "subject": BOUND_SUB}]
    assert api.post("", body).status_code == 201
    return "bound-agent"


# --- admin authentication ------------------------------------------------------------------------


def test_no_token_is_401(gw: Gateway) -> None:
    for response in (Api(gw, None).get(), Api(gw, None).post("", spec(unique("noauth")))):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "admin bearer token is required" in error_of(response)


def test_wrong_token_is_401_and_not_echoed(gw: Gateway) -> None:
    response = Api(gw, "not-the-admin-token-0123456789").get()
    assert response.status_code == 401, response.text
    assert "not-the-admin-token-0123456789" not in response.text


def test_wrong_scheme_is_401(gw: Gateway) -> None:
    response = httpx2.get(f"{gw.base}/admin/v1/agents", headers={"Authorization": f"Basic {ADMIN_TOKEN}"})
    assert response.status_code == 401


def test_agent_static_token_is_403(gw: Gateway) -> None:
    agents = Api(gw, AGENT_TOKEN)
    for response in (agents.get(), agents.post("", spec(unique("by-agent"))), agents.post("/agent-a/retire",
                                                                                         {"reason": "escape"})):
        assert response.status_code == 403, response.text
        assert "agent credentials cannot use the admin API" in error_of(response)
    assert Api(gw).get("/agent-a").json()["state"] == "active"  # nothing happened


def test_oidc_token_bound_to_an_agent_is_403_even_with_the_admin_role(
    gw: Gateway, idp: TestIdentityProvider, bound_agent: str
) -> None:
    token = idp.mint(sub=BOUND_SUB, roles=[ADMIN_ROLE])
    response = Api(gw, token).get()
    assert response.status_code == 403, response.text
    assert "agent credentials" in error_of(response)
    assert token not in response.text


def test_oidc_token_of_a_suspended_agent_with_the_admin_role_is_still_403(
    gw: Gateway, api: Api, idp: TestIdentityProvider
) -> None:
    agent_id = unique("sleeper")
    body = spec(agent_id, state="active")
    body["identities"] = [{"kind": "oidc", "issuer": idp.issuer, "subject": f"sub-{agent_id}"}]
    assert api.post("", body).status_code == 201
    assert api.post(f"/{agent_id}/suspend", {"reason": "parked"}).status_code == 200
    response = Api(gw, idp.mint(sub=f"sub-{agent_id}", roles=[ADMIN_ROLE])).get()
    assert response.status_code == 403, response.text


def test_oidc_admin_with_the_role_claim_is_allowed_and_recorded_as_actor(
    gw: Gateway, idp: TestIdentityProvider
) -> None:
    oidc_admin = Api(gw, idp.mint(sub=ADMIN_SUB, roles=[ADMIN_ROLE, "viewer"]))
    assert oidc_admin.get().status_code == 200
    agent_id = unique("by-oidc-admin")
    created = oidc_admin.post("", {**spec(agent_id), "reason": "ticket OPS-1"})
    assert created.status_code == 201, created.text
    assert oidc_admin.post(f"/{agent_id}/activate", {"reason": "approved in OPS-1"}).status_code == 200
    assert oidc_admin.post(f"/{agent_id}/suspend", {"reason": "incident 7"}).status_code == 200
    events = oidc_admin.get(f"/{agent_id}").json()["events"]
    assert [(e["actor"], e["reason"]) for e in events] == [
        (f"oidc:{ADMIN_SUB}", "ticket OPS-1"),
        (f"oidc:{ADMIN_SUB}", "approved in OPS-1"),
        (f"oidc:{ADMIN_SUB}", "incident 7"),
    ]
    # A space-separated role string (a common claim shape) is read as a list of roles too.
    assert Api(gw, idp.mint(sub="bob@example.com", roles=f"viewer {ADMIN_ROLE}")).get().status_code == 200


def test_spiffe_svid_admins_follow_the_same_rules(gw: Gateway, api: Api, domain: TestTrustDomain) -> None:
    """docs/admin-api.md: a JWT-SVID with the admin role is an admin, unless its SPIFFE ID is an agent's."""
    admin_id = domain.spiffe_id("/ns/ops/sa/operator")
    svid_admin = Api(gw, domain.mint_svid("/ns/ops/sa/operator", roles=[ADMIN_ROLE]))
    agent_id = unique("by-svid-admin")
    created = svid_admin.post("", {**spec(agent_id), "reason": "created by the ops workload"})
    assert created.status_code == 201, created.text
    assert api.get(f"/{agent_id}").json()["events"][0]["actor"] == f"spiffe:{admin_id}"
    # Without the role: 403. Bound to an agent (even with the role): 403.
    assert Api(gw, domain.mint_svid("/ns/ops/sa/operator")).get().status_code == 403
    bound = spec(unique("svid-agent"), state="active")
    bound["identities"] = [{"kind": "spiffe", "issuer": "spiffe://example.org",
                            "subject": domain.spiffe_id("/ns/agents/sa/triage")}]
    assert api.post("", bound).status_code == 201
    svid = domain.mint_svid("/ns/agents/sa/triage", roles=[ADMIN_ROLE])
    response = Api(gw, svid).get()
    assert response.status_code == 403, response.text
    assert "agent credentials" in error_of(response)
    assert svid not in response.text


def test_oidc_token_without_the_admin_role_is_403(gw: Gateway, idp: TestIdentityProvider) -> None:
    for claims in ({}, {"roles": ["viewer"]}, {"roles": f"{ADMIN_ROLE}-lite"}, {"groups": [ADMIN_ROLE]}):
        response = Api(gw, idp.mint(sub=ADMIN_SUB, **claims)).get()
        assert response.status_code == 403, (claims, response.text)
        assert ADMIN_ROLE in error_of(response)


def test_invalid_oidc_admin_tokens_are_401(gw: Gateway, idp: TestIdentityProvider) -> None:
    now = int(time.time())
    for token in (idp.mint(sub=ADMIN_SUB, roles=[ADMIN_ROLE], iat=now - 600, exp=now - 60),
                  idp.mint(sub=ADMIN_SUB, roles=[ADMIN_ROLE], aud="https://elsewhere.example")):
        response = Api(gw, token).get()
        assert response.status_code == 401, response.text
        assert token not in response.text


# --- CRUD ----------------------------------------------------------------------------------------


def test_create_returns_201_and_the_record(api: Api) -> None:
    agent_id = unique("notes")
    response = api.post("", {**spec(agent_id, display_name="Release notes bot", labels={"team": "tools"},
                                    groups=["bots"], entitlement={"tools": ["behav__echo"]})})
    assert response.status_code == 201, response.text
    agent = response.json()
    assert agent["id"] == agent_id
    assert agent["display_name"] == "Release notes bot"
    assert agent["owner"] == "team-tools@example.com"
    assert agent["purpose"] == "files release notes"
    assert agent["state"] == "pending"  # the default: someone must activate it
    assert agent["labels"] == {"team": "tools"}
    assert agent["groups"] == ["bots"]
    assert agent["entitlement"] == {"tools": ["behav__echo"], "servers": [], "require_task": True}
    assert agent["identities"][0]["subject"] == f"sub-{agent_id}"
    assert agent["created_at"] == agent["changed_at"]


def test_duplicate_id_is_refused(api: Api) -> None:
    agent_id = unique("twin")
    assert api.post("", spec(agent_id)).status_code == 201
    again = api.post("", {**spec(agent_id), "owner": "someone-else@example.com"})
    assert again.status_code == 409, again.text
    assert f"agent {agent_id!r} already exists" in error_of(again)
    assert api.get(f"/{agent_id}").json()["owner"] == "team-tools@example.com"


def test_identity_bound_to_another_agent_is_refused(api: Api) -> None:
    first = unique("holder")
    assert api.post("", spec(first)).status_code == 201
    clash = spec(unique("grabber"))
    clash["identities"] = spec(first)["identities"]
    response = api.post("", clash)
    assert response.status_code == 409, response.text
    assert first in error_of(response)


@pytest.mark.parametrize("missing", ["owner", "purpose"])
def test_missing_owner_or_purpose_is_refused_with_a_clear_message(api: Api, missing: str) -> None:
    agent_id = unique(f"no-{missing}")
    body = spec(agent_id)
    del body[missing]
    response = api.post("", body)
    assert response.status_code == 400, response.text
    assert f"{missing}: is required" in error_of(response)
    assert any(problem.startswith(f"{missing}:") for problem in response.json()["problems"])
    assert api.get(f"/{agent_id}").status_code == 404


def test_every_problem_is_reported_at_once(api: Api) -> None:
    response = api.post("", {"id": "Bad Id", "identities": []})
    assert response.status_code == 400
    message = error_of(response)
    for fragment in ("id 'Bad Id'", "owner: is required", "purpose: is required", "identities"):
        assert fragment in message, message


def test_list_shows_created_agents(api: Api) -> None:
    agent_id = unique("listed")
    assert api.post("", spec(agent_id)).status_code == 201
    response = api.get()
    assert response.status_code == 200
    agents = {a["id"]: a for a in response.json()["agents"]}
    assert agents[agent_id]["state"] == "pending"
    assert agents["agent-a"]["state"] == "active"  # declared in the agents file at start


def test_show_lists_every_event_in_order_with_who_when_and_why(api: Api) -> None:
    agent_id = unique("history")
    before = time.time()
    assert api.post("", {**spec(agent_id), "reason": "new release bot"}).status_code == 201
    steps = [("activate", "approved by security"), ("suspend", "incident 42"), ("resume", "incident closed"),
             ("retire", "replaced by v2")]
    for action, reason in steps:
        response = api.post(f"/{agent_id}/{action}", {"reason": reason})
        assert response.status_code == 200, response.text
    shown = api.get(f"/{agent_id}")
    assert shown.status_code == 200
    body = shown.json()
    assert body["state"] == "retired"
    events = body["events"]
    assert [(e["action"], e["from_state"], e["to_state"], e["reason"]) for e in events] == [
        ("create", None, "pending", "new release bot"),
        ("activate", "pending", "active", "approved by security"),
        ("suspend", "active", "suspended", "incident 42"),
        ("resume", "suspended", "active", "incident closed"),
        ("retire", "active", "retired", "replaced by v2"),
    ]
    assert {e["actor"] for e in events} == {"admin:test-admin"}
    times = [e["at"] for e in events]
    assert times == sorted(times)
    assert before - 1 <= times[0] <= times[-1] <= time.time() + 1


def test_patch_updates_owner_purpose_entitlement_and_labels(api: Api) -> None:
    agent_id = unique("patched")
    assert api.post("", spec(agent_id, labels={"tier": "1"})).status_code == 201
    changes = {"owner": "new-team@example.com", "purpose": "triages issues",
               "entitlement": {"tools": ["behav__echo"], "servers": ["behav"]}, "labels": {"tier": "2", "env": "prod"},
               "reason": "handover to new-team"}
    response = api.patch(f"/{agent_id}", changes)
    assert response.status_code == 200, response.text
    for agent in (response.json(), api.get(f"/{agent_id}").json()):
        assert agent["owner"] == "new-team@example.com"
        assert agent["purpose"] == "triages issues"
        assert agent["entitlement"] == {"tools": ["behav__echo"], "servers": ["behav"], "require_task": True}
        assert agent["labels"] == {"tier": "2", "env": "prod"}
        assert agent["state"] == "pending"  # an update never changes state
        assert agent["identities"][0]["subject"] == f"sub-{agent_id}"  # untouched fields stay
    events = api.get(f"/{agent_id}").json()["events"]
    assert events[-1]["action"] == "update"
    assert set(events[-1]["fields"]) == {"owner", "purpose", "entitlement", "labels"}
    assert events[-1]["reason"] == "handover to new-team"
    assert events[-1]["actor"] == "admin:test-admin"
    # A PATCH that changes nothing records nothing.
    assert api.patch(f"/{agent_id}", {"owner": "new-team@example.com"}).status_code == 200
    assert len(api.get(f"/{agent_id}").json()["events"]) == len(events)


def test_patch_refuses_state_changes_and_unknown_fields(api: Api) -> None:
    agent_id = unique("no-state-patch")
    assert api.post("", spec(agent_id)).status_code == 201
    response = api.patch(f"/{agent_id}", {"state": "active"})
    assert response.status_code == 400
    assert "state cannot be changed by an update" in error_of(response)
    response = api.patch(f"/{agent_id}", {"colour": "blue"})
    assert response.status_code == 400
    assert "unknown field 'colour'" in error_of(response)
    response = api.patch(f"/{agent_id}", {"owner": ""})
    assert response.status_code == 400
    assert "owner" in error_of(response)
    assert api.get(f"/{agent_id}").json()["state"] == "pending"


@pytest.mark.parametrize("action", ["activate", "suspend", "resume", "retire"])
def test_lifecycle_action_without_a_reason_is_400(api: Api, action: str) -> None:
    agent_id = unique("unreasoned")
    assert api.post("", spec(agent_id, state="active" if action in ("suspend", "retire") else "pending")
                    ).status_code == 201
    if action == "resume":
        assert api.post(f"/{agent_id}/activate", {"reason": "go"}).status_code == 200
        assert api.post(f"/{agent_id}/suspend", {"reason": "stop"}).status_code == 200
    state_before = api.get(f"/{agent_id}").json()["state"]
    for body in (None, {}, {"reason": ""}, {"reason": "   "}):
        response = api.post(f"/{agent_id}/{action}", body)
        assert response.status_code == 400, (body, response.text)
        assert "reason is required" in error_of(response)
    assert api.get(f"/{agent_id}").json()["state"] == state_before


def test_invalid_transitions_are_refused_with_a_hint(api: Api) -> None:
    agent_id = unique("strict")
    assert api.post("", spec(agent_id)).status_code == 201
    response = api.post(f"/{agent_id}/resume", {"reason": "r"})
    assert response.status_code == 409
    assert "activate" in error_of(response)
    assert api.post(f"/{agent_id}/retire", {"reason": "never used"}).status_code == 200
    for action in ("activate", "resume", "suspend", "retire"):
        response = api.post(f"/{agent_id}/{action}", {"reason": "try again"})
        assert response.status_code == 409, response.text
        assert "retired" in error_of(response)
    response = api.patch(f"/{agent_id}", {"owner": "someone@example.com"})
    assert response.status_code == 409
    assert "retired" in error_of(response)


def test_unknown_action_is_404(api: Api) -> None:
    response = api.post("/agent-a/delete", {"reason": "no such thing"})
    assert response.status_code == 404
    assert "unknown action 'delete'" in error_of(response)
    assert api.get("/agent-a").json()["state"] == "active"


def test_unknown_agent_is_404(api: Api) -> None:
    for response in (api.get("/no-such-agent"), api.patch("/no-such-agent", {"owner": "x@example.com"}),
                     api.post("/no-such-agent/suspend", {"reason": "r"})):
        assert response.status_code == 404, response.text
        assert "no agent 'no-such-agent'" in error_of(response)


def test_invalid_json_is_400(api: Api) -> None:
    for response in (api.post("", content=b"{not json"), api.patch("/agent-a", content=b"{not json"),
                     api.post("/agent-a/suspend", content=b"{not json")):
        assert response.status_code == 400, response.text
        assert "not valid JSON" in error_of(response)
    response = api.post("", content=b"[1, 2]")
    assert response.status_code == 400
    assert "JSON object" in error_of(response)
    assert api.get("/agent-a").json()["state"] == "active"


# --- the CLI -------------------------------------------------------------------------------------


def cli(gw_base: str, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), "agents", "--gateway", gw_base, "--admin-token", token, *args],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent)


def test_cli_add_list_show_and_lifecycle(gw: Gateway, api: Api) -> None:
    agent_id = unique("cli-agent")
    added = cli(gw.base, "add", agent_id, "--owner", "cli-team@example.com", "--purpose", "summarises tickets",
                "--oidc", "https://token.actions.githubusercontent.com", "repo:acme/app:ref:refs/heads/main",
                "--claim", "repository_id=42", "--tool", "behav__echo", "--label", "env=dev",
                "--expires", "2099-01-31T00:00:00Z", "--reason", "added from the CLI test")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"agent {agent_id} registered (pending)"
    record = api.get(f"/{agent_id}").json()
    assert record["identities"][0]["claims"] == {"repository_id": "42"}
    assert record["entitlement"]["tools"] == ["behav__echo"]
    assert record["labels"] == {"env": "dev"}
    assert record["expires_at"] == 4073500800.0  # 2099-01-31T00:00:00Z

    listed = cli(gw.base, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "OWNER", "PURPOSE"]
    row = next(line for line in lines if line.startswith(agent_id))
    assert row.split(maxsplit=3) == [agent_id, "pending", "cli-team@example.com", "summarises tickets"]

    for action, state in (("activate", "active"), ("suspend", "suspended"), ("resume", "active"),
                          ("retire", "retired")):
        result = cli(gw.base, action, agent_id, "--reason", f"CLI {action}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"agent {agent_id} is now {state}"
        assert api.get(f"/{agent_id}").json()["state"] == state

    shown = cli(gw.base, "show", agent_id)
    assert shown.returncode == 0, shown.stderr
    assert f'"id": "{agent_id}"' in shown.stdout
    assert '"state": "retired"' in shown.stdout
    history = shown.stdout.split("lifecycle:\n", 1)[1].splitlines()
    assert [line.split("  ", 2)[2] for line in history] == [
        "create: - -> pending  by admin:test-admin: added from the CLI test",
        "activate: pending -> active  by admin:test-admin: CLI activate",
        "suspend: active -> suspended  by admin:test-admin: CLI suspend",
        "resume: suspended -> active  by admin:test-admin: CLI resume",
        "retire: active -> retired  by admin:test-admin: CLI retire",
    ]


def test_cli_refused_change_exits_non_zero_with_the_reason(gw: Gateway, api: Api) -> None:
    agent_id = unique("cli-retired")
    assert api.post("", spec(agent_id)).status_code == 201
    assert cli(gw.base, "retire", agent_id, "--reason", "done").returncode == 0
    result = cli(gw.base, "resume", agent_id, "--reason", "bring it back")
    assert result.returncode != 0
    assert "retired" in result.stderr
    missing = cli(gw.base, "show", "no-such-agent")
    assert missing.returncode != 0
    assert "HTTP 404" in missing.stderr and "no agent 'no-such-agent'" in missing.stderr


def test_cli_lifecycle_requires_a_reason(gw: Gateway) -> None:
    result = cli(gw.base, "suspend", "agent-a")
    assert result.returncode != 0
    assert "--reason" in result.stderr


def test_cli_wrong_admin_token_exits_non_zero(gw: Gateway) -> None:
    result = cli(gw.base, "list", token="wrong-admin-token-abcdef")
    assert result.returncode != 0
    assert "HTTP 401" in result.stderr
    assert "wrong-admin-token-abcdef" not in result.stderr + result.stdout
    agent = cli(gw.base, "list", token=AGENT_TOKEN)
    assert agent.returncode != 0
    assert "HTTP 403" in agent.stderr and "agent credentials" in agent.stderr


def test_cli_unreachable_gateway_exits_non_zero(gw: Gateway) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    result = cli(closed, "list")
    assert result.returncode != 0
    assert f"cannot reach the gateway at {closed}" in result.stderr
    assert "Traceback" not in result.stderr
