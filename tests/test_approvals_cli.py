"""`narrowgate approvals list|show|approve|deny` against a real gateway process.

A real MCP client (2025-11-25 era) makes calls that a `@step_up("pending")` policy turns into approval
requests; the installed `narrowgate` entry point, run as a subprocess with approver-role tokens, lists,
shows and decides them; the agent's identical retry then goes through (or does not).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.support.admin import bearer
from tests.support.clients import mcp_client
from tests.support.processes import ADMIN_TOKEN, NARROWGATE, Gateway, behaviour_manifest, cedar_copy

OWNER_TOKEN = "cli-owner-approver-token"  # tests@example.com: the static agents' owner
STRANGER_TOKEN = "cli-stranger-approver-token"  # mallory@example.com: owns nothing here
OUR_REASON = "writing to the log needs an approval"
AFTER_HOURS_REASON = "writes outside working hours need an approval"
EXTRA_POLICIES = """\
@id("log-needs-approval")
@reason("writing to the log needs an approval")
@step_up("pending")
forbid (principal, action == Action::"appr__log", resource)
unless { context.approval.granted };
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("approvals-cli")
    policies = cedar_copy(workdir / "cedar", **{"70-tests": EXTRA_POLICIES})
    manifest = behaviour_manifest("appr", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=10,
                                  tools=("echo", "log"))
    manifest["tools"][1]["risk"] = "write"
    gateway = Gateway(workdir, [manifest], tokens={"agent-a": "token-agent-a", "agent-b": "token-agent-b"},
                      extra_config={
                          "policies": str(policies),
                          "admin": {"tokens": [
                              {"name": "test-admin", "token": ADMIN_TOKEN},
                              {"name": "tests@example.com", "token": OWNER_TOKEN, "role": "approver"},
                              {"name": "mallory@example.com", "token": STRANGER_TOKEN, "role": "approver"},
                          ]},
                      })
    gateway.start()
    yield gateway
    gateway.stop()


# --- helpers -------------------------------------------------------------------------------------


