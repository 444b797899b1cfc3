"""The tasks and keys admin API (`/admin/v1/tasks`, `/admin/v1/keys`) and the `narrowgate tasks|keys` CLI.

Everything runs against a real `narrowgate serve` process in front of the real behaviour upstream:
an orchestrator (the admin) starts a task for an agent and hands the task token to it; the agent
uses the token with the real `mcp` SDK client; the admin ends the task and the next call is refused.
Key rotation is observed where it matters: the JWKS the gateway serves, and the token the upstream
receives (the behaviour upstream's `whoami` returns the Authorization header it got).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx2
import jwt
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import ErrorData

from tests.support.admin import bearer, unique
from tests.support.clients import ERAS, mcp_client
from tests.support.processes import ADMIN_TOKEN, NARROWGATE, Gateway, behaviour_manifest, free_port

ACCESS_DENIED = -32030
STATIC_AGENT_TOKEN = "token-agent-a"  # agent-a: from the agents file, require_task false
TASKER_TOKEN = "token-tasker-static"  # the bare development token of the agent these tests create
ENTITLED = ["behav__echo", "behav__whoami", "behav__slow"]
BUILTINS = {"narrowgate__complete_task", "narrowgate__fail_task"}
WAIT_S = 15.0


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Gateway]:
    manifests = [behaviour_manifest("behav", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=5)]
    gateway = Gateway(tmp_path_factory.mktemp("tasks-admin"), manifests, tokens={"agent-a": STATIC_AGENT_TOKEN})
    # A static token for an agent that is not in the agents file: the tests register it themselves,
    # through the admin API, with the default require_task (true).
    gateway.extra_config = {"auth": {"static_tokens": [{"agent": "agent-a", "token": STATIC_AGENT_TOKEN},
                                                       {"agent": "tasker", "token": TASKER_TOKEN}]}}
    gateway.start()
    yield gateway
    gateway.stop()


class Admin:
    """The admin API over real HTTP, with one bearer token."""

    def __init__(self, gateway: Gateway, token: str | None = ADMIN_TOKEN) -> None:
        self.base = f"{gateway.base}/admin/v1"
        self.headers = bearer(token)

    def get(self, path: str, **params: str) -> httpx2.Response:
        return httpx2.get(f"{self.base}{path}", params=params, headers=self.headers)

    def post(self, path: str, body: Any = None, *, content: bytes | None = None) -> httpx2.Response:
        if content is not None:
            return httpx2.post(f"{self.base}{path}", content=content,
                               headers={**self.headers, "Content-Type": "application/json"})
        return httpx2.post(f"{self.base}{path}", json=body, headers=self.headers)

    def start(self, agent_id: str = "tasker", tools: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        response = self.post("/tasks", {"agent_id": agent_id, "purpose": "summarise issue 12",
                                        "tools": tools or ["behav__echo"], **extra})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def end(self, task_id: str, action: str, reason: str = "done") -> httpx2.Response:
        return self.post(f"/tasks/{task_id}/{action}", {"reason": reason})


def error_of(response: httpx2.Response) -> str:
    return str(response.json()["error"])


def agent_spec(agent_id: str, tools: list[str], **extra: Any) -> dict[str, Any]:
    return {"id": agent_id, "owner": "team-tools@example.com", "purpose": "works on tasks",
            "identities": [{"kind": "static", "issuer": "narrowgate", "subject": agent_id}],
            "entitlement": {"tools": tools}, **extra}


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Admin:
    return Admin(gw)


@pytest.fixture(scope="module")
def tasker(admin: Admin) -> str:
    """An active agent with a static identity, entitled to three behav tools, needing a task (the default)."""
    response = admin.post("/agents", agent_spec("tasker", ENTITLED, state="active"))
    assert response.status_code == 201, response.text
    assert response.json()["entitlement"]["require_task"] is True
    return "tasker"


async def rpc_error(call: Any) -> ErrorData:
    with pytest.raises(MCPError) as caught:
        async with asyncio.timeout(WAIT_S):
            await call
    return caught.value.error


async def tool_names(gw: Gateway, token: str, mode: str = ERAS[0]) -> set[str]:
    async with mcp_client(gw.url, token, mode) as client:
        return {t.name for t in (await client.list_tools()).tools}


def cli(gw: Gateway | None, *args: str, token: str | None = ADMIN_TOKEN,
        url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NARROWGATE_URL", "NARROWGATE_ADMIN_TOKEN")}
    env["NARROWGATE_URL"] = url or (gw.base if gw is not None else "")
    if token is not None:
        env["NARROWGATE_ADMIN_TOKEN"] = token
    return subprocess.run([str(NARROWGATE), "--log-level", "warning", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def refused_at_transport(gw: Gateway, token: str) -> str:
    """POST /mcp with `token` is refused with 403; returns the body."""
    response = httpx2.post(gw.url, headers={**bearer(token), "Accept": "application/json, text/event-stream"},
                           json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 403, response.text
    return response.text


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def jwks_kids(gw: Gateway) -> list[str]:
    return [k["kid"] for k in httpx2.get(f"{gw.base}/.well-known/jwks.json").json()["keys"]]


# --- admin authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/tasks"), ("POST", "/tasks"), ("GET", "/tasks/task_x"), ("POST", "/tasks/task_x/complete"),
    ("GET", "/keys"), ("POST", "/keys/rotate"),
])
def test_every_endpoint_needs_an_admin(gw: Gateway, tasker: str, method: str, path: str) -> None:
    kids = jwks_kids(gw)
    body = {"agent_id": "tasker", "purpose": "p", "tools": ["behav__echo"], "reason": "r"}
    for token, status in ((None, 401), ("not-the-admin-token-0123456789", 401), (STATIC_AGENT_TOKEN, 403),
                          (TASKER_TOKEN, 403)):
        admin = Admin(gw, token)
        response = admin.get(path) if method == "GET" else admin.post(path, body)
        assert response.status_code == status, (token, response.text)
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
        else:
            assert error_of(response) == "agent credentials cannot use the admin API"
        assert "not-the-admin-token" not in response.text
    assert jwks_kids(gw) == kids  # no rotation happened
    assert [t for t in Admin(gw).get("/tasks").json()["tasks"] if t["purpose"] == "p"] == []  # no task started


def test_a_task_token_is_no_admin_credential(gw: Gateway, admin: Admin, tasker: str) -> None:
    token = admin.start()["token"]
    for response in (Admin(gw, token).get("/tasks"), Admin(gw, token).post("/keys/rotate", {})):
        assert response.status_code in (401, 403), response.text
        assert token.rpartition(".")[2] not in response.text


# --- start: the task token at /mcp ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_started_task_token_lists_and_calls_only_the_tasks_tools(gw: Gateway, admin: Admin, tasker: str,
                                                                        mode: str) -> None:
    answer = admin.start(tools=["behav__echo", "behav__whoami"], deadline_s=600, budget=10,
                         reason="orchestrator run 7")
    task, token = answer["task"], answer["token"]
    assert task["id"].startswith("task_")
    assert (task["agent_id"], task["state"], task["started_by"]) == ("tasker", "active", "admin:test-admin")
    assert task["tools"] == ["behav__echo", "behav__whoami"] and task["budget"] == 10
    assert task["purpose"] == "summarise issue 12"
    assert task["deadline"] - task["started_at"] == pytest.approx(600)
    assert 0 < answer["expires_in"] <= 600
    header, claims = jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})
    assert header["typ"] == "at+jwt"
    assert (claims["sub"], claims["task_id"], claims["aud"]) == ("tasker", task["id"], gw.url)
    assert claims["exp"] <= task["deadline"]

    async with mcp_client(gw.url, token, mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"behav__echo", "behav__whoami"} | BUILTINS
        assert (await client.call_tool("behav__echo", {"text": "in task"})).content[0].text == "in task"
        # Entitled to the agent, but not part of this task.
        error = await rpc_error(client.call_tool("behav__slow", {"seconds": 0}))
        assert error.code == ACCESS_DENIED
        assert error.message == f"Access denied: behav__slow is not part of task {task['id']}"
        # Neither entitled nor in the task.
        error = await rpc_error(client.call_tool("behav__log", {"message": "x"}))
        assert error.code == ACCESS_DENIED
    shown = admin.get(f"/tasks/{task['id']}").json()
    assert shown["calls_made"] == 1 and shown["state"] == "active"


async def test_bare_static_token_of_a_task_requiring_agent_gets_nothing(gw: Gateway, tasker: str) -> None:
    assert await tool_names(gw, TASKER_TOKEN) == set()
    async with mcp_client(gw.url, TASKER_TOKEN, ERAS[0]) as client:
        error = await rpc_error(client.call_tool("behav__echo", {"text": "no task"}))
    assert error.code == ACCESS_DENIED
    assert error.message.startswith("Access denied: this agent needs a task token")
    # The agents file's development agent (require_task false) calls within its entitlement as before.
    async with mcp_client(gw.url, STATIC_AGENT_TOKEN, ERAS[0]) as client:
        assert (await client.call_tool("behav__echo", {"text": "bare"})).content[0].text == "bare"


@pytest.mark.parametrize("mode", ERAS)
async def test_completing_through_the_admin_api_refuses_the_next_call(gw: Gateway, admin: Admin, tasker: str,
                                                                      mode: str) -> None:
    answer = admin.start()
    task_id = answer["task"]["id"]
    async with mcp_client(gw.url, answer["token"], mode) as client:
        assert (await client.call_tool("behav__echo", {"text": "before"})).content[0].text == "before"
        ended = admin.end(task_id, "complete", "summary posted")
        assert ended.status_code == 200, ended.text
        body = ended.json()
        assert (body["id"], body["state"], body["end_reason"]) == (task_id, "completed", "summary posted")
        assert body["calls_made"] == 1 and body["ended_at"] is not None
        # Refused at the transport (403) or as a JSON-RPC access denial: never a result.
        error = await rpc_error(client.call_tool("behav__echo", {"text": "after completion"}))
        assert "after completion" not in str(error)
    assert "completed" in refused_at_transport(gw, answer["token"])


async def test_revoke_ends_the_task_and_records_who_and_why(gw: Gateway, admin: Admin, tasker: str) -> None:
    answer = admin.start()
    task_id = answer["task"]["id"]
    revoked = admin.end(task_id, "revoke", "orchestrator cancelled the run")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert "revoked" in refused_at_transport(gw, answer["token"])
    shown = admin.get(f"/tasks/{task_id}").json()
    assert shown["state"] == "revoked" and shown["end_reason"] == "orchestrator cancelled the run"
    assert [(e["from_state"], e["to_state"], e["actor"], e["reason"]) for e in shown["events"]] == [
        (None, "active", "admin:test-admin", "summarise issue 12"),
        ("active", "revoked", "admin:test-admin", "orchestrator cancelled the run"),
    ]


async def test_fail_ends_the_task(gw: Gateway, admin: Admin, tasker: str) -> None:
    task_id = admin.start()["task"]["id"]
    failed = admin.end(task_id, "fail", "upstream kept timing out")
    assert failed.status_code == 200 and failed.json()["state"] == "failed"


async def test_budget_allows_exactly_n_calls(gw: Gateway, admin: Admin, tasker: str) -> None:
    answer = admin.start(budget=2)
    task_id = answer["task"]["id"]
    async with mcp_client(gw.url, answer["token"], ERAS[0]) as client:
        for n in range(2):
            assert (await client.call_tool("behav__echo", {"text": f"call {n}"})).content[0].text == f"call {n}"
        error = await rpc_error(client.call_tool("behav__echo", {"text": "one too many"}))
        assert error.code == ACCESS_DENIED
        assert error.message == f"Access denied: task {task_id}: call budget exhausted"
        # Still active: the agent can report it done.
        result = await client.call_tool("narrowgate__complete_task", {"reason": "used my two calls"})
        assert result.content[0].text == f"Task {task_id} is completed; its grants have ended."
    shown = admin.get(f"/tasks/{task_id}").json()
    assert (shown["state"], shown["calls_made"], shown["budget"]) == ("completed", 2, 2)
    assert shown["events"][-1]["actor"] == "agent:tasker"


# --- start: refusals -----------------------------------------------------------------------------


def test_unknown_agent_is_404(admin: Admin, tasker: str) -> None:
    response = admin.post("/tasks", {"agent_id": "nobody-here", "purpose": "p", "tools": ["behav__echo"]})
    assert response.status_code == 404, response.text
    assert error_of(response) == "no agent 'nobody-here'"


def test_tools_outside_the_entitlement_are_named_not_trimmed(admin: Admin, tasker: str) -> None:
    body = {"agent_id": "tasker", "purpose": "p", "tools": ["behav__echo", "behav__log", "behav__crash"]}
    response = admin.post("/tasks", body)
    assert response.status_code == 400, response.text
    assert error_of(response) == "tool(s) outside agent 'tasker''s entitlement: behav__log, behav__crash"
    assert response.json()["outside"] == ["behav__log", "behav__crash"]
    trimmed = admin.post("/tasks", {**body, "trim": True})
    assert trimmed.status_code == 201, trimmed.text
    assert trimmed.json()["task"]["tools"] == ["behav__echo"]
    assert jwt.decode(trimmed.json()["token"], options={"verify_signature": False})["scope"] == "behav__echo"


def test_unknown_tools_are_400(admin: Admin, tasker: str) -> None:
    response = admin.post("/tasks", {"agent_id": "tasker", "purpose": "p", "tools": ["behav__echo", "behav__nope"]})
    assert response.status_code == 400, response.text
    assert error_of(response) == "unknown tool(s): behav__nope"
    assert response.json()["unknown"] == ["behav__nope"]
    # Trimming everything away is refused rather than starting a task that can do nothing.
    response = admin.post("/tasks", {"agent_id": "tasker", "purpose": "p", "tools": ["behav__log"], "trim": True})
    assert response.status_code == 400
    assert "none of the requested tools" in error_of(response)


def test_inactive_agents_are_409(admin: Admin) -> None:
    pending = unique("pending")
    assert admin.post("/agents", agent_spec(pending, ENTITLED)).status_code == 201  # pending by default
    response = admin.post("/tasks", {"agent_id": pending, "purpose": "p", "tools": ["behav__echo"]})
    assert response.status_code == 409, response.text
    assert error_of(response) == f"agent {pending!r} is pending; only active agents can start tasks"
    suspended = unique("suspended")
    assert admin.post("/agents", agent_spec(suspended, ENTITLED, state="active")).status_code == 201
    assert admin.post(f"/agents/{suspended}/suspend", {"reason": "test"}).status_code == 200
    response = admin.post("/tasks", {"agent_id": suspended, "purpose": "p", "tools": ["behav__echo"]})
    assert response.status_code == 409
    assert "suspended" in error_of(response)


@pytest.mark.parametrize(("body", "fragment"), [
    ({"purpose": "p", "tools": ["behav__echo"]}, "agent_id is required"),
    ({"agent_id": "tasker", "tools": ["behav__echo"]}, "purpose is required"),
    ({"agent_id": "tasker", "purpose": "  ", "tools": ["behav__echo"]}, "purpose is required"),
    ({"agent_id": "tasker", "purpose": "p"}, "tools is required"),
    ({"agent_id": "tasker", "purpose": "p", "tools": "behav__echo"}, "tools is required"),
    ({"agent_id": "tasker", "purpose": "p", "tools": []}, "name at least one tool"),
    ({"agent_id": "tasker", "purpose": "p", "tools": [7]}, "tool names must be non-empty strings"),
    ({"agent_id": "tasker", "purpose": "p", "tools": ["behav__echo"], "deadline_s": -5}, "at least 1 second"),
    ({"agent_id": "tasker", "purpose": "p", "tools": ["behav__echo"], "deadline_s": 0.5}, "at least 1 second"),
    ({"agent_id": "tasker", "purpose": "p", "tools": ["behav__echo"], "deadline_s": "soon"}, "deadline_s must"),
    ({"agent_id": "tasker", "purpose": "p", "tools": ["behav__echo"], "budget": 0}, "budget must be"),
    ({"agent_id": "tasker", "purpose": "p", "tools": ["behav__echo"], "budget": 1.5}, "budget must be"),
    ({"agent_id": "tasker", "purpose": "p", "tools": ["behav__echo"], "trim": "yes"}, "trim must be"),
    ({"agent_id": "tasker", "purpose": "p", "tools": ["behav__echo"], "tool": ["x"]}, "unknown field(s): tool"),
])
def test_bad_start_requests_are_400(admin: Admin, tasker: str, body: dict[str, Any], fragment: str) -> None:
    before = len(admin.get("/tasks").json()["tasks"])
    response = admin.post("/tasks", body)
    assert response.status_code == 400, response.text
    assert fragment in error_of(response)
    assert len(admin.get("/tasks").json()["tasks"]) == before  # nothing was started


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]"])
def test_malformed_bodies_are_400(admin: Admin, content: bytes) -> None:
    assert admin.post("/tasks", content=content).status_code == 400
    assert admin.post("/keys/rotate", content=content).status_code == 400


# --- list, show, end -----------------------------------------------------------------------------


def test_list_filters_by_agent_and_state(admin: Admin, tasker: str) -> None:
    active = admin.start()["task"]["id"]
    done = admin.start()["task"]["id"]
    assert admin.end(done, "complete").status_code == 200
    ids = {t["id"]: t["state"] for t in admin.get("/tasks", agent="tasker").json()["tasks"]}
    assert ids[active] == "active" and ids[done] == "completed"
    actives = admin.get("/tasks", agent="tasker", state="active").json()["tasks"]
    assert active in {t["id"] for t in actives} and done not in {t["id"] for t in actives}
    assert all(t["state"] == "active" and t["agent_id"] == "tasker" for t in actives)
    assert admin.get("/tasks", agent="agent-a").json()["tasks"] == []
    bad = admin.get("/tasks", state="finished")
    assert bad.status_code == 400 and "unknown state 'finished'" in error_of(bad)


def test_show_ending_and_their_errors(admin: Admin, tasker: str) -> None:
    task_id = admin.start()["task"]["id"]
    missing = admin.end(task_id, "complete", "  ")
    assert missing.status_code == 400 and error_of(missing) == "a reason is required to end a task"
    assert admin.post(f"/tasks/{task_id}/complete", {}).status_code == 400
    assert admin.get(f"/tasks/{task_id}").json()["state"] == "active"  # nothing happened
    assert admin.end(task_id, "complete").status_code == 200
    for action in ("complete", "fail", "revoke"):
        again = admin.end(task_id, action)
        assert again.status_code == 409, again.text
        assert error_of(again) == f"task {task_id} already ended: task completed: done"
    assert admin.get(f"/tasks/{task_id}").json()["state"] == "completed"
    unknown = admin.end("task_nope", "complete")
    assert unknown.status_code == 404 and error_of(unknown) == "no task 'task_nope'"
    assert admin.get("/tasks/task_nope").status_code == 404
    bad_action = admin.end(task_id, "finish")
    assert bad_action.status_code == 404 and "unknown action 'finish'" in error_of(bad_action)


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_start_prints_id_deadline_and_token(gw: Gateway, admin: Admin, tasker: str) -> None:
    run = cli(gw, "tasks", "start", "tasker", "--purpose", "cli run", "--tool", "behav__echo",
              "--tool", "behav__log", "--deadline", "300", "--budget", "4", "--trim")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    task_id = lines[0].split()[1]
    task = admin.get(f"/tasks/{task_id}").json()
    assert (task["purpose"], task["tools"], task["budget"]) == ("cli run", ["behav__echo"], 4)
    token = lines[-1]
    expires_in = jwt.decode(token, options={"verify_signature": False})["exp"] - jwt.decode(
        token, options={"verify_signature": False})["iat"]
    assert lines == [
        f"task {task_id} started for agent tasker",
        "tools: behav__echo",
        "trimmed (not granted): behav__log",
        f"deadline: {when(task['deadline'])}  budget: 4 call(s)",
        f"task token (expires in {expires_in} s):",
        token,
    ]
    assert run.stderr == ""
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["task_id"], claims["scope"]) == (task_id, "behav__echo")


def test_cli_start_refusals(gw: Gateway, tasker: str) -> None:
    run = cli(gw, "tasks", "start", "tasker", "--purpose", "p", "--tool", "behav__log")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == "narrowgate: HTTP 400: tool(s) outside agent 'tasker''s entitlement: behav__log\n"
    run = cli(gw, "tasks", "start", "nobody", "--purpose", "p", "--tool", "behav__echo")
    assert (run.returncode, run.stderr) == (1, "narrowgate: HTTP 404: no agent 'nobody'\n")
    run = cli(gw, "tasks", "start", "tasker", "--purpose", "p")  # no --tool: argparse
    assert run.returncode == 2 and "--tool" in run.stderr


async def test_cli_list_show_and_end(gw: Gateway, admin: Admin, tasker: str) -> None:
    answer = admin.start(budget=3, deadline_s=900)
    task_id = answer["task"]["id"]
    async with mcp_client(gw.url, answer["token"], ERAS[0]) as client:
        await client.call_tool("behav__echo", {"text": "counted"})
    task = admin.get(f"/tasks/{task_id}").json()

    listed = cli(gw, "tasks", "list", "--agent", "tasker", "--state", "active")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "AGENT", "STATE", "CALLS", "DEADLINE", "PURPOSE"]
    [row] = [r for r in rows if r.startswith(task_id)]
    assert row.split() == [task_id, "tasker", "active", "1/3", when(task["deadline"]), "summarise", "issue", "12"]
    assert all(r.split()[2] == "active" for r in rows)

    ended = cli(gw, "tasks", "complete", task_id, "--reason", "finished via cli")
    assert (ended.returncode, ended.stdout, ended.stderr) == (0, f"task {task_id} is now completed\n", "")
    again = cli(gw, "tasks", "revoke", task_id, "--reason", "again")
    assert again.returncode == 1
    assert again.stderr == f"narrowgate: HTTP 409: task {task_id} already ended: task completed: finished via cli\n"

    shown = cli(gw, "tasks", "show", task_id)
    assert shown.returncode == 0, shown.stderr
    task = admin.get(f"/tasks/{task_id}").json()
    history = shown.stdout.split("history:\n")[1].splitlines()
    assert history == [
        f"  {when(task['events'][0]['at'])}  - -> active  by admin:test-admin: summarise issue 12",
        f"  {when(task['events'][1]['at'])}  active -> completed  by admin:test-admin: finished via cli",
    ]
    assert '"state": "completed"' in shown.stdout and '"calls_made": 1' in shown.stdout

    for action in ("fail", "revoke"):
        other = admin.start()["task"]["id"]
        run = cli(gw, "tasks", action, other, "--reason", f"{action} via cli")
        expected = {"fail": "failed", "revoke": "revoked"}[action]
        assert (run.returncode, run.stdout) == (0, f"task {other} is now {expected}\n")
    missing_reason = cli(gw, "tasks", "complete", task_id)
    assert missing_reason.returncode == 2 and "--reason" in missing_reason.stderr
    unknown = cli(gw, "tasks", "show", "task_nope")
    assert (unknown.returncode, unknown.stderr) == (1, "narrowgate: HTTP 404: no task 'task_nope'\n")


def test_cli_admin_credentials_and_reachability(gw: Gateway) -> None:
    wrong = cli(gw, "tasks", "list", token="not-the-admin-token-0123456789")
    assert (wrong.returncode, wrong.stdout) == (1, "")
    assert wrong.stderr.startswith("narrowgate: HTTP 401: ") and "not-the-admin-token" not in wrong.stderr
    agent = cli(gw, "keys", "rotate", token=STATIC_AGENT_TOKEN)
    assert (agent.returncode, agent.stderr) == (1, "narrowgate: HTTP 403: agent credentials cannot use the admin API\n")
    none = cli(gw, "keys", "list", token=None)
    assert none.returncode == 1
    assert none.stderr == "narrowgate: an admin token is required: --admin-token or NARROWGATE_ADMIN_TOKEN\n"
    # The options also work explicitly, overriding the environment.
    explicit = cli(gw, "tasks", "--gateway", gw.base, "--admin-token", ADMIN_TOKEN, "list", token="wrong-token")
    assert explicit.returncode == 0, explicit.stderr
    dead = f"http://127.0.0.1:{free_port()}"
    for args in (("tasks", "list"), ("keys", "list")):
        unreachable = cli(None, *args, url=dead)
        assert unreachable.returncode == 1
        assert unreachable.stderr.startswith(f"narrowgate: cannot reach the gateway at {dead}: ")
        assert "Connection refused" in unreachable.stderr


# --- keys ----------------------------------------------------------------------------------------


def test_keys_list_shows_the_jwks(gw: Gateway, admin: Admin) -> None:
    answer = admin.get("/keys").json()
    served = httpx2.get(f"{gw.base}/.well-known/jwks.json").json()
    assert answer["keys"] == served["keys"]
    assert answer["current_kid"] == served["keys"][0]["kid"]
    assert all(set(k) == {"kty", "crv", "x", "y", "kid", "alg", "use"} for k in answer["keys"])
    run = cli(gw, "keys", "list")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["KID", "ALG", "STATE"]
    assert lines[1].split() == [answer["current_kid"], "ES256", "current"]
    assert [line.split() for line in lines[2:]] == [[k["kid"], "ES256", "previous"] for k in answer["keys"][1:]]


@pytest.mark.parametrize(("overlap", "fragment"), [
    (959, "at least 960 s"), (-1, "at least 960 s"), ("an hour", "must be a number"), (True, "must be a number"),
    (10**9, "at most"),
])
def test_rotate_refuses_bad_overlaps(gw: Gateway, admin: Admin, overlap: Any, fragment: str) -> None:
    kids = jwks_kids(gw)
    response = admin.post("/keys/rotate", {"overlap_s": overlap})
    assert response.status_code == 400, response.text
    assert fragment in error_of(response)
    assert jwks_kids(gw) == kids
    assert admin.post("/keys/rotate", {"overlap": 100}).status_code == 400  # unknown field


async def test_rotate_serves_both_keys_and_signs_new_upstream_tokens_with_the_new_one(
    gw: Gateway, admin: Admin, tasker: str
) -> None:
    old_kid = admin.get("/keys").json()["current_kid"]
    answer = admin.start(tools=["behav__whoami"])  # a task token signed with the old key
    assert jwt.get_unverified_header(answer["token"])["kid"] == old_kid

    async with mcp_client(gw.url, answer["token"], ERAS[0]) as client:
        before = (await client.call_tool("behav__whoami", {})).structured_content
    assert upstream_kid(before) == old_kid

    run = cli(gw, "keys", "rotate", "--overlap", "1000")
    assert run.returncode == 0, run.stderr
    new_kid = admin.get("/keys").json()["current_kid"]
    assert new_kid != old_kid
    lines = run.stdout.splitlines()
    assert lines[0] == f"signing key rotated: {new_kid} is current"
    assert f"previous key {old_kid} stays in the JWKS for up to 1000 s" in lines[1:]

    kids = jwks_kids(gw)
    assert kids[0] == new_kid and old_kid in kids

    # The old task token still works inside the overlap, and what reaches the upstream is new.
    async with mcp_client(gw.url, answer["token"], ERAS[1]) as client:
        after = (await client.call_tool("behav__whoami", {})).structured_content
    assert upstream_kid(after) == new_kid
    # New task tokens are signed with the new key too.
    assert jwt.get_unverified_header(admin.start()["token"])["kid"] == new_kid

    default = admin.post("/keys/rotate", {})
    assert default.status_code == 200, default.text
    body = default.json()
    assert body["overlap_s"] == 3600 and body["current_kid"] not in (old_kid, new_kid)
    assert new_kid in body["previous"] and old_kid in body["previous"]
    assert jwks_kids(gw)[0] == body["current_kid"]


def upstream_kid(whoami: dict[str, Any] | None) -> str:
    assert whoami is not None and whoami["transport"] == "http"
    scheme, _, token = whoami["headers"]["authorization"].partition(" ")
    assert scheme == "Bearer"
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert jwt.decode(token, options={"verify_signature": False})["scope"] == "whoami"
    return str(header["kid"])
