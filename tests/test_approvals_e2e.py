"""Step-up approvals end to end: a real gateway process, real MCP clients in both eras, a real upstream,
people deciding through the admin API (the console and CLI drive the same service; see their tests).

Policies on top of the shipped set (which asks for privileged/destructive tools; `approvals.default_mode: hold`
here, so those calls hold whatever the client):
* `appr__log` (write) needs an approval in pending mode;
* `appr__progress` (read) needs an approval from group `payments-leads`, held;
* `appr__whoami` (read) needs an approval that lives 2 seconds.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError
from mcp_types import ElicitRequestParams, ElicitResult

from gateway.verifier import argument_digest
from tests.support.admin import bearer
from tests.support.clients import ERAS, mcp_client
from tests.support.identity_provider import TestIdentityProvider
from tests.support.processes import ADMIN_TOKEN, Gateway, behaviour_manifest, cedar_copy
from tests.support.webhook_receiver import WebhookReceiver

ACCESS_DENIED = -32030
APPROVAL_REQUIRED = -32031
URL_ELICITATION_REQUIRED = -32042
OWNER_TOKEN = "owner-approver-token"  # tests@example.com, the static agents' owner
STRANGER_TOKEN = "stranger-approver-token"  # mallory@example.com, an approver for nobody here
LEAD_TOKEN = "lead-approver-token"  # carol@example.com, in group payments-leads
WEBHOOK_SECRET = "approval-webhook-secret"
APPROVAL_ID = re.compile(r"apr_[A-Za-z0-9_-]+")
EXTRA_POLICIES = """\
@id("log-needs-approval")
@reason("writing to the log needs an approval")
@step_up("pending")
forbid (principal, action == Action::"appr__log", resource)
unless { context.approval.granted };

@id("slow-needs-approval")
@reason("slow calls need an approval")
@step_up("pending")
forbid (principal, action == Action::"appr__slow", resource)
unless { context.approval.granted };

@id("progress-needs-a-lead")
@reason("progress reports need a payments lead")
@step_up("hold")
@approvers("payments-leads")
forbid (principal, action == Action::"appr__progress", resource)
unless { context.approval.granted };

