"""Right-sizing from observed use, end to end on a real gateway with scripted traffic whose truth is known.

`sizer` is granted 9 tools (the 6 of `behav` by server, 3 of `side` by name; `behav__crash` needs an
approval) and calls 2 of them; it also tries one tool it is not granted (denied) and the step-up one
(refused: nobody approves), neither of which is use. `watcher` is granted one tool by its entitlement and
one by an extra Cedar permit, and calls nothing. `api-bot` is registered through the admin API.
Before any traffic the window holds no recorded decision: the report says so instead of a 0% or 100%.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp.shared.exceptions import MCPError
from selenium.webdriver.common.by import By

from gateway.cli.policy import agent_from_file
from gateway.registry.agents_file import parse_agents_file
from tests.support.admin import bearer
from tests.support.browser import chromium, sign_in
from tests.support.clients import mcp_client
from tests.support.processes import ADMIN_TOKEN, NARROWGATE, Gateway, behaviour_manifest, cedar_copy

APPROVER_TOKEN = "rightsize-approver-token"
TOKENS = {"sizer": "token-sizer", "watcher": "token-watcher", "api-bot": "token-api-bot"}
AGENTS_FILE = """\
# Agents of the right-sizing test. Every comment here must survive `narrowgate rightsize --write`.
agents:
  - id: sizer                 # the agent right-sizing narrows
    owner: tests@example.com
    purpose: right-sizing test agent
    state: active
    identities:
      - kind: static          # development token
        issuer: narrowgate
        subject: sizer
    entitlement:
      # the whole behaviour server, and three tools of the side one
      servers: [behav]
      tools:
        - side__echo
        - side__log           # logging, rarely
        - side__whoami
      require_task: false     # the static token calls directly

  # watches, and never calls anything
  - id: watcher
    owner: tests@example.com
    purpose: idle test agent
    state: active
    identities: [{kind: static, issuer: narrowgate, subject: watcher}]
    entitlement:
      tools: [side__progress]   # granted, never used
      require_task: false
