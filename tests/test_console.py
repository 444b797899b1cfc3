"""The approver console over real HTTP against a real gateway process: sign-in, sessions, CSRF and
origin checks, deciding approvals (the agent's retry then goes through a real MCP client), admin-only
actions, escaping, redirects and security headers. The pure parts (sessions, throttle, cookies,
`next`) are unit-tested at the end.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from starlette.responses import Response

from gateway.approvals.model import Approver
from gateway.console.security import CookiePolicy, origin_of, safe_next
from gateway.console.sessions import LoginThrottle, SessionStore
from gateway.console.views import actor_label, entitlement_lines
from gateway.registry.model import Entitlement
from tests.support.admin import bearer
from tests.support.clients import mcp_client
from tests.support.console import Browser, form_field
from tests.support.identity_provider import TestIdentityProvider
from tests.support.processes import ADMIN_TOKEN, Gateway, behaviour_manifest, cedar_copy

OWNER_TOKEN = "console-owner-token"  # tests@example.com (the test agents' owner), approver
STRANGER_TOKEN = "console-stranger-token"  # mallory@example.com, an approver for nobody here
AGENT_TOKENS = {"agent-a": "token-agent-a", "agent-b": "token-agent-b", "agent-doomed": "token-agent-doomed"}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
PAGES = ("/console", "/console/", "/console/history", "/console/agents", "/console/tasks", "/console/decisions",
         "/console/approvals/apr_whatever")
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "console-test", "version": "1"}}}
EXTRA_POLICIES = """\
@id("console-log-needs-approval")
@reason("writing to the log needs an approval")
@step_up("pending")
forbid (principal, action == Action::"cons__log", resource)
unless { context.approval.granted };
"""


def admin_tokens() -> list[dict[str, Any]]:
    return [
        {"name": "test-admin", "token": ADMIN_TOKEN},
        {"name": "tests@example.com", "token": OWNER_TOKEN, "role": "approver"},
        {"name": "mallory@example.com", "token": STRANGER_TOKEN, "role": "approver"},
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int, port: int,
       idp: TestIdentityProvider) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("console")
    manifest = behaviour_manifest("cons", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=10,
                                  tools=("echo", "log"))
    # Both tools stay `read`: a `write` tool would also meet the shipped after-hours step-up, by wall-clock time.
    gateway = Gateway(workdir, [manifest], tokens=AGENT_TOKENS, extra_config={
        "policies": str(cedar_copy(workdir / "cedar", **{"70-tests": EXTRA_POLICIES})),
        "admin": {"tokens": admin_tokens()},
        "identity": {"audience": f"http://127.0.0.1:{port}", "clock_skew_s": 5,
                     "oidc_issuers": [{"issuer": idp.issuer, "jwks_uri": idp.jwks_uri}]},
    })
    gateway.port = port  # the OIDC audience names the port, so it is fixed before start
    gateway.start()
    yield gateway
    gateway.stop()


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def owner(gw: Gateway) -> Iterator[Browser]:
    browser = Browser(gw).signed_in(OWNER_TOKEN)
    yield browser
    browser.close()


@pytest.fixture
def stranger(gw: Gateway) -> Iterator[Browser]:
    browser = Browser(gw).signed_in(STRANGER_TOKEN)
    yield browser
    browser.close()


@pytest.fixture
def admin(gw: Gateway) -> Iterator[Browser]:
    browser = Browser(gw).signed_in(ADMIN_TOKEN)
    yield browser
    browser.close()


def set_cookies(response: httpx2.Response) -> dict[str, str]:
    """Each Set-Cookie header of the response, by cookie name (the raw header text)."""
    return {SimpleCookie(raw).popitem()[0]: raw for raw in response.headers.get_list("set-cookie")}


def approval_state(gw: Gateway, approval_id: str) -> str:
    response = httpx2.get(f"{gw.base}/admin/v1/approvals/{approval_id}", headers=bearer(OWNER_TOKEN), timeout=10)
    return str(response.json()["state"])


def api(gw: Gateway, method: str, path: str, body: dict[str, Any] | None = None) -> httpx2.Response:
    return httpx2.request(method, f"{gw.base}/admin/v1{path}", headers=bearer(ADMIN_TOKEN), json=body, timeout=10)


async def pending_approval(gw: Gateway, message: str, agent: str = "agent-a") -> str:
    """An agent's call that needs an approval (pending mode); returns the approval's id."""
    async with mcp_client(gw.url, AGENT_TOKENS[agent], "legacy") as client:
        first = await client.call_tool("cons__log", {"message": message, "level": "info"})
    assert first.is_error
    return str((first.meta or {})["narrowgate/approval"]["id"])


def deny_quietly(gw: Gateway, approval_id: str) -> None:
    httpx2.post(f"{gw.base}/admin/v1/approvals/{approval_id}/deny", headers=bearer(OWNER_TOKEN), json={},
                timeout=10)


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


# --- signing in ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_session(gw: Gateway, path: str) -> None:
    anonymous = httpx2.get(f"{gw.base}{path}", timeout=10)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == f"/console/login?next={path}"
    forged = httpx2.get(f"{gw.base}{path}", cookies={"narrowgate_console": "made-up-session-id"}, timeout=10)
    assert forged.status_code == 303 and forged.headers["location"].startswith("/console/login")


def test_an_approver_signs_in_with_a_hardened_session_cookie(gw: Gateway) -> None:
    browser = Browser(gw)
    signed_in = browser.login(OWNER_TOKEN)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/console"
    cookie = set_cookies(signed_in)["narrowgate_console"]
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert {"httponly", "samesite=strict", "path=/console"} <= set(flags)
    assert "secure" not in flags  # plain http on loopback
    assert len(cookie.split(";")[0].split("=", 1)[1]) >= 43  # 32 random bytes, base64url
    inbox = browser.get("/console")
    assert inbox.status_code == 200 and "tests@example.com" in inbox.text and "Pending approvals" in inbox.text
    assert OWNER_TOKEN not in inbox.text
    assert OWNER_TOKEN not in gw.log_text()  # the credential is never logged
    browser.close()


def test_wrong_and_agent_credentials_are_refused(gw: Gateway) -> None:
    browser = Browser(gw)
    wrong = browser.login("not-a-real-token")
    assert wrong.status_code == 401 and "Sign-in refused" in wrong.text
    assert "unknown token" in wrong.text and "JWT (header" not in wrong.text  # a typo, not a JWT problem
    mistyped = browser.login(OWNER_TOKEN[:-1])
    assert mistyped.status_code == 401 and "unknown token" in mistyped.text
    assert "narrowgate_console" not in set_cookies(wrong)
    agent = browser.login("token-agent-a")
    assert agent.status_code == 403 and "agent credentials" in agent.text
    assert "narrowgate_console" not in set_cookies(agent)
    assert browser.get("/console").status_code == 303
    browser.close()


def test_an_oidc_person_with_a_console_role_signs_in_for_no_longer_than_their_token(
        gw: Gateway, idp: TestIdentityProvider) -> None:
    browser = Browser(gw)
    token = idp.mint(sub="oidc-carol", email="carol@example.com", roles=["narrowgate-approver"],
                     exp=int(time.time()) + 120)
    signed_in = browser.login(token)
    assert signed_in.status_code == 303, signed_in.text
    max_age = int(SimpleCookie(set_cookies(signed_in)["narrowgate_console"])["narrowgate_console"]["max-age"])
    assert 0 < max_age <= 120  # the session ends with the token, not 8 hours later
    assert "carol@example.com" in browser.get("/console").text
    roleless = Browser(gw).login(idp.mint(sub="oidc-dave", email="dave@example.com", roles=["viewer"]))
    assert roleless.status_code == 403 and "lacks" in roleless.text
    browser.close()


def test_sign_in_needs_the_login_cookie_and_the_consoles_origin(gw: Gateway) -> None:
    browser = Browser(gw)
    page = browser.get("/console/login")
    login_cookie = set_cookies(page)["narrowgate_console_login"]
    assert "HttpOnly" in login_cookie and "SameSite=Strict" in login_cookie
    fields = {"csrf": form_field(page.text, "csrf"), "credential": OWNER_TOKEN, "next": ""}
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {},
                    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"}):
        refused = browser.http.post("/console/login", data=fields, headers=headers)
        assert refused.status_code == 403, headers
    wrong_csrf = browser.http.post("/console/login", data={**fields, "csrf": "x" * 43}, headers={"Origin": gw.base})
    assert wrong_csrf.status_code == 403
    no_cookie = httpx2.post(f"{gw.base}/console/login", data=fields, headers={"Origin": gw.base}, timeout=10)
    assert no_cookie.status_code == 403  # a form without its pre-session cookie (cross-site login CSRF)
    for answer in (wrong_csrf, no_cookie):
        assert "narrowgate_console" not in set_cookies(answer)
    browser.close()


@pytest.mark.parametrize(("wanted", "landing"), [
    ("/console/history", "/console/history"),
    ("/console/approvals/apr_abc-1", "/console/approvals/apr_abc-1"),
    ("https://evil.example/console", "/console"),
    ("//evil.example/console", "/console"),
    ("/console//evil.example", "/console"),
    ("/console/../admin/v1/agents", "/console"),
    ("/consolex", "/console"),
    ("/console\\@evil.example", "/console"),
    ("javascript:alert(1)", "/console"),
])
def test_next_only_ever_leads_to_a_console_page(gw: Gateway, wanted: str, landing: str) -> None:
    browser = Browser(gw)
    assert browser.login(OWNER_TOKEN, next_path=wanted).headers["location"] == landing
    page = browser.get(f"/console/login?next={wanted}")  # already signed in: straight on, just as safely
    assert page.status_code == 303 and page.headers["location"] == landing
    browser.close()


def test_logout_ends_the_session(gw: Gateway, owner: Browser) -> None:
    session_id = owner.http.cookies["narrowgate_console"]
    refused = owner.post("/console/logout", {}, csrf="wrong")
    assert refused.status_code == 403 and owner.get("/console").status_code == 200
    out = owner.post("/console/logout", {})
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert "Max-Age=0" in set_cookies(out)["narrowgate_console"]
    replayed = httpx2.get(f"{gw.base}/console", cookies={"narrowgate_console": session_id}, timeout=10)
    assert replayed.status_code == 303 and replayed.headers["location"].startswith("/console/login")


# --- headers and errors --------------------------------------------------------------------------


def test_every_console_answer_carries_the_security_headers(gw: Gateway, owner: Browser) -> None:
    answers = [owner.get(path) for path in PAGES]
    answers += [owner.get("/console/login"), owner.get("/console/no-such-page"),
                owner.get("/console/static/console.css"), owner.http.post("/console", headers={"Origin": gw.base}),
                httpx2.get(f"{gw.base}/console", timeout=10)]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.request.url, name)
        assert "server" not in answer.headers, answer.request.url  # no software fingerprint
    statuses = [a.status_code for a in answers]
    assert statuses[-5:] == [303, 404, 200, 405, 303]
    assert owner.get("/console/static/console.css").headers["content-type"].startswith("text/css")


def test_unknown_approval_is_a_404_page(owner: Browser) -> None:
    page = owner.get("/console/approvals/apr_nope")
    assert page.status_code == 404 and "no approval apr_nope" in page.text and "Traceback" not in page.text


# --- deciding approvals --------------------------------------------------------------------------


async def test_approving_through_the_form_lets_the_identical_retry_through(gw: Gateway, owner: Browser) -> None:
    message = f"console-approve-{time.time_ns()}"
    approval_id = await pending_approval(gw, message)
    inbox = owner.get("/console")
    assert f'data-approval-id="{approval_id}"' in inbox.text and 'class="approval-row"' in inbox.text
    assert "writing to the log needs an approval" in inbox.text and "console-log-needs-approval" in inbox.text
    detail = owner.get(f"/console/approvals/{approval_id}")
    for element in ('id="approve"', 'id="deny"', 'id="comment"', 'id="state"'):
        assert element in detail.text
    assert message in detail.text and "test agent agent-a" in detail.text

    decided = owner.post(f"/console/approvals/{approval_id}/decide", {"action": "approve", "comment": "ok by me"})
    assert decided.status_code == 303 and decided.headers["location"] == f"/console/approvals/{approval_id}"
    shown = owner.get(decided.headers["location"]).text
    assert f"You approved {approval_id}." in shown and "ok by me" in shown
    assert '<dd id="decided-by">tests@example.com (approver)</dd>' in shown  # a name, not the audit actor
    assert "admin:tests@example.com" not in shown
    assert 'id="approve"' not in shown
    async with mcp_client(gw.url, AGENT_TOKENS["agent-a"], "legacy") as client:
        retry = await client.call_tool("cons__log", {"message": message, "level": "info"})
    assert not retry.is_error and text_of(retry) == "logged"
    assert approval_state(gw, approval_id) == "used"
    history = owner.get("/console/history").text
    assert f'data-approval-id="{approval_id}"' in history and "ok by me" in history
    assert "tests@example.com (approver)" in history and "admin:tests@example.com" not in history
    again = owner.post(f"/console/approvals/{approval_id}/decide", {"action": "deny"})
    assert again.status_code == 409 and "already used" in again.text


async def test_forms_without_the_right_token_or_origin_change_nothing(gw: Gateway, owner: Browser) -> None:
    approval_id = await pending_approval(gw, f"console-csrf-{time.time_ns()}")
    path = f"/console/approvals/{approval_id}/decide"
    attempts = [
        owner.post(path, {"action": "approve"}, csrf=None),
        owner.post(path, {"action": "approve"}, csrf="not-the-token"),
        owner.post(path, {"action": "approve"}, origin="http://evil.example"),
        owner.post(path, {"action": "approve"}, origin="http://evil.example", **{"Sec-Fetch-Site": "same-origin"}),
        owner.post(path, {"action": "approve"}, origin="null"),
        owner.post(path, {"action": "approve"}, origin="null", **{"Sec-Fetch-Site": "cross-site"}),
        owner.post(path, {"action": "approve"}, origin=None),  # no Origin, Referer or Sec-Fetch-Site at all
        owner.post(path, {"action": "approve"}, origin=None, Referer="http://evil.example/console"),
        owner.post(path, {"action": "approve"}, origin="null", Referer="http://evil.example/console",
                   **{"Sec-Fetch-Site": "same-origin"}),
    ]
    assert [a.status_code for a in attempts] == [403] * len(attempts)
    assert "security token" in attempts[0].text and "origin" in attempts[2].text
    assert approval_state(gw, approval_id) == "pending"
    # What browsers send for the console's own forms under Referrer-Policy: no-referrer.
    as_browsers_do = owner.post(path, {"action": "deny"}, origin="null", **{"Sec-Fetch-Site": "same-origin"})
    assert as_browsers_do.status_code == 303 and approval_state(gw, approval_id) == "denied"


async def test_a_referer_of_the_console_stands_in_for_a_missing_origin(gw: Gateway, owner: Browser) -> None:
    approval_id = await pending_approval(gw, f"console-referer-{time.time_ns()}")
    by_referer = owner.post(f"/console/approvals/{approval_id}/decide", {"action": "deny"}, origin=None,
                            Referer=f"{gw.base}/console/approvals/{approval_id}")
    assert by_referer.status_code == 303 and approval_state(gw, approval_id) == "denied"


async def test_a_person_who_may_not_decide_is_told_why(gw: Gateway, stranger: Browser) -> None:
    approval_id = await pending_approval(gw, f"console-stranger-{time.time_ns()}")
    assert "not yours" in stranger.get("/console").text
    detail = stranger.get(f"/console/approvals/{approval_id}")
    assert detail.status_code == 200 and 'id="approve"' not in detail.text
    assert "only the agent&#39;s owner (tests@example.com) may decide this request" in detail.text
    refused = stranger.post(f"/console/approvals/{approval_id}/decide", {"action": "approve"})
    assert refused.status_code == 403 and "only the agent&#39;s owner" in refused.text
    assert approval_state(gw, approval_id) == "pending"
    deny_quietly(gw, approval_id)


async def test_argument_previews_are_escaped(gw: Gateway, owner: Browser) -> None:
    approval_id = await pending_approval(gw, "<script>alert('pwned')</script>")
    detail = owner.get(f"/console/approvals/{approval_id}").text
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in detail
    assert "<script" not in detail.lower()
    deny_quietly(gw, approval_id)


def inbox_row(page: str, approval_id: str) -> str:
    found = re.search(rf'<tr class="approval-row" data-approval-id="{approval_id}">(.*?)</tr>', page, re.S)
    assert found is not None, f"{approval_id} is not in the inbox"
    return found.group(1)


async def test_the_inbox_sums_up_each_requests_arguments_for_those_who_may_see_them(
        gw: Gateway, owner: Browser, stranger: Browser) -> None:
    first = await pending_approval(gw, f"refund 120 EUR to acme {time.time_ns()}")
    second = await pending_approval(gw, f"refund 75 EUR to acme {time.time_ns()}")
    inbox = owner.get("/console").text
    rows = [inbox_row(inbox, first), inbox_row(inbox, second)]
    assert '<code class="args">level=&#34;info&#34;, message=&#34;refund 120 EUR' in rows[0] \
        or 'message=&#34;refund 120 EUR' in rows[0]
    assert "refund 75 EUR" in rows[1] and "refund 120 EUR" not in rows[1]  # two refunds no longer look alike
    theirs = stranger.get("/console").text
    assert "refund 120 EUR" not in theirs and "refund 75 EUR" not in theirs
    assert "arguments shown only to those who may decide" in inbox_row(theirs, first)
    assert "pending: the agent retries" in rows[0]
    for approval_id in (first, second):
        deny_quietly(gw, approval_id)


async def test_secrets_stay_hidden_in_the_inbox_summary(gw: Gateway, owner: Browser) -> None:
    async with mcp_client(gw.url, AGENT_TOKENS["agent-a"], "legacy") as client:
        first = await client.call_tool("cons__log", {"message": "Bearer abcdefghijklmnopqrstuvwxyz0123456789",
                                                     "level": "info"})
    approval_id = str((first.meta or {})["narrowgate/approval"]["id"])
    row = inbox_row(owner.get("/console").text, approval_id)
    assert "[hidden]" in row and "abcdefghijklmnop" not in row
    deny_quietly(gw, approval_id)


async def test_one_approved_calls_decisions_link_to_each_other(gw: Gateway, owner: Browser) -> None:
    message = f"console-linked-{time.time_ns()}"
    async with mcp_client(gw.url, AGENT_TOKENS["agent-b"], "legacy") as client:
        first = await client.call_tool("cons__log", {"message": message, "level": "info"})
        meta = (first.meta or {})["narrowgate/approval"]
        approval_id, asked = str(meta["id"]), str(meta["decisionId"])
        owner.post(f"/console/approvals/{approval_id}/decide", {"action": "approve"})
        assert not (await client.call_tool("cons__log", {"message": message, "level": "info"})).is_error
    used = httpx2.get(f"{gw.base}/admin/v1/approvals/{approval_id}", headers=bearer(OWNER_TOKEN), timeout=10).json()
    retried = str(used["used_decision_id"])  # the retry's own step-up, which used the approval
    detail = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "ran with this approval" not in detail:  # audit writes in the background
        detail = owner.get(f"/console/approvals/{approval_id}").text
        await asyncio.sleep(0.1)
    table = detail.split('id="call-decisions"')[1]
    row = r'data-decision-id="(dec_[0-9a-f]+)">.*?class="decision decision-(\w+)".*?<small>([^<]+)</small>'
    found = re.findall(row, table, re.S)
    rows = {decision_id: (outcome, role) for decision_id, outcome, role in found}
    assert rows[asked] == ("step_up", "asked for this approval")
    assert rows[retried] == ("step_up", "used this approval")
    [ran] = [d for d, (outcome, role) in rows.items() if role == "ran with this approval"]
    assert rows[ran][0] == "allow"
    decisions = owner.get("/console/decisions").text
    linked = re.findall(rf'data-decision-id="(dec_[0-9a-f]+)" data-approval-id="{approval_id}"', decisions)
    assert sorted(linked) == sorted([asked, retried, ran])  # three rows, one call, one approval
    assert f'href="/console/approvals/{approval_id}"' in decisions


# --- agents, tasks and decisions -----------------------------------------------------------------


def test_the_agents_page_shows_what_each_agent_may_be_granted(owner: Browser) -> None:
    page = owner.get("/console/agents").text
    row = re.search(r'data-agent-id="agent-a">(.*?)</tr>', page, re.S)
    assert row is not None
    assert "servers: cons" in row.group(1) and "calls without a task allowed" in row.group(1)


async def test_approvers_cannot_suspend_agents_but_admins_can(gw: Gateway, owner: Browser, admin: Browser) -> None:
    async with mcp_client(gw.url, AGENT_TOKENS["agent-doomed"], "legacy") as client:
        assert not (await client.call_tool("cons__echo", {"text": "still here"})).is_error
    listing = owner.get("/console/agents").text
    assert "agent-doomed" in listing and "Suspend" not in listing and "read-only" in listing
    refused = owner.post("/console/agents/agent-doomed/suspend", {"reason": "approvers try"})
    assert refused.status_code == 403 and "Only admins may suspend agents" in refused.text
    assert api(gw, "GET", "/agents/agent-doomed").json()["state"] == "active"

    assert "/console/agents/agent-doomed/suspend" in admin.get("/console/agents").text
    suspended = admin.post("/console/agents/agent-doomed/suspend", {"reason": "incident 7 from the console"})
    assert suspended.status_code == 303 and suspended.headers["location"] == "/console/agents"
    assert "Agent agent-doomed is suspended" in admin.get("/console/agents").text
    assert api(gw, "GET", "/agents/agent-doomed").json()["state"] == "suspended"
    with pytest.raises((MCPError, BaseExceptionGroup)):  # the SDK wraps the HTTP 403 in its task group
        async with mcp_client(gw.url, AGENT_TOKENS["agent-doomed"], "legacy") as client:
            await client.call_tool("cons__echo", {"text": "after suspension"})
    raw = httpx2.post(gw.url, json=INITIALIZE, timeout=10, headers={
        **bearer(AGENT_TOKENS["agent-doomed"]), "Accept": "application/json, text/event-stream"})
    assert raw.status_code == 403 and "agent 'agent-doomed' is suspended" in raw.text
    again = admin.post("/console/agents/agent-doomed/suspend", {"reason": "twice"})
    assert again.status_code == 409


def test_approvers_cannot_revoke_tasks_but_admins_can(gw: Gateway, owner: Browser, admin: Browser) -> None:
    started = api(gw, "POST", "/tasks", {"agent_id": "agent-b", "purpose": "console revoke test",
                                        "tools": ["cons__echo"]})
    assert started.status_code == 201, started.text
    task_id = started.json()["task"]["id"]
    listing = owner.get("/console/tasks").text
    assert task_id in listing and "console revoke test" in listing and f"/console/tasks/{task_id}/revoke" not in listing
    refused = owner.post(f"/console/tasks/{task_id}/revoke", {"reason": "approvers try"})
    assert refused.status_code == 403 and "Only admins may revoke tasks" in refused.text
    assert f"/console/tasks/{task_id}/revoke" in admin.get("/console/tasks").text
    revoked = admin.post(f"/console/tasks/{task_id}/revoke", {"reason": "done with it"})
    assert revoked.status_code == 303
    assert api(gw, "GET", f"/tasks/{task_id}").json()["state"] == "revoked"
    assert admin.post(f"/console/tasks/{task_id}/revoke", {"reason": "again"}).status_code == 409
    assert admin.post("/console/tasks/task_nope/revoke", {"reason": "x"}).status_code == 404


async def test_decisions_page_lists_recent_decisions_without_arguments(gw: Gateway, owner: Browser) -> None:
    secret_text = f"decision-argument-{time.time_ns()}"
    async with mcp_client(gw.url, AGENT_TOKENS["agent-b"], "legacy") as client:
        assert not (await client.call_tool("cons__echo", {"text": secret_text})).is_error
    deadline = time.monotonic() + 10
    newest = ""
    while time.monotonic() < deadline and not ("agent-b" in newest and "cons__echo" in newest):
        page = owner.get("/console/decisions").text  # the audit log writes in the background
        newest = page.split('class="decision-row"')[1] if 'class="decision-row"' in page else ""
        await asyncio.sleep(0.1)
    assert "<td>agent-b</td>" in newest and "cons__echo" in newest and "allow" in newest
    assert re.search(r"<code>dec_[0-9a-f]+</code>", newest)
    assert secret_text not in page


# --- failed sign-ins are throttled (a gateway of its own: the limit is per client address) ------------


def test_failed_sign_ins_are_limited_per_address(tmp_path: Path, behaviour_http: int) -> None:
    manifest = behaviour_manifest("cons", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, tools=("echo",))
    gateway = Gateway(tmp_path, [manifest], extra_config={"admin": {"tokens": admin_tokens()}}).start()
    try:
        browser = Browser(gateway)
        statuses = [browser.login(f"guess-{n}").status_code for n in range(10)]
        assert statuses == [401] * 10
        limited = browser.login(OWNER_TOKEN)  # even the right credential waits out the minute
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "Too many failed sign-ins" in limited.text
        browser.close()
    finally:
        gateway.stop()


# --- the pure parts ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


PERSON = Approver(actor="admin:alice", name="alice", roles=frozenset({"approver"}))


async def test_sessions_end_when_idle_at_their_lifetime_and_with_their_credential() -> None:
    clock = Clock()
    sessions = SessionStore(ttl_s=100, idle_s=30, clock=clock)
    session = await sessions.create(PERSON)
    assert len(session.id) >= 43 and len(session.csrf) >= 43 and session.id != session.csrf
    for _ in range(3):
        clock.now += 25  # used often enough: never idle
        assert await sessions.get(session.id) is session
    clock.now += 26  # 101 s after creation: past its lifetime although recently used
    assert await sessions.get(session.id) is None

    idle = await sessions.create(PERSON)
    clock.now += 31
    assert await sessions.get(idle.id) is None

    short = await sessions.create(PERSON, credential_expires_at=clock.now + 10)
    clock.now += 11
    assert await sessions.get(short.id) is None

    gone = await sessions.create(PERSON)
    await sessions.delete(gone.id)
    assert await sessions.get(gone.id) is None and await sessions.get(None) is None and await sessions.get("") is None


async def test_the_throttle_counts_failures_per_address_in_a_sliding_minute() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=3, window_s=60, clock=clock)
    for _ in range(3):
        assert await throttle.attempt("10.0.0.1") is not None
    assert await throttle.attempt("10.0.0.1") is None and await throttle.attempt("10.0.0.2") is not None
    assert 1 <= await throttle.retry_after_s("10.0.0.1") <= 61
    clock.now += 61
    assert await throttle.attempt("10.0.0.1") is not None


def test_cookies_over_https_are_secure_host_prefixed() -> None:
    response = Response()
    CookiePolicy.for_base_url("https://gw.example.com").set_session(response, "sid", 60)
    [cookie] = response.headers.getlist("set-cookie")
    assert cookie.startswith("__Host-narrowgate_console=sid;")
    assert all(flag in cookie for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/;", "Max-Age=60"))
    assert "Domain" not in cookie
    plain = Response()
    CookiePolicy.for_base_url("http://127.0.0.1:8080").set_session(plain, "sid", 60)
    [cookie] = plain.headers.getlist("set-cookie")
    assert cookie.startswith("narrowgate_console=sid;") and "Secure" not in cookie and "Path=/console" in cookie


def test_origins_and_next_paths() -> None:
    assert origin_of("https://GW.example.com:443/console") == "https://gw.example.com"
    assert origin_of("http://127.0.0.1:8080/x?y") == "http://127.0.0.1:8080"
    assert origin_of("http://[::1]:9000/") == "http://[::1]:9000"
    assert origin_of("null") is None and origin_of("") is None and origin_of("ftp://x") is None
    assert safe_next("/console/approvals/apr_1") == "/console/approvals/apr_1"
    for bad in (None, "", "/", "/console/./x", "/console/%2e%2e/x", "/console?next=//evil", "/console/a b"):
        assert safe_next(bad) == "/console"


def test_actors_are_named_as_people_read_them() -> None:
    roles = {"alice": "admin", "tests@example.com": "approver"}
    assert actor_label("admin:alice", roles) == "alice (admin)"
    assert actor_label("admin:tests@example.com", roles) == "tests@example.com (approver)"
    assert actor_label("admin:gone", roles) == "gone"  # a token since removed from the config
    assert actor_label("oidc:u-1001", roles) == "u-1001 (OIDC)"
    assert actor_label("narrowgate", roles) == "the gateway" and actor_label("agent-a", roles) == "agent-a"
    assert actor_label(None, roles) == "—"


def test_entitlements_read_as_lines() -> None:
    assert entitlement_lines(Entitlement(tools=("gh__comment",), servers=("docs",))) == [
        "servers: docs", "tools: gh__comment", "calls need a task token"]
    assert entitlement_lines(Entitlement(require_task=False)) == ["nothing", "calls without a task allowed"]
