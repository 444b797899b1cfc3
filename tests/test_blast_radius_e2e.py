"""Blast radius end to end: a real `narrowgate serve`, its admin API, the CLI and the console in Chromium.

The truth is known from the catalog and the policies the test writes: `agent-a` is entitled to both
servers; `crm__echo` reads personal data, `mail__echo` sends data out (egress), `crm__crash` is
destructive (step-up by the shipped rule). Policy changes are written to the gateway's policy directory
and reloaded through the admin API; the figures move exactly as those policies say.
"""

from __future__ import annotations

import html
import json
import os
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from selenium.webdriver.common.by import By

from tests.support.admin import bearer
from tests.support.browser import chromium, sign_in
from tests.support.console import Browser
from tests.support.processes import ADMIN_TOKEN, NARROWGATE, Gateway, behaviour_manifest, cedar_copy

APPROVER_TOKEN = "blast-approver-token"
AGENT_TOKEN = "token-agent-a"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FORBID_AND_STEP_UP = """\
@id("forbid-whoami")
forbid (principal, action == Action::"mail__whoami", resource);

@id("step-up-crm-log")
@step_up
@approvers("crm-owners")
forbid (principal, action == Action::"crm__log", resource) unless { context.approval.granted };
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Gateway]:
    upstream = {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}
    crm = behaviour_manifest("crm", upstream, tools=("echo", "log", "crash"))
    crm["tools"][0]["data_classes"] = ["pii"]
    crm["tools"][1]["risk"] = "write"
    crm["tools"][2]["risk"] = "destructive"
    mail = behaviour_manifest("mail", upstream, tools=("echo", "whoami"))
    mail["tools"][0].update(risk="write", egress=True, data_classes=[])
    workdir = tmp_path_factory.mktemp("blast-radius")
    gateway = Gateway(workdir, [crm, mail], extra_config={
        "policies": str(cedar_copy(workdir / "cedar")),
        "admin": {"tokens": [{"name": "test-admin", "token": ADMIN_TOKEN},
                             {"name": "approver@example.com", "token": APPROVER_TOKEN, "role": "approver"}]},
        "monitoring": {"kill_switch_severity": "critical", "per_agent": {"calls": 30, "per_s": 60},
                       "per_task": {"calls": 10, "per_s": 60}},
        "tokens": {"task_ttl_s": 300, "upstream_ttl_s": 30},
    })
    gateway.start()
    yield gateway
    gateway.stop()


def blast(gw: Gateway, agent: str, **query: str) -> dict[str, Any]:
    response = httpx2.get(f"{gw.base}/admin/v1/blast-radius/{agent}", params=query, headers=bearer(ADMIN_TOKEN),
                          timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def reload(gw: Gateway) -> str:
    response = httpx2.post(f"{gw.base}/admin/v1/policies/reload", headers=bearer(ADMIN_TOKEN), timeout=30)
    assert response.status_code == 200 and response.json()["ok"], response.text
    return str(response.json()["version"])


def cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NARROWGATE_URL": gw.base, "NARROWGATE_ADMIN_TOKEN": ADMIN_TOKEN}
    return subprocess.run([str(NARROWGATE), "blast-radius", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def tools(section: dict[str, Any]) -> set[str]:
    return {t["tool"] for t in section["tools"]}


def test_blast_radius_before_and_after_a_policy_change(gw: Gateway) -> None:
    policies = gw.workdir / "cedar" / "policies"
    before = blast(gw, "agent-a")
    free = before["without_approval"]
    assert tools(free) == {"crm__echo", "crm__log", "mail__echo", "mail__whoami"}
    assert free["by_risk"] == {"read": 2, "write": 2, "privileged": 0, "destructive": 0}
    assert free["by_data_class"] == {"(none)": 1, "internal": 2, "pii": 1}
    assert before["egress"] == ["mail__echo"]
    assert [t["tool"] for t in before["needs_approval"]] == ["crm__crash"]
    chain = before["sensitive_then_egress"]  # the shipped chain rule holds the egress after the pii read
    assert chain["possible_without_approval"] is False and chain["paths"] == []
    assert chain["held_for_approval"] == [{"read": "crm__echo", "egress": "mail__echo", "verdict": "step_up",
                                           "policy_ids": ["no-egress-after-sensitive-read"]}]
    assert before["max_calls_per_hour"] == 1800 and before["rate_limits"] == ["per agent: 30 calls per 60 s"]
    credential = before["credential"]
    assert credential["task_token_s"] == 300 and credential["upstream_token_s"] == 30
    assert credential["longest_s"] is None  # a static token without an agent expiry: no bound
    chain_rule = (policies / "60-chain.cedar").read_text()
    try:
        (policies / "80-tests.cedar").write_text(FORBID_AND_STEP_UP)
        reload(gw)
        after = blast(gw, "agent-a")
        assert after["policy_version"] != before["policy_version"]
        assert tools(after["without_approval"]) == {"crm__echo", "mail__echo"}
        assert after["without_approval"]["by_risk"] == {"read": 1, "write": 1, "privileged": 0, "destructive": 0}
        assert {t["tool"]: t["approvers"] for t in after["needs_approval"]} == {"crm__crash": None,
                                                                               "crm__log": "crm-owners"}
        assert after["denied"] == before["denied"] + 1  # mail__whoami
        assert after["score"] < before["score"]
        (policies / "60-chain.cedar").unlink()
        reload(gw)
        unchained = blast(gw, "agent-a")["sensitive_then_egress"]
        assert unchained["possible_without_approval"] is True
        assert [(p["read"], p["egress"]) for p in unchained["paths"]] == [("crm__echo", "mail__echo")]
        assert unchained["held_for_approval"] == []
    finally:
        (policies / "80-tests.cedar").unlink(missing_ok=True)
        (policies / "60-chain.cedar").write_text(chain_rule)
        reload(gw)
    assert blast(gw, "agent-a")["without_approval"] == before["without_approval"]


def test_under_a_task_and_through_the_cli(gw: Gateway) -> None:
    started = httpx2.post(f"{gw.base}/admin/v1/tasks", headers=bearer(ADMIN_TOKEN), timeout=30, json={
        "agent_id": "agent-a", "purpose": "look one customer up", "tools": ["crm__echo", "crm__crash"],
        "budget": 5, "deadline_s": 120})
    assert started.status_code == 201, started.text
    task_id = started.json()["task"]["id"]
    done = cli(gw, "agent-a", "--task", task_id, "--format", "json")
    assert done.returncode == 0, done.stderr
    scoped = json.loads(done.stdout)
    assert scoped["task_id"] == task_id and tools(scoped["without_approval"]) == {"crm__echo"}
    assert scoped["egress"] == [] and [t["tool"] for t in scoped["needs_approval"]] == ["crm__crash"]
    assert scoped["max_calls_per_hour"] == 5 and scoped["rate_limits"] == ["task budget: 5 call(s) left"]
    assert 100 < scoped["credential"]["task_token_s"] <= 120  # the task's deadline comes before the 300 s ttl
    table = cli(gw, "agent-a")
    assert table.returncode == 0, table.stderr
    assert "without approval: 4 tool(s): 2 read, 2 write, 0 privileged, 0 destructive" in table.stdout
    assert "sensitive read -> egress without approval: no" in table.stdout
    assert "most calls per hour: 1800 (per agent: 30 calls per 60 s)" in table.stdout
    fleet = cli(gw)
    assert fleet.returncode == 0 and fleet.stdout.splitlines()[1].startswith("agent-a ")
    for args, what in ((("nobody",), "no agent 'nobody'"), (("agent-a", "--task", "task_nope"), "no task 'task_nope'")):
        refused = cli(gw, *args)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and what in refused.stderr and "HTTP 404" in refused.stderr
    missing = httpx2.get(f"{gw.base}/admin/v1/blast-radius/nobody", headers=bearer(ADMIN_TOKEN), timeout=30)
    assert missing.status_code == 404


def test_a_tool_a_token_claim_could_open_is_a_caveat_in_json_and_table(gw: Gateway) -> None:
    policies = gw.workdir / "cedar" / "policies"
    assert blast(gw, "agent-a")["caveats"] == []
    try:
        (policies / "80-claims.cedar").write_text(
            '@id("whoami-on-call-only")\nforbid (principal, action == Action::"mail__whoami", resource)\n'
            'unless { principal.claims.hasTag("on_call") };\n')
        reload(gw)
        body = blast(gw, "agent-a")
        assert "mail__whoami" not in tools(body["without_approval"])  # no claim is assumed
        assert body["caveats"] == ["mail__whoami: reported deny, but allow when token claims meet "
                                   "whoami-on-call-only (the reach does not model them)"]
        table = cli(gw, "agent-a")
        assert table.returncode == 0, table.stderr
        assert f"caveat: {body['caveats'][0]}" in table.stdout.splitlines()
        console = Browser(gw).signed_in(ADMIN_TOKEN)
        try:
            page = console.get("/console/blast-radius/agent-a")
            assert page.status_code == 200 and 'id="caveats"' in page.text
            assert html.escape(body["caveats"][0], quote=False) in page.text
        finally:
            console.close()
    finally:
        (policies / "80-claims.cedar").unlink(missing_ok=True)
        reload(gw)


def test_the_fleet_ranks_agents_and_only_admins_see_it(gw: Gateway) -> None:
    created = httpx2.post(f"{gw.base}/admin/v1/agents", headers=bearer(ADMIN_TOKEN), timeout=30, json={
        "id": "reader", "owner": "tests@example.com", "purpose": "reads", "state": "active",
        "identities": [{"kind": "static", "issuer": "narrowgate", "subject": "reader"}],
        "entitlement": {"tools": ["mail__whoami"], "servers": [], "require_task": False}})
    assert created.status_code in (201, 409), created.text
    pending = httpx2.post(f"{gw.base}/admin/v1/agents", headers=bearer(ADMIN_TOKEN), timeout=30, json={
        "id": "dormant", "owner": "tests@example.com", "purpose": "not yet approved", "state": "pending",
        "identities": [{"kind": "static", "issuer": "narrowgate", "subject": "dormant"}],
        "entitlement": {"tools": ["mail__whoami"], "servers": [], "require_task": False}})
    assert pending.status_code in (201, 409), pending.text
    fleet = httpx2.get(f"{gw.base}/admin/v1/blast-radius", headers=bearer(ADMIN_TOKEN), timeout=30).json()
    ranked = [row["agent_id"] for row in fleet["agents"]]
    assert ranked == ["agent-a", "reader"]  # a pending agent is refused at authentication: nothing acts as it
    assert fleet["agents"][1]["without_approval"] == 1 and fleet["agents"][1]["score"] == 1
    for path in ("/admin/v1/blast-radius", "/admin/v1/blast-radius/agent-a"):
        for token, status in ((None, 401), (AGENT_TOKEN, 403), (APPROVER_TOKEN, 403)):
            refused = httpx2.get(f"{gw.base}{path}", headers=bearer(token), timeout=30)
            assert refused.status_code == status, (path, token, refused.text)
            assert "agents" not in refused.json() and "without_approval" not in refused.json()


def test_the_picture_and_the_console_page_in_chromium(gw: Gateway, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SE_OFFLINE", "true")
    drawn = cli(gw, "agent-a", "--format", "svg")
    assert drawn.returncode == 0 and drawn.stdout.startswith("<svg "), drawn.stderr
    svg = tmp_path / "agent-a.svg"
    svg.write_text(drawn.stdout)
    driver = chromium(tmp_path / "chromium")
    try:
        driver.get(svg.as_uri())
        shown = {e.get_attribute("data-tool"): e.get_attribute("data-verdict")
                 for e in driver.find_elements(By.CSS_SELECTOR, "g.tool")}
        assert shown == {"crm__echo": "allow", "crm__log": "allow", "mail__echo": "allow", "mail__whoami": "allow",
                         "crm__crash": "step_up"}
        assert_png(driver.get_screenshot_as_png(), tmp_path / "blast-svg.png")

        wait = sign_in(driver, f"{gw.base}/console/blast-radius/agent-a", ADMIN_TOKEN)
        wait.until(lambda d: d.find_elements(By.ID, "blast-picture"))
        picture = driver.find_element(By.ID, "blast-picture")
        assert {e.get_attribute("data-tool") for e in picture.find_elements(By.CSS_SELECTOR, "g.tool")} == set(shown)
        assert picture.size["height"] > 150 and picture.size["width"] > 500  # drawn, not blocked by the CSP
        assert driver.find_element(By.ID, "without-approval").text.startswith("4 tool(s)")
        assert "crm__crash" in driver.find_element(By.ID, "needs-approval").text
        assert "not possible without approval" in driver.find_element(By.ID, "sensitive-then-egress").text
        assert_png(driver.get_screenshot_as_png(), tmp_path / "blast-console.png")
        driver.get(f"{gw.base}/console/blast-radius")
        wait.until(lambda d: d.find_elements(By.ID, "blast-fleet"))
        rows = [r.get_attribute("data-agent-id") for r in driver.find_elements(By.CSS_SELECTOR, "tr.blast-row")]
        assert rows[0] == "agent-a"

        driver.delete_all_cookies()  # now an approver: the page is refused
        wait = sign_in(driver, f"{gw.base}/console/blast-radius/agent-a", APPROVER_TOKEN)
        wait.until(lambda d: "Only admins" in d.page_source)
        assert not driver.find_elements(By.ID, "blast-picture")
        assert not driver.find_elements(By.CSS_SELECTOR, 'a[href="/console/blast-radius"]')  # no nav link either
        driver.get(f"{gw.base}/console/blast-radius")  # nor the fleet's ranking
        wait.until(lambda d: "Only admins" in d.page_source)
        assert not driver.find_elements(By.ID, "blast-fleet")
    finally:
        driver.quit()


def assert_png(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000, len(data)
    width, height = struct.unpack(">II", data[16:24])
    assert width > 500 and height > 300
    assert time.time() - path.stat().st_mtime < 60