"""
WATCHER_PERMIT = """\
@id("watcher-may-log")
@reason("the watcher logs to the side server")
permit (principal == Agent::"watcher", action in Action::"call_tool", resource is Tool)
when { resource.exposed_name == "side__log" };
"""
SIZER_GRANTED = {"behav__echo", "behav__slow", "behav__progress", "behav__log", "behav__crash", "behav__whoami",
                 "side__echo", "side__log", "side__whoami"}
SIZER_USED = {"behav__echo", "side__whoami"}
COMMENTS = [line.split("#", 1)[1] for line in AGENTS_FILE.splitlines() if "#" in line]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Gateway]:
    url = {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}
    behav = behaviour_manifest("behav", url, timeout_s=10)
    behav["tools"][3]["risk"] = "write"  # log
    behav["tools"][4]["risk"] = "privileged"  # crash: a person must approve each call
    side = behaviour_manifest("side", url, timeout_s=10, tools=("echo", "log", "whoami", "progress"))
    workdir = tmp_path_factory.mktemp("rightsize")
    (workdir / "agents-declared.yaml").write_text(AGENTS_FILE)
    gateway = Gateway(workdir, [behav, side], tokens=TOKENS, extra_config={
        "agents_file": str(workdir / "agents-declared.yaml"),
        "policies": str(cedar_copy(workdir / "cedar", **{"70-watcher": WATCHER_PERMIT})),
        "admin": {"tokens": [{"name": "test-admin", "token": ADMIN_TOKEN},
                             {"name": "tests@example.com", "token": APPROVER_TOKEN, "role": "approver"}]},
        "approvals": {"default_mode": "pending"},
    })
    gateway.start()
    yield gateway
    gateway.stop()


def admin(gw: Gateway, method: str, path: str, token: str = ADMIN_TOKEN, **kwargs: Any) -> httpx2.Response:
    return httpx2.request(method, f"{gw.base}{path}", headers=bearer(token), timeout=30, **kwargs)


def cli(gw: Gateway, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), *args, "--gateway", gw.base, "--admin-token", ADMIN_TOKEN],
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def metric_lines(gw: Gateway) -> list[str]:
    text = httpx2.get(f"{gw.base}/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith("narrowgate_granted_tools_unused")]


async def drive_traffic(gw: Gateway) -> None:
    async with mcp_client(gw.url, TOKENS["sizer"], "legacy") as client:
        for _ in range(3):
            assert not (await client.call_tool("behav__echo", {"text": "hi"})).is_error
        assert not (await client.call_tool("side__whoami", {})).is_error
        refused = await client.call_tool("behav__crash", {})  # step-up, nobody approves: not use
        assert refused.is_error
        with pytest.raises(MCPError, match="Access denied"):
            await client.call_tool("side__progress", {"steps": 1})  # not granted: denied, not use
    assert admin(gw, "POST", "/admin/v1/agents", json={
        "id": "api-bot", "owner": "tests@example.com", "purpose": "API-managed test agent", "state": "active",
        "identities": [{"kind": "static", "issuer": "narrowgate", "subject": "api-bot"}],
        "entitlement": {"tools": ["side__echo", "side__log"], "require_task": False}}).status_code == 201
    async with mcp_client(gw.url, TOKENS["api-bot"], "legacy") as client:
        assert not (await client.call_tool("side__echo", {"text": "x"})).is_error
    # A task for sizer wider than what it calls: two tools asked for, one called.
    started = admin(gw, "POST", "/admin/v1/tasks",
                    json={"agent_id": "sizer", "purpose": "one echo", "tools": ["behav__echo", "behav__slow"]})
    assert started.status_code == 201, started.text
    async with mcp_client(gw.url, started.json()["token"], "legacy") as client:
        assert not (await client.call_tool("behav__echo", {"text": "in a task"})).is_error


@pytest.fixture(scope="module")
def before_traffic(gw: Gateway) -> dict[str, Any]:
    """What the report, the CLI and /metrics say while nothing is recorded; then the traffic is driven."""
    seen = {"api": admin(gw, "GET", "/admin/v1/rightsize"), "cli": cli(gw, "rightsize"),
            "metrics": metric_lines(gw)}
    asyncio.run(drive_traffic(gw))
    return seen


@pytest.fixture(scope="module")
def report(gw: Gateway, before_traffic: dict[str, Any]) -> dict[str, Any]:
    response = admin(gw, "GET", "/admin/v1/rightsize")
    assert response.status_code == 200, response.text
    return {a["agent_id"]: a for a in response.json()["agents"]} | {"*": response.json()}


def test_a_window_with_no_recorded_data_is_refused_not_reported_as_zero(before_traffic: dict[str, Any]) -> None:
    assert before_traffic["api"].status_code == 422
    assert "no decision" in before_traffic["api"].json()["error"]
    refused = before_traffic["cli"]
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1 and "no decision" in refused.stderr
    assert not [line for line in before_traffic["metrics"] if not line.startswith("#")]


def test_the_agent_that_used_2_of_9_gets_exactly_the_7_unused(report: dict[str, Any]) -> None:
    sizer = report["sizer"]
    assert {t["tool"] for t in sizer["granted"]} == SIZER_GRANTED
    assert (sizer["allow"], sizer["step_up"]) == (8, 1)  # behav__crash needs a person
    assert set(sizer["used"]) == SIZER_USED
    assert set(sizer["unused"]) == SIZER_GRANTED - SIZER_USED and len(sizer["unused"]) == 7
    assert sizer["unused_share"] == pytest.approx(7 / 9)
    assert "side__progress" in sizer["never"]  # tried, denied: never granted, never use
    assert {t["tool"]: t["calls"] for t in sizer["granted"]}["behav__echo"] == 4
    assert sizer["servers_unused"] == []  # both servers had a call
    assert set(sizer["risks_unused"]) == {"write", "privileged"}
    [task] = [t for t in sizer["tasks"] if t["purpose"] == "one echo"]
    assert (task["called"], task["unused"]) == (["behav__echo"], ["behav__slow"])


def test_the_fleet_share_and_the_idle_agent_are_measured(gw: Gateway, report: dict[str, Any]) -> None:
    watcher, bot = report["watcher"], report["api-bot"]
    assert {t["tool"] for t in watcher["granted"]} == {"side__progress", "side__log"}
    assert (watcher["used"], watcher["unused_share"]) == ([], 1.0)
    assert (bot["used"], bot["unused"]) == (["side__echo"], ["side__log"])
    fleet = report["*"]
    assert (fleet["granted"], fleet["unused"]) == (9 + 2 + 2, 7 + 2 + 1)
    assert fleet["unused_share"] == pytest.approx(10 / 13)
    assert fleet["window"]["decisions"] >= 8
    # Asked alone, the idle agent is still measured: others' decisions show the window was recorded.
    alone = admin(gw, "GET", "/admin/v1/rightsize?agent=watcher")
    assert alone.status_code == 200 and alone.json()["agents"][0]["unused_share"] == 1.0
    assert alone.json()["window"]["decisions"] == 0


def test_the_metric_shows_each_share_and_the_fleet_on_metrics(gw: Gateway, report: dict[str, Any]) -> None:
    series = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metric_lines(gw)
              if not line.startswith("#")}
    name = "narrowgate_granted_tools_unused"
    assert series[f'{name}{{narrowgate_agent_id="sizer"}}'] == pytest.approx(7 / 9)
    assert series[f'{name}{{narrowgate_agent_id="watcher"}}'] == 1.0
    assert series[f'{name}{{narrowgate_agent_id="*"}}'] == pytest.approx(10 / 13)


def test_proposals_narrow_the_file_agent_by_patch_and_the_api_agent_by_call(report: dict[str, Any]) -> None:
    sizer = report["sizer"]["proposal"]
    assert sizer["managed_by"] == "agents_file"
    assert sizer["narrowed"] == {"tools": ["side__whoami", "behav__echo"], "servers": [], "require_task": False}
    assert sizer["cedar_file"] is None  # the entitlement alone takes every unused tool away
    assert "-      servers: [behav]" in sizer["patch"] and "-        - side__log           # logging, rarely" \
        in sizer["patch"]
    bot = report["api-bot"]["proposal"]
    assert bot["managed_by"] == "admin_api" and bot["patch"] is None
    assert bot["admin_call"]["method"] == "PATCH" and bot["admin_call"]["path"] == "/admin/v1/agents/api-bot"
    assert bot["admin_call"]["body"]["entitlement"]["tools"] == ["side__echo"]
    watcher = report["watcher"]["proposal"]
    assert watcher["narrowed"]["tools"] == [] and watcher["forbidden"] == ["side__log"]  # granted by a permit
    assert 'Agent::"watcher"' in watcher["cedar_text"] and '"side__log"' in watcher["cedar_text"]


def test_applying_the_admin_call_leaves_nothing_unused(gw: Gateway, report: dict[str, Any]) -> None:
    call = report["api-bot"]["proposal"]["admin_call"]
    assert admin(gw, call["method"], call["path"], json=call["body"]).status_code == 200
    after = admin(gw, "GET", "/admin/v1/rightsize?agent=api-bot").json()["agents"][0]
    assert (after["unused"], after["unused_share"], after["proposal"]["changed"]) == ([], 0.0, False)


def test_write_patches_the_agents_file_keeping_comments_and_policy_test_passes(
        gw: Gateway, report: dict[str, Any], tmp_path: Path) -> None:
    # The operator's checkout of the deployment: the same files the gateway reads, under a config of its own.
    shutil.copy(gw.workdir / "agents-declared.yaml", tmp_path / "agents.yaml")
    shutil.copytree(gw.workdir / "cedar", tmp_path / "cedar")
    shutil.copytree(gw.workdir / "catalog", tmp_path / "catalog")
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"catalog": "catalog", "policies": "cedar", "agents_file": "agents.yaml",
                                      "state": f"sqlite:///{tmp_path / 'offline.db'}"}))
    for agent in ("sizer", "watcher"):
        written = cli(gw, "rightsize", "--agent", agent, "--write", "--config", str(config))
        assert written.returncode == 0, written.stderr
    text = (tmp_path / "agents.yaml").read_text()
    assert all(comment in text for comment in COMMENTS if "logging, rarely" not in comment)
    assert "logging, rarely" not in text  # side__log's own line went with it
    assert not parse_agents_file(text, "agents.yaml", 0.0).problems
    sizer = asyncio.run(agent_from_file(tmp_path / "agents.yaml", "sizer"))
    watcher = asyncio.run(agent_from_file(tmp_path / "agents.yaml", "watcher"))
    assert sizer is not None and watcher is not None
    assert (sizer.entitlement.tools, sizer.entitlement.servers) == (("side__whoami", "behav__echo"), ())
    assert watcher.entitlement.tools == ()
    assert (tmp_path / "cedar" / "policies" / "90-rightsize-watcher.cedar").exists()
    for command in ("validate", "test"):
        checked = subprocess.run([str(NARROWGATE), "policy", command, "--config", str(config)], capture_output=True,
                                 text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    # The live gateway's files are untouched: nothing is applied automatically.
    assert (gw.workdir / "agents-declared.yaml").read_text() == AGENTS_FILE


def test_write_refuses_when_the_local_entitlement_differs(gw: Gateway, report: dict[str, Any],
                                                          tmp_path: Path) -> None:
    (tmp_path / "agents.yaml").write_text(AGENTS_FILE.replace("servers: [behav]", "servers: [behav, side]"))
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"catalog": str(gw.workdir / "catalog"), "policies": str(tmp_path),
                                      "agents_file": "agents.yaml"}))
    refused = cli(gw, "rightsize", "--agent", "sizer", "--write", "--config", str(config))
    assert refused.returncode == 2 and "different entitlement" in refused.stderr
    assert "servers: [behav, side]" in (tmp_path / "agents.yaml").read_text()


def test_bad_input_is_one_line_and_exit_2(gw: Gateway, report: dict[str, Any]) -> None:
    for args, says in ((("--agent", "nobody"), "no agent 'nobody'"), (("--since", "soon"), "--since")):
        refused = cli(gw, "rightsize", *args)
        assert refused.returncode == 2, refused
        assert len(refused.stderr.strip().splitlines()) == 1 and says in refused.stderr
    assert admin(gw, "GET", "/admin/v1/rightsize?agent=nobody").status_code == 404
    assert admin(gw, "GET", "/admin/v1/rightsize?since=forever").status_code == 400


def test_the_table_names_the_unused_tools(gw: Gateway, report: dict[str, Any]) -> None:
    shown = cli(gw, "rightsize", "--agent", "sizer", "--since", "1d")
    assert shown.returncode == 0, shown.stderr
    assert "78%" in shown.stdout and "behav__crash" in shown.stdout and "--- a/agents-declared.yaml" in shown.stdout
    as_json = cli(gw, "rightsize", "--agent", "sizer", "--format", "json")
    assert as_json.returncode == 0
    assert set(json.loads(as_json.stdout)["agents"][0]["unused"]) == SIZER_GRANTED - SIZER_USED


def test_admins_only(gw: Gateway, report: dict[str, Any]) -> None:
    assert admin(gw, "GET", "/admin/v1/rightsize", token=TOKENS["sizer"]).status_code in (401, 403)
    assert admin(gw, "GET", "/admin/v1/rightsize", token=APPROVER_TOKEN).status_code == 403
    assert httpx2.get(f"{gw.base}/admin/v1/rightsize", timeout=10).status_code == 401


def test_the_console_page_in_chromium_for_admins_only(gw: Gateway, report: dict[str, Any], tmp_path: Path) -> None:
    driver = chromium(tmp_path / "admin-profile")
    try:
        wait = sign_in(driver, f"{gw.base}/console/rightsize", ADMIN_TOKEN)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.rightsize-row"))
        rows = {r.get_attribute("data-agent-id"): r for r in driver.find_elements(By.CSS_SELECTOR, "tr.rightsize-row")}
        assert rows["sizer"].find_element(By.CSS_SELECTOR, "td.share").text == "78%"
        assert set(rows["sizer"].find_element(By.CSS_SELECTOR, "td.unused").text.split("\n")) >= {
            "behav__crash privileged", "side__log read"}
        fleet = admin(gw, "GET", "/admin/v1/rightsize").json()  # api-bot may have been narrowed by now
        assert f"{fleet['unused']} of {fleet['granted']} granted" in driver.find_element(By.ID, "fleet-share").text
        rows["sizer"].find_element(By.CSS_SELECTOR, "td.proposal summary").click()  # the patch, to review
        patch = rows["sizer"].find_element(By.CSS_SELECTOR, "pre.patch")
        assert patch.is_displayed() and "-      servers: [behav]" in patch.text
        driver.save_screenshot(str(tmp_path / "rightsize.png"))
        assert (tmp_path / "rightsize.png").read_bytes().startswith(b"\x89PNG")
    finally:
        driver.quit()
    approver = chromium(tmp_path / "approver-profile")
    try:
        wait = sign_in(approver, f"{gw.base}/console/rightsize", APPROVER_TOKEN)
        wait.until(lambda d: "Only admins" in d.page_source)
        assert not approver.find_elements(By.CSS_SELECTOR, "tr.rightsize-row")
        assert not approver.find_elements(By.CSS_SELECTOR, 'a[href="/console/rightsize"]')
    finally:
        approver.quit()