@id("whoami-short-approval")
@reason("whoami needs a quick approval")
@step_up("hold")
@approval_ttl("2s")
forbid (principal, action == Action::"appr__whoami", resource)
unless { context.approval.granted };
"""


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int, webhook: WebhookReceiver, port: int,
       idp: TestIdentityProvider) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("approvals")
    policies = cedar_copy(workdir / "cedar", **{"70-tests": EXTRA_POLICIES})
    manifest = behaviour_manifest("appr", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=10,
                                  tools=("echo", "log", "progress", "whoami", "slow", "env_value"))
    manifest["tools"][5].update(risk="privileged", egress=True)  # env_value: held, and sends data out
    vault = behaviour_manifest("vault", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, tools=("echo",))
    vault["tools"][0]["data_classes"] = ["secrets"]
    manifest["tools"][0]["risk"] = "privileged"  # echo: held by the shipped step-up policy
    manifest["tools"][1]["risk"] = "write"
    gateway = Gateway(workdir, [manifest, vault],
                      tokens={"agent-a": "token-agent-a", "agent-b": "token-agent-b", "agent-e": "token-agent-e"},
                      env={"APPROVAL_HOOK_SECRET": WEBHOOK_SECRET},
                      extra_config={
                          "policies": str(policies),
                          "admin": {"tokens": [
                              {"name": "test-admin", "token": ADMIN_TOKEN},
                              {"name": "tests@example.com", "token": OWNER_TOKEN, "role": "approver"},
                              {"name": "mallory@example.com", "token": STRANGER_TOKEN, "role": "approver"},
                              {"name": "carol@example.com", "token": LEAD_TOKEN, "role": "approver",
                               "groups": ["payments-leads"]},
                          ]},
                          "approvals": {"keepalive": "1s", "default_mode": "hold", "webhook_url": webhook.url,
                                        "webhook_secret_env": "APPROVAL_HOOK_SECRET"},
                          "identity": {"audience": f"http://127.0.0.1:{port}", "clock_skew_s": 5,
                                       "oidc_issuers": [{"issuer": idp.issuer, "jwks_uri": idp.jwks_uri}]},
                      })
    gateway.port = port  # the OIDC audience names the port
    gateway.start()
    yield gateway
    gateway.stop()


# --- helpers -------------------------------------------------------------------------------------


def admin(gw: Gateway, method: str, path: str, token: str = OWNER_TOKEN, **body: Any) -> httpx2.Response:
    return httpx2.request(method, f"{gw.base}/admin/v1/approvals{path}", headers=bearer(token),
                          json=body if method == "POST" else None, timeout=10)


def pending_for(gw: Gateway, agent: str, tool: str) -> list[dict[str, Any]]:
    listed = admin(gw, "GET", f"?state=pending&agent={agent}").json()["approvals"]
    return [a for a in listed if a["tool"] == tool]


async def wait_for_pending(gw: Gateway, agent: str, tool: str, timeout_s: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(pending_for, gw, agent, tool)
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no pending approval for {agent} {tool}")


def decide(gw: Gateway, approval_id: str, action: str, token: str = OWNER_TOKEN, comment: str = "") -> dict[str, Any]:
    response = admin(gw, "POST", f"/{approval_id}/{action}", token=token, comment=comment)
    assert response.status_code == 200, response.text
    return dict(response.json())


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def approval_meta(result: Any) -> dict[str, Any]:
    meta = result.meta or {}
    return dict(meta["narrowgate/approval"])


# --- hold mode -----------------------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_held_call_completes_once_the_owner_approves(gw: Gateway, era: str) -> None:
    text = f"held-{era}-{time.time_ns()}"
    async with mcp_client(gw.url, "token-agent-a", era) as client:
        call = asyncio.create_task(client.call_tool("appr__echo", {"text": text}))
        approval = await wait_for_pending(gw, "agent-a", "appr__echo")
        assert approval["mode"] == "hold" and approval["risk"] == "privileged"
        assert approval["reason"] == "this tool needs an approval before it runs"
        assert approval["owner"] == "tests@example.com" and approval["you_may_decide"] is True
        assert approval["preview"] == {"text": text}
        await asyncio.sleep(1.5)  # the call is really held (keepalives flowing), not answered
        assert not call.done()
        decided = decide(gw, approval["id"], "approve", comment="looks fine")
        assert decided["state"] == "approved" and decided["decided_by"] == "admin:tests@example.com"
        result = await asyncio.wait_for(call, 15)
        assert not result.is_error and text_of(result) == text
    shown = admin(gw, "GET", f"/{approval['id']}").json()
    assert shown["state"] == "used" and shown["comment"] == "looks fine" and shown["used_decision_id"]


async def test_denied_hold_fails_with_the_approvers_comment(gw: Gateway) -> None:
    async with mcp_client(gw.url, "token-agent-a", "legacy") as client:
        call = asyncio.create_task(client.call_tool("appr__echo", {"text": "to be denied"}))
        approval = await wait_for_pending(gw, "agent-a", "appr__echo")
        decide(gw, approval["id"], "deny", comment="not today")
        with pytest.raises(MCPError) as refused:
            await asyncio.wait_for(call, 15)
    assert refused.value.error.code == ACCESS_DENIED
    assert "denied by tests@example.com (approver): not today" in refused.value.error.message
    assert refused.value.error.data["approvalId"] == approval["id"]


async def test_an_unanswered_hold_expires_with_its_request(gw: Gateway) -> None:
    async with mcp_client(gw.url, "token-agent-a", "2026-07-28") as client:
        started = time.monotonic()
        with pytest.raises(MCPError) as refused:
            await client.call_tool("appr__whoami", {})
        assert 1.5 < time.monotonic() - started < 12
    assert refused.value.error.code == APPROVAL_REQUIRED
    assert refused.value.error.data["state"] == "expired"
    [expired] = [a for a in admin(gw, "GET", "?state=expired&agent=agent-a").json()["approvals"]
                 if a["id"] == refused.value.error.data["approvalId"]]
    assert expired["end_reason"] == "nobody decided in time"
    late = admin(gw, "POST", f"/{expired['id']}/approve")
    assert late.status_code == 409 and "expired" in late.json()["error"]


# --- pending mode --------------------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_pending_call_answers_at_once_and_the_identical_retry_goes_through(gw: Gateway, era: str) -> None:
    message = f"pending-{era}-{time.time_ns()}"
    async with mcp_client(gw.url, "token-agent-b", era) as client:
        first = await client.call_tool("appr__log", {"message": message, "level": "info"})
        assert first.is_error
        meta = approval_meta(first)
        approval_id = meta["id"]
        assert approval_id in text_of(first) and meta["url"] in text_of(first)
        assert meta["url"] == f"{gw.base}/console/approvals/{approval_id}"
        assert "retry the identical call" in text_of(first)
        again = await client.call_tool("appr__log", {"message": message, "level": "info"})
        assert approval_meta(again)["id"] == approval_id  # the retry does not ask twice
        assert len(pending_for(gw, "agent-b", "appr__log")) == 1

        decide(gw, approval_id, "approve")
        other = await client.call_tool("appr__log", {"message": message + " changed", "level": "info"})
        assert other.is_error and approval_meta(other)["id"] != approval_id  # other arguments: a new request
        done = await client.call_tool("appr__log", {"message": message, "level": "info"})
        assert not done.is_error and text_of(done) == "logged"
        reuse = await client.call_tool("appr__log", {"message": message, "level": "info"})
        assert reuse.is_error and approval_meta(reuse)["id"] != approval_id  # single use
    for stale in pending_for(gw, "agent-b", "appr__log"):
        decide(gw, stale["id"], "deny")


async def test_an_approval_is_bound_to_its_agent_and_tool(gw: Gateway) -> None:
    message = f"bound-{time.time_ns()}"
    async with mcp_client(gw.url, "token-agent-a", "legacy") as client_a:
        first = await client_a.call_tool("appr__log", {"message": message, "level": "info"})
        approval_id = approval_meta(first)["id"]
    decide(gw, approval_id, "approve")
    async with mcp_client(gw.url, "token-agent-b", "legacy") as client_b:
        theirs = await client_b.call_tool("appr__log", {"message": message, "level": "info"})
        assert theirs.is_error and approval_meta(theirs)["id"] != approval_id  # agent-b cannot use a's approval
    async with mcp_client(gw.url, "token-agent-a", "legacy") as client_a:
        mine = await client_a.call_tool("appr__log", {"message": message, "level": "info"})
        assert not mine.is_error
    for stale in pending_for(gw, "agent-b", "appr__log"):
        decide(gw, stale["id"], "deny")


async def test_an_approval_is_not_good_for_another_tool(gw: Gateway) -> None:
    message = f"tool-bound-{time.time_ns()}"
    async with mcp_client(gw.url, "token-agent-a", "legacy") as client:
        logged = await client.call_tool("appr__log", {"message": message, "level": "info"})
        decide(gw, approval_meta(logged)["id"], "approve")
        slow = await client.call_tool("appr__slow", {"seconds": 0})
        assert slow.is_error and approval_meta(slow)["id"] != approval_meta(logged)["id"]
        assert approval_meta(slow)["state"] == "pending"
        done = await client.call_tool("appr__log", {"message": message, "level": "info"})
        assert not done.is_error  # still unused by the other tool's call
    decide(gw, approval_meta(slow)["id"], "deny")


def start_task(gw: Gateway, agent: str, tools: list[str]) -> tuple[str, str]:
    response = httpx2.post(f"{gw.base}/admin/v1/tasks", headers=bearer(ADMIN_TOKEN), timeout=10,
                           json={"agent_id": agent, "purpose": "approvals e2e", "tools": tools})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["task"]["id"], body["token"]


async def test_an_approval_dies_with_its_task_and_is_not_good_for_another(gw: Gateway) -> None:
    task_1, token_1 = start_task(gw, "agent-a", ["appr__log"])
    task_2, token_2 = start_task(gw, "agent-a", ["appr__log"])
    arguments = {"message": f"task-bound-{time.time_ns()}", "level": "info"}
    async with mcp_client(gw.url, token_1, "legacy") as client:
        first = await client.call_tool("appr__log", arguments)
    approval_id = approval_meta(first)["id"]
    assert admin(gw, "GET", f"/{approval_id}").json()["task_id"] == task_1
    decide(gw, approval_id, "approve")
    async with mcp_client(gw.url, token_2, "2026-07-28") as client:
        other_task = await client.call_tool("appr__log", arguments)
        assert other_task.is_error and approval_meta(other_task)["id"] != approval_id
    ended = httpx2.post(f"{gw.base}/admin/v1/tasks/{task_1}/complete", headers=bearer(ADMIN_TOKEN),
                        json={"reason": "done"}, timeout=10)
    assert ended.status_code == 200, ended.text
    shown = admin(gw, "GET", f"/{approval_id}").json()
    assert shown["state"] == "cancelled" and task_1 in shown["end_reason"]
    late = admin(gw, "POST", f"/{approval_meta(other_task)['id']}/approve")
    assert late.status_code == 200
    httpx2.post(f"{gw.base}/admin/v1/tasks/{task_2}/revoke", headers=bearer(ADMIN_TOKEN), json={"reason": "x"},
                timeout=10)
    assert admin(gw, "GET", f"/{approval_meta(other_task)['id']}").json()["state"] == "cancelled"


async def test_a_rule_that_starts_asking_during_a_hold_needs_its_own_approval(gw: Gateway) -> None:
    # agent-e's held call of an egress tool was asked for by the privileged rule only; while it waits,
    # the agent reads secrets, so the egress-after-sensitive-read rule asks too: the person never saw that.
    async with mcp_client(gw.url, "token-agent-e", "legacy") as client:
        held = asyncio.create_task(client.call_tool("appr__env_value", {"name": "HOME"}))
        first = await wait_for_pending(gw, "agent-e", "appr__env_value")
        assert first["policy_ids"] == ["step-up-privileged-destructive"]
        async with mcp_client(gw.url, "token-agent-e", "2026-07-28") as reader:
            assert not (await reader.call_tool("vault__echo", {"text": "the root password"})).is_error
        decide(gw, first["id"], "approve")
        result = await asyncio.wait_for(held, 15)
    assert result.is_error  # not run: a new request, in the pending mode the chain rule asks for
    second = approval_meta(result)
    assert second["id"] != first["id"]
    shown = admin(gw, "GET", f"/{second['id']}").json()
    assert "no-egress-after-sensitive-read" in shown["policy_ids"]
    assert admin(gw, "GET", f"/{first['id']}").json()["state"] == "approved"  # unused: it did not cover this
    decide(gw, second["id"], "deny")


# --- who may decide ------------------------------------------------------------------------------


async def test_only_the_owner_or_the_named_group_may_decide(gw: Gateway) -> None:
    async with mcp_client(gw.url, "token-agent-a", "legacy") as client:
        first = await client.call_tool("appr__log", {"message": f"who-{time.time_ns()}", "level": "info"})
        approval_id = approval_meta(first)["id"]
        for token, status in ((STRANGER_TOKEN, 403), (ADMIN_TOKEN, 403), ("token-agent-a", 403), ("nope", 401)):
            response = admin(gw, "POST", f"/{approval_id}/approve", token=token)
            assert response.status_code == status, (token, response.text)
        seen_by_stranger = admin(gw, "GET", f"/{approval_id}", token=STRANGER_TOKEN).json()
        assert "owner" in seen_by_stranger["why_not"]
        assert seen_by_stranger["preview"] is None and "preview_hidden" in seen_by_stranger  # not theirs to see
        assert admin(gw, "GET", f"/{approval_id}").json()["preview"]["message"].startswith("who-")

        held = asyncio.create_task(client.call_tool("appr__progress", {"steps": 1}))
        group_request = await wait_for_pending(gw, "agent-a", "appr__progress")
        assert group_request["approvers_group"] == "payments-leads"
        owner_try = admin(gw, "POST", f"/{group_request['id']}/approve", token=OWNER_TOKEN)
        assert owner_try.status_code == 403 and "payments-leads" in owner_try.json()["error"]
        decide(gw, group_request["id"], "approve", token=LEAD_TOKEN)
        result = await asyncio.wait_for(held, 15)
        assert not result.is_error
    decide(gw, approval_id, "deny")


async def test_people_with_oidc_approver_tokens_decide_by_name_and_group(gw: Gateway,
                                                                        idp: TestIdentityProvider) -> None:
    owner = idp.mint(sub="u-1001", email="tests@example.com", roles=["narrowgate-approver"])
    stranger = idp.mint(sub="u-1002", email="mallory@example.com", roles=["narrowgate-approver"])
    lead = idp.mint(sub="u-1003", email="carol@example.com", roles="narrowgate-approver", groups=["payments-leads"])
    no_role = idp.mint(sub="u-1004", email="tests@example.com", roles=["viewer"])
    # An address the issuer says it did not verify names nobody: this is not the owner.
    unverified = idp.mint(sub="u-1005", email="tests@example.com", email_verified=False,
                          roles=["narrowgate-approver"])
    # An approver is not an admin.
    agents = httpx2.get(f"{gw.base}/admin/v1/agents", headers=bearer(owner), timeout=10)
    assert agents.status_code == 403 and "approvals" in agents.json()["error"]
    assert admin(gw, "GET", "", token=no_role).status_code == 403
    async with mcp_client(gw.url, "token-agent-a", "legacy") as client:
        first = await client.call_tool("appr__log", {"message": f"oidc-{time.time_ns()}", "level": "info"})
        approval_id = approval_meta(first)["id"]
        assert admin(gw, "POST", f"/{approval_id}/approve", token=stranger).status_code == 403
        assert admin(gw, "POST", f"/{approval_id}/approve", token=unverified).status_code == 403
        decided = decide(gw, approval_id, "approve", token=owner)
        assert decided["decided_by"] == "oidc:u-1001"
        held = asyncio.create_task(client.call_tool("appr__progress", {"steps": 1}))
        group_request = await wait_for_pending(gw, "agent-a", "appr__progress")
        assert admin(gw, "POST", f"/{group_request['id']}/approve", token=owner).status_code == 403
        decide(gw, group_request["id"], "approve", token=lead)
        assert not (await asyncio.wait_for(held, 15)).is_error


async def test_argument_digests_leave_keyed_and_only_to_those_who_may_see_the_arguments(gw: Gateway) -> None:
    # A small argument space (an amount, say): a plain SHA-256 next to a hidden preview is the preview.
    arguments = {"message": f"refund {time.time_ns() % 500} EUR", "level": "info"}
    async with mcp_client(gw.url, "token-agent-a", "legacy") as client:
        first = await client.call_tool("appr__log", arguments)
    approval_id = approval_meta(first)["id"]
    owner_view = admin(gw, "GET", f"/{approval_id}")
    assert owner_view.json()["preview"] == arguments  # the canonical arguments are these, as judged
    plain = argument_digest(arguments)  # what anyone could compute for each guess

    for response in (admin(gw, "GET", f"/{approval_id}", token=STRANGER_TOKEN),
                     admin(gw, "GET", "?state=pending&agent=agent-a", token=STRANGER_TOKEN)):
        assert response.status_code == 200 and plain not in response.text
        shown = response.json().get("approvals") or [response.json()]
        mine = [a for a in shown if a["id"] == approval_id]
        assert mine and mine[0]["preview"] is None and mine[0]["args_digest"] is None  # neither arguments nor digest

    keyed = owner_view.json()["args_digest"]
    assert keyed.startswith("hmac-sha256:") and len(keyed) == len("hmac-sha256:") + 64
    assert plain not in owner_view.text and plain not in keyed
    async with mcp_client(gw.url, "token-agent-a", "2026-07-28") as client:  # the same call: the same request
        again = await client.call_tool("appr__log", arguments)
    assert approval_meta(again)["id"] == approval_id
    assert admin(gw, "GET", f"/{approval_id}").json()["args_digest"] == keyed
    decide(gw, approval_id, "deny")

    import subprocess

    from tests.support.processes import NARROWGATE

    out = subprocess.run([str(NARROWGATE), "audit", "export", "--config", str(gw.workdir / "gateway.yaml")],
                         capture_output=True, text=True, timeout=60, cwd=gw.workdir)
    assert out.returncode == 0, out.stderr
    assert plain not in out.stdout  # the audit log, as people read it, holds only the keyed digest
    records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    ours = [r for r in records if r["detail"].get("approval_id") == approval_id
            or r["decision_id"] == approval_meta(first)["decisionId"]]
    assert len(ours) >= 3 and {r["args_digest"] for r in ours} == {keyed}


# --- the protocol's own ways to send a person to a URL -------------------------------------------


async def test_legacy_url_elicitation_pending_and_hold(gw: Gateway) -> None:
    seen: list[dict[str, Any]] = []

    async def on_elicit(context: Any, params: ElicitRequestParams) -> ElicitResult:
        seen.append(params.model_dump(by_alias=True, exclude_none=True))
        approval_id = APPROVAL_ID.search(params.url).group(0)  # type: ignore[union-attr]
        await asyncio.to_thread(decide, gw, approval_id, "approve")  # the person followed the link
        return ElicitResult(action="accept")

    async with mcp_client(gw.url, "token-agent-a", "legacy", elicitation_callback=on_elicit) as client:
        with pytest.raises(MCPError) as needed:
            await client.call_tool("appr__log", {"message": "url-pending", "level": "info"})
        assert needed.value.error.code == URL_ELICITATION_REQUIRED
        [elicitation] = UrlElicitationRequiredError.from_error(needed.value.error).elicitations
        assert elicitation.url.startswith(f"{gw.base}/console/approvals/apr_")
        assert "Approval required" in elicitation.message
        decide(gw, elicitation.elicitation_id, "approve")
        done = await client.call_tool("appr__log", {"message": "url-pending", "level": "info"})
        assert not done.is_error

        held = await client.call_tool("appr__echo", {"text": "url-hold"})
        assert not held.is_error and text_of(held) == "url-hold"
    assert seen and seen[0]["mode"] == "url" and seen[0]["url"].startswith(f"{gw.base}/console/approvals/")


async def test_modern_input_required_then_hold(gw: Gateway) -> None:
    seen: list[dict[str, Any]] = []

    async def on_elicit(context: Any, params: ElicitRequestParams) -> ElicitResult:
        seen.append(params.model_dump(by_alias=True, exclude_none=True))
        approval_id = APPROVAL_ID.search(params.url).group(0)  # type: ignore[union-attr]
        await asyncio.to_thread(decide, gw, approval_id, "approve")
        return ElicitResult(action="accept")

    async with mcp_client(gw.url, "token-agent-b", "2026-07-28", elicitation_callback=on_elicit) as client:
        held = await client.call_tool("appr__echo", {"text": "input-required"})
        assert not held.is_error and text_of(held) == "input-required"
        pending = await client.call_tool("appr__log", {"message": "mrtr-pending", "level": "info"})
        assert not pending.is_error  # approved while the client was sent to the URL, then retried
    assert [s["mode"] for s in seen] == ["url", "url"]


# --- the webhook and the audit trail -------------------------------------------------------------


async def test_every_new_request_is_announced_by_a_signed_webhook(gw: Gateway, webhook: WebhookReceiver) -> None:
    async with mcp_client(gw.url, "token-agent-b", "legacy") as client:
        first = await client.call_tool("appr__log", {"message": "hooked", "level": "info"})
    approval_id = approval_meta(first)["id"]
    headers, body = webhook.wait_for(lambda payload: payload.get("approval_id") == approval_id)
    payload = json.loads(body)
    assert payload["type"] == "approval_requested" and payload["tool"] == "appr__log"
    assert payload["url"] == f"{gw.base}/console/approvals/{approval_id}"
    assert "hooked" not in body.decode()  # arguments never leave in a webhook
    assert webhook.signature_ok(headers, body, WEBHOOK_SECRET)
    assert not webhook.signature_ok(headers, body, "another secret")
    decide(gw, approval_id, "deny")


def test_approval_events_are_in_the_audit_log(gw: Gateway, tmp_path: Path) -> None:
    import subprocess

    from tests.support.processes import NARROWGATE

    out = subprocess.run([str(NARROWGATE), "audit", "export", "--config", str(gw.workdir / "gateway.yaml")],
                         capture_output=True, text=True, timeout=60, cwd=gw.workdir)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    actions = {r["action"] for r in records if r["kind"] == "approval"}
    assert {"requested", "approved", "denied", "used", "expired"} <= actions
    used = [r for r in records if r["kind"] == "decision" and r["detail"].get("approval_id")]
    assert used and all(r["decision"] == "allow" for r in used)
