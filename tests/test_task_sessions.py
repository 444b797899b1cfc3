"""Sessions opened with a task token end with the task (found by the soak, bench/soak.py).

Before: after `narrowgate__complete_task` the task token is refused, so the agent could neither use
nor DELETE the 2025-11-25 session it had opened with it; the session held one of the agent's
`limits.max_sessions_per_agent` slots until it idled out (an hour by default), and an agent doing
short tasks was refused new sessions (HTTP 429) after that many tasks. A real gateway, a real OIDC
issuer and the behaviour upstream; the cap is set to 2 so the third task shows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.identity_provider import TestIdentityProvider, generate_key
from tests.support.processes import ADMIN_TOKEN, Gateway, behaviour_manifest, free_port
from tests.test_bad_input import open_session, rpc, session_headers
from tests.test_tasks_e2e import COMPLETE, Deployment, exchange, granted

SUBJECT = "repo:acme/short-tasks:ref:refs/heads/main"
SESSION_CAP = 2


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("task-sessions")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    idp = TestIdentityProvider(f"{base}/mcp", keys=[generate_key("RS256")])
    behaviour_url = f"http://127.0.0.1:{behaviour_http}/mcp"
    gateway = Gateway(workdir, [behaviour_manifest("behav", {"url": behaviour_url}, timeout_s=10)], port=port,
                      extra_config={"identity": {"audience": f"{base}/mcp", "oidc_issuers": [{"issuer": idp.issuer}]},
                                    "limits": {"max_sessions_per_agent": SESSION_CAP}})
    try:
        gateway.start()
        agent = {"id": "short-tasks", "owner": "team@example.com", "purpose": "many short tasks", "state": "active",
                 "identities": [{"kind": "oidc", "issuer": idp.issuer, "subject": SUBJECT, "claims": {}}],
                 "entitlement": {"servers": ["behav"], "require_task": True}}
        response = httpx2.post(f"{base}/admin/v1/agents", json=agent,
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 201, response.text
        yield Deployment(gateway, idp, "", behaviour_url, Path(workdir / "unused.jsonl"))
    finally:
        gateway.stop()
        idp.close()


def test_completing_a_task_ends_its_sessions_and_frees_their_slots(deployment: Deployment) -> None:
    for n in range(SESSION_CAP + 1):
        grant = granted(exchange(deployment, deployment.idp.mint(sub=SUBJECT), "behav__echo"))
        # On the old code the third initialize was refused: HTTP 429, -32029 (limits.max_sessions_per_agent).
        session_id = open_session(deployment.gateway, grant.token)
        sent = session_headers(session_id, grant.token)
        done = httpx2.post(deployment.gateway.url, json=rpc("tools/call", {"name": COMPLETE, "arguments": {}}, 2),
                           headers=sent)
        # The request that ended the task still gets its own answer.
        assert done.status_code == 200, done.text
        assert "completed" in done.json()["result"]["content"][0]["text"], (n, done.text)
        # The session is gone with its task: even its agent's next token cannot reach it.
        other = granted(exchange(deployment, deployment.idp.mint(sub=SUBJECT), "behav__echo"))
        after = httpx2.post(deployment.gateway.url, json=rpc("tools/list", {}, 3),
                            headers=session_headers(session_id, other.token))
        assert after.status_code == 404, after.text