def cli(gw: Gateway, *args: str, token: str | None = OWNER_TOKEN) -> subprocess.CompletedProcess[str]:
    """The installed entry point, with the token from the environment like every admin command."""
    env = {k: v for k, v in os.environ.items() if k not in ("NARROWGATE_URL", "NARROWGATE_ADMIN_TOKEN")}
    env["NARROWGATE_URL"] = gw.base
    if token is not None:
        env["NARROWGATE_ADMIN_TOKEN"] = token
    return subprocess.run([str(NARROWGATE), "--log-level", "warning", "approvals", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def failed(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    return result.stderr


def message(tag: str) -> str:
    return f"{tag}-{time.time_ns()}"


async def log_call(gw: Gateway, token: str, text: str) -> Any:
    async with mcp_client(gw.url, token, "legacy") as client:
        return await client.call_tool("appr__log", {"message": text, "level": "info"})


async def request_approval(gw: Gateway, text: str, token: str = "token-agent-b") -> str:
    """Make the agent call a tool that needs an approval; the pending answer names the request."""
    result = await log_call(gw, token, text)
    assert result.is_error
    return str(result.meta["narrowgate/approval"]["id"])


def row_of(listing: str, approval_id: str) -> list[str]:
    [row] = [line for line in listing.splitlines() if line.startswith(approval_id)]
    return row.split()


def shown(output: str) -> dict[str, str]:
    """`show`'s labelled lines (everything before the arguments' JSON)."""
    head = output.split("arguments (preview):")[0]
    return {label.strip(): value.strip() for label, _, value in
            (line.partition(":") for line in head.splitlines())}


def start_task(gw: Gateway, purpose: str) -> dict[str, Any]:
    response = httpx2.post(f"{gw.base}/admin/v1/tasks", headers=bearer(ADMIN_TOKEN), timeout=10,
                           json={"agent_id": "agent-a", "purpose": purpose, "tools": ["appr__log"]})
    assert response.status_code == 201, response.text
    return dict(response.json())


# --- list ----------------------------------------------------------------------------------------


async def test_list_shows_pending_requests_unless_asked_for_other_states(gw: Gateway) -> None:
    pending_id = await request_approval(gw, message("list-pending"))
    denied_id = await request_approval(gw, message("list-denied"))
    ok(cli(gw, "deny", denied_id))

    listing = ok(cli(gw, "list"))
    assert listing.splitlines()[0].split() == ["ID", "STATE", "AGENT", "TOOL", "RISK", "OWNER", "EXPIRES", "IN",
                                               "/", "DECIDED", "BY"]
    row = row_of(listing, pending_id)
    assert row[:6] == [pending_id, "pending", "agent-b", "appr__log", "write", "tests@example.com"]
    assert re.fullmatch(r"1[45]m \d\ds", " ".join(row[6:])), row  # the default ttl is 15 minutes
    assert denied_id not in listing

    everything = ok(cli(gw, "list", "--all"))
    assert pending_id in everything
    assert row_of(everything, denied_id)[1:] == ["denied", "agent-b", "appr__log", "write", "tests@example.com",
                                                 "tests@example.com", "(approver)"]
    denied = ok(cli(gw, "list", "--state", "denied", "--state", "expired"))
    assert denied_id in denied and pending_id not in denied
    assert pending_id not in ok(cli(gw, "list", "--agent", "agent-a"))
    assert pending_id in ok(cli(gw, "list", "--agent", "agent-b"))
    ok(cli(gw, "deny", pending_id))


def test_list_refuses_an_unknown_state_before_asking(gw: Gateway) -> None:
    result = cli(gw, "list", "--state", "maybe")
    assert result.returncode == 2 and "invalid choice: 'maybe'" in result.stderr


# --- show ----------------------------------------------------------------------------------------


async def test_show_prints_what_an_approver_needs_to_decide(gw: Gateway) -> None:
    text = message("show")
    started = start_task(gw, "tidy the release log")
    approval_id = await request_approval(gw, text, token=started["token"])

    output = ok(cli(gw, "show", approval_id))
    fields = shown(output)
    assert fields["approval"] == approval_id and fields["state"] == "pending"
    # After working hours the shipped after-hours step-up policy asks as well (either reason may lead).
    assert fields["reason"] in (OUR_REASON, AFTER_HOURS_REASON)
    assert "log-needs-approval" in fields["policies"].split(", ")
    assert fields["agent"] == "agent-a (owner tests@example.com)"
    assert fields["agent purpose"] == "test agent agent-a"
    assert fields["task"] == started["task"]["id"]
    assert fields["task purpose"] == "tidy the release log"
    assert fields["task started by"] == "admin:test-admin"
    assert fields["tool"] == "appr__log (server appr, risk write)"
    assert fields["mode"] == "pending" and fields["decision"]
    assert fields["who decides"] == "the agent's owner (tests@example.com)"
    assert fields["url"] == f"{gw.base}/console/approvals/{approval_id}"
    assert fields["you may decide"] == "yes"
    assert json.loads(output.split("arguments (preview):\n")[1]) == {"message": text, "level": "info"}

    as_stranger = shown(ok(cli(gw, "show", approval_id, token=STRANGER_TOKEN)))
    assert as_stranger["you may decide"] == "no: only the agent's owner (tests@example.com) may decide this request"
    ok(cli(gw, "deny", approval_id))


# --- approve and deny ----------------------------------------------------------------------------


async def test_approve_lets_the_identical_retry_through_once(gw: Gateway) -> None:
    text = message("approve")
    approval_id = await request_approval(gw, text)
    assert ok(cli(gw, "approve", approval_id, "--comment", "fine by me")) == f"approval {approval_id} is now approved\n"

    done = await log_call(gw, "token-agent-b", text)
    assert not done.is_error and done.content[0].text == "logged"
    fields = shown(ok(cli(gw, "show", approval_id)))
    assert fields["state"] == "used" and fields["comment"] == "fine by me"
    assert fields["decided by"].startswith("tests@example.com (approver) at ")
    assert fields["used by decision"] and "you may decide" not in fields
    again = await request_approval(gw, text)  # single use: the next identical call asks anew
    assert again != approval_id
    ok(cli(gw, "deny", again))


async def test_deny_is_recorded_and_the_retry_still_needs_an_approval(gw: Gateway) -> None:
    text = message("deny")
    approval_id = await request_approval(gw, text)
    result = cli(gw, "--admin-token", OWNER_TOKEN, "deny", approval_id, "--comment", "not this one", token=None)
    assert ok(result) == f"approval {approval_id} is now denied\n"

    fields = shown(ok(cli(gw, "show", approval_id)))
    assert fields["state"] == "denied" and fields["comment"] == "not this one"
    retry = await request_approval(gw, text)
    assert retry != approval_id
    ok(cli(gw, "deny", retry))


# --- refusals ------------------------------------------------------------------------------------


async def test_a_stranger_cannot_decide_and_is_told_who_can(gw: Gateway) -> None:
    approval_id = await request_approval(gw, message("stranger"))
    error = failed(cli(gw, "approve", approval_id, token=STRANGER_TOKEN))
    assert error == "narrowgate: HTTP 403: only the agent's owner (tests@example.com) may decide this request\n"
    assert row_of(ok(cli(gw, "list")), approval_id)[1] == "pending"  # nothing was decided
    ok(cli(gw, "deny", approval_id))


def test_an_unknown_approval_is_not_found(gw: Gateway) -> None:
    for args in (("show", "apr_nosuchapproval"), ("approve", "apr_nosuchapproval"), ("deny", "apr_nosuch/../x")):
        error = failed(cli(gw, *args))
        assert error.startswith("narrowgate: HTTP 404: "), error


async def test_deciding_twice_is_a_conflict(gw: Gateway) -> None:
    approval_id = await request_approval(gw, message("twice"))
    ok(cli(gw, "deny", approval_id))
    for action in ("approve", "deny"):
        error = failed(cli(gw, action, approval_id))
        assert error == f"narrowgate: HTTP 409: approval {approval_id} is already denied\n"


async def test_a_bad_or_missing_token_is_refused(gw: Gateway) -> None:
    approval_id = await request_approval(gw, message("token"))
    for args in (("list",), ("show", approval_id), ("approve", approval_id)):
        error = failed(cli(gw, *args, token="not-a-real-token"))
        assert error.startswith("narrowgate: HTTP 401: "), error
        assert "not-a-real-token" not in error
    missing = failed(cli(gw, "list", token=None))
    assert missing == "narrowgate: an admin token is required: --admin-token or NARROWGATE_ADMIN_TOKEN\n"
    agent = failed(cli(gw, "approve", approval_id, token="token-agent-b"))
    assert agent == "narrowgate: HTTP 403: agent credentials cannot use the admin API\n"
    assert row_of(ok(cli(gw, "list")), approval_id)[1] == "pending"
    ok(cli(gw, "deny", approval_id))
