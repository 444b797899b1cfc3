"""Compliance evidence (`narrowgate evidence`, `/admin/v1/evidence`) from a real gateway process.

The deployments here are scripted so the test knows the truth: a static development token (a gap for
insecure authentication and long-lived secrets), an agent without an expiry (a gap for offboarding),
the shared test settings that turn the kill switch and the per-agent rate limit off (gaps, never
passes). Changing the deployment turns those rows from gap to met.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp.shared.exceptions import MCPError
from selenium.webdriver.common.by import By

from tests.support.admin import bearer
from tests.support.browser import chromium
from tests.support.clients import mcp_client
from tests.support.processes import ADMIN_TOKEN, NARROWGATE, Gateway, behaviour_manifest

AGENT_TOKEN = "token-agent-a"
APPROVER_TOKEN = "approver-token-evidence"
STATIC_TOKEN = "token-static-bot"
# The official control lists, as the frameworks publish them (docs/least-privilege.md#compliance-evidence).
CONTROLS = {
    "owasp-asi-2026": [f"ASI{n:02d}" for n in range(1, 11)],
    "owasp-nhi-2025": [f"NHI{n}" for n in range(1, 11)],
    "nist-ai-rmf": ["GOVERN", "MAP", "MEASURE", "MANAGE"],
    "csa-maestro": [f"L{n}" for n in range(1, 8)],
    "nist-sp-800-207": [f"T{n}" for n in range(1, 8)],
}
NAMES = {("owasp-asi-2026", "ASI01"): "Agent Goal Hijack", ("owasp-asi-2026", "ASI10"): "Rogue Agents",
         ("owasp-nhi-2025", "NHI1"): "Improper Offboarding", ("owasp-nhi-2025", "NHI10"): "Human Use of NHI",
         ("nist-ai-rmf", "MEASURE"): "Measure", ("csa-maestro", "L1"): "Foundation Models",
         ("nist-sp-800-207", "T2"): "All communication is secured regardless of network location"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Gateway]:
    upstream = {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}
    privileged = {**behaviour_manifest("vault", upstream, timeout_s=5),
                  "tools": [{"name": "echo", "risk": "privileged", "data_classes": ["internal"]}]}
    manifests = [behaviour_manifest("behav", upstream, timeout_s=5), privileged]
    gateway = Gateway(tmp_path_factory.mktemp("evidence"), manifests, tokens={"agent-a": AGENT_TOKEN})
    gateway.extra_config = {"admin": {"tokens": [
        {"name": "test-admin", "token": ADMIN_TOKEN},
        {"name": "approver@example.com", "token": APPROVER_TOKEN, "role": "approver"},
    ]}, "approvals": {"default_mode": "pending"}}
    gateway.start()
    yield gateway
    gateway.stop()


def evidence(gateway: Gateway, framework: str, fmt: str = "json", token: str | None = ADMIN_TOKEN,
             **params: str) -> httpx2.Response:
    return httpx2.get(f"{gateway.base}/admin/v1/evidence", params={"framework": framework, "format": fmt, **params},
                      headers=bearer(token), timeout=60)


def report(gateway: Gateway, framework: str) -> dict[str, Any]:
    answer = evidence(gateway, framework)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def control(body: dict[str, Any], control_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in body["controls"] if c["id"] == control_id)
    return found


def fact(body: dict[str, Any], fact_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for c in body["controls"] for f in c["facts"] if f["id"] == fact_id)
    return found


def cli(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), "evidence", "--gateway", gateway.base, "--admin-token", ADMIN_TOKEN,
                           *args], capture_output=True, text=True, timeout=60)


# --- every framework, every format ---------------------------------------------------------------


@pytest.mark.parametrize("framework", list(CONTROLS))
def test_every_framework_renders_in_every_format_with_every_control(gw: Gateway, framework: str) -> None:
    body = report(gw, framework)
    assert [c["id"] for c in body["controls"]] == CONTROLS[framework]
    for (name, control_id), title in NAMES.items():
        if name == framework:
            assert control(body, control_id)["name"] == title
    for entry in body["controls"]:
        assert entry["status"] in ("met", "gap", "not_applicable")
        assert entry["facts"] or entry["status"] == "not_applicable"
        assert all(f["source"] and f["statement"] for f in entry["facts"])
        if entry["status"] != "met":
            assert entry["reasons"], entry  # a gap or a not-applicable row always says why
    assert sum(body["summary"].values()) == len(CONTROLS[framework])
    markdown = evidence(gw, framework, "md")
    page = evidence(gw, framework, "html")
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert page.headers["content-type"].startswith("text/html")
    for control_id in CONTROLS[framework]:
        assert f"\n## {control_id} " in markdown.text
        assert f'<section class="control" id="{control_id}">' in page.text


def test_the_cli_renders_the_apis_report_in_each_format(gw: Gateway, tmp_path: Path) -> None:
    api = report(gw, "owasp-nhi-2025")
    as_json = cli(gw, "--framework", "owasp-nhi-2025", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    from_cli = json.loads(as_json.stdout)
    assert [(c["id"], c["status"]) for c in from_cli["controls"]] == [(c["id"], c["status"]) for c in api["controls"]]
    as_md = cli(gw, "--framework", "owasp-nhi-2025")  # md is the default
    assert as_md.returncode == 0 and as_md.stdout.startswith("# Compliance evidence: OWASP Non-Human Identities")
    assert all(f"## {c} " in as_md.stdout for c in CONTROLS["owasp-nhi-2025"])
    out = tmp_path / "nhi.html"
    as_html = cli(gw, "--framework", "owasp-nhi-2025", "--format", "html", "--output", str(out))
    assert as_html.returncode == 0, as_html.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.read_text().startswith("<!DOCTYPE html>")


# --- gaps are gaps ---------------------------------------------------------------------------------


def test_what_the_deployment_lacks_is_a_gap_with_its_reason_never_a_pass(gw: Gateway) -> None:
    nhi = report(gw, "owasp-nhi-2025")
    assert control(nhi, "NHI4")["status"] == "gap"
    assert any("static agent token" in r and "agent-a" in r for r in control(nhi, "NHI4")["reasons"])
    assert fact(nhi, "agent_authentication")["data"]["static"] == ["agent-a"]
    assert control(nhi, "NHI7")["status"] == "gap"  # a static token never expires
    asi = report(gw, "owasp-asi-2026")
    assert control(asi, "ASI08")["status"] == "gap"  # the test config turns monitoring.per_agent off
    assert any("monitoring.per_agent" in r for r in control(asi, "ASI08")["reasons"])
    assert control(asi, "ASI10")["status"] == "gap"  # ... and the kill switch
    assert any("kill switch is off" in r for r in control(asi, "ASI10")["reasons"])
    assert control(asi, "ASI04")["status"] == "met"
    maestro = report(gw, "csa-maestro")
    assert control(maestro, "L1")["status"] == "not_applicable"
    assert "never hosts, calls or sees a model" in control(maestro, "L1")["reasons"][0]


def test_the_policy_tests_and_the_audit_chain_are_what_the_commands_say(gw: Gateway) -> None:
    body = report(gw, "nist-sp-800-207")
    tests = fact(body, "policy_tests")
    assert tests["status"] == "ok" and tests["data"]["cases"] > 0 and tests["data"]["failed"] == []
    chain = fact(body, "audit_chain")
    assert chain["status"] == "ok" and chain["source"] == "narrowgate audit verify"
    head_seq, head_hash = chain["data"]["head_seq"], chain["data"]["head_hash"]
    assert chain["data"]["records"] == head_seq > 0
    exported = subprocess.run([str(NARROWGATE), "audit", "export", "--config", str(gw.workdir / "gateway.yaml")],
                              capture_output=True, text=True, timeout=60, cwd=gw.workdir)
    assert exported.returncode == 0, exported.stderr
    records = {r["seq"]: r for r in map(json.loads, exported.stdout.splitlines())}
    assert records[head_seq]["hash"] == head_hash
    assert head_hash in chain["statement"]


async def test_unused_entitlements_come_from_right_sizing(gw: Gateway) -> None:
    async with mcp_client(gw.url, AGENT_TOKEN, "legacy") as client:
        await client.call_tool("behav__echo", {"text": "the one tool agent-a uses"})
    deadline = time.monotonic() + 10
    while fact(report(gw, "owasp-nhi-2025"), "unused_entitlements")["status"] == "unavailable" \
            and time.monotonic() < deadline:  # until the call's decision record is written
        time.sleep(0.1)
    nhi = report(gw, "owasp-nhi-2025")
    unused = fact(nhi, "unused_entitlements")
    granted = {"behav__echo", "behav__slow", "behav__progress", "behav__log", "behav__crash", "behav__whoami",
               "vault__echo"}  # the two manifests; vault__echo needs a person, which still grants it
    assert unused["data"]["granted"] == len(granted)
    assert set(unused["data"]["unused_by_agent"]["agent-a"]) == granted - {"behav__echo"}
    assert unused["status"] == "problem" and control(nhi, "NHI5")["status"] == "gap"
    assert any("6 of 7 granted tool(s) (86%) went unused" in r and "agent-a" in r
               for r in control(nhi, "NHI5")["reasons"])
    assert unused["source"].startswith("narrowgate rightsize --since ")


async def test_decisions_and_approvals_in_the_period_count_the_calls_made(gw: Gateway) -> None:
    def counted() -> tuple[int, int, int]:
        body = report(gw, "nist-ai-rmf")
        made, asked = fact(body, "decisions")["data"], fact(body, "approvals")["data"]["by_action"]
        return int(made.get("allow", 0)), int(made.get("step_up", 0)), int(asked.get("requested", 0))

    allowed, stepped_up, requested = counted()
    async with mcp_client(gw.url, AGENT_TOKEN, "legacy") as client:
        for text in ("one", "two", "three"):
            await client.call_tool("behav__echo", {"text": text})
        held = await client.call_tool("vault__echo", {"text": "needs a person"})
        assert held.is_error and (held.meta or {})["narrowgate/approval"]["state"] == "pending"
    expected = (allowed + 3, stepped_up + 1, requested + 1)
    deadline = time.monotonic() + 10
    while counted() != expected and time.monotonic() < deadline:  # the audit writer batches its appends
        time.sleep(0.1)
    assert counted() == expected
    body = report(gw, "nist-ai-rmf")
    assert fact(body, "decisions")["source"].startswith("narrowgate audit search --kind decision --since ")
    assert "1 requested" in fact(body, "approvals")["statement"]


# --- access and bad input --------------------------------------------------------------------------


def test_only_admins_may_read_evidence(gw: Gateway) -> None:
    assert evidence(gw, "owasp-asi-2026", token=None).status_code == 401
    assert evidence(gw, "owasp-asi-2026", token=AGENT_TOKEN).status_code == 403
    refused = evidence(gw, "owasp-asi-2026", token=APPROVER_TOKEN)
    assert refused.status_code == 403 and "approvals" in refused.json()["error"]
    assert evidence(gw, "owasp-asi-2026").status_code == 200


def test_bad_input_is_one_line_and_exit_status_2(gw: Gateway) -> None:
    answer = evidence(gw, "iso-42001")
    assert answer.status_code == 400 and "unknown framework 'iso-42001'" in answer.json()["error"]
    assert evidence(gw, "owasp-asi-2026", since="forever").status_code == 400
    assert evidence(gw, "owasp-asi-2026", "pdf").status_code == 400
    for args, words in ((["--framework", "iso-42001"], "unknown framework 'iso-42001'"),
                        (["--framework", "owasp-asi-2026", "--since", "soon"], "--since"),
                        (["--framework", "owasp-asi-2026", "--format", "pdf"], "unknown format")):
        done = cli(gw, *args)
        assert done.returncode == 2 and done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr, done.stderr


# --- gap to met when the deployment changes ---------------------------------------------------------


def agents_file(path: Path, static_bot_identity: dict[str, Any], require_task: bool) -> Path:
    path.write_text(yaml.safe_dump({"agents": [{
        "id": "static-bot", "owner": "tests@example.com", "purpose": "nightly report", "state": "active",
        "expires_at": "2099-01-01T00:00:00Z", "identities": [static_bot_identity],
        "entitlement": {"servers": ["behav"], "require_task": require_task},
    }]}))
    return path


async def probe_until_the_kill_switch(gateway: Gateway, token: str) -> None:
    """Six calls to tools that do not exist: twice the probing threshold, a critical detection."""
    try:
        async with mcp_client(gateway.url, token, "legacy") as client:
            for n in range(6):
                with contextlib.suppress(MCPError):
                    await client.call_tool(f"behav__nope_{n}", {})
    except* MCPError:
        pass  # the kill switch may end the session itself


async def test_rows_turn_from_gap_to_met_when_the_deployment_changes(tmp_path: Path, behaviour_http: int) -> None:
    manifests = [behaviour_manifest("behav", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=5)]
    gateway = Gateway(tmp_path, manifests, tokens={"static-bot": STATIC_TOKEN})
    gateway.extra_config = {
        "agents_file": str(agents_file(tmp_path / "fleet.yaml",
                                       {"kind": "static", "issuer": "narrowgate", "subject": "static-bot"}, False)),
        "monitoring": {"kill_switch_severity": "critical", "per_agent": {"calls": 600, "per_s": 60}},
    }
    gateway.start()
    try:
        created = httpx2.post(f"{gateway.base}/admin/v1/agents", headers=bearer(ADMIN_TOKEN), json={
            "id": "wl-bot", "owner": "team@example.com", "purpose": "files release notes",
            "identities": [{"kind": "oidc", "issuer": "https://idp.example.com", "subject": "wl-bot"}],
            "entitlement": {"servers": ["behav"]}})
        assert created.status_code == 201, created.text
        before = report(gateway, "owasp-nhi-2025")
        assert control(before, "NHI1")["status"] == "gap"
        assert fact(before, "agent_accountability")["data"]["lacking_expiry"] == ["wl-bot"]
        assert control(before, "NHI4")["status"] == "gap" and control(before, "NHI7")["status"] == "gap"
        assert fact(before, "agent_authentication")["data"]["workload_only"] == ["wl-bot"]
        nothing_yet = fact(before, "unused_entitlements")  # no call recorded: nothing measured, never "0% unused"
        assert nothing_yet["status"] == "unavailable" and "no decision" in nothing_yet["statement"]

        given = httpx2.patch(f"{gateway.base}/admin/v1/agents/wl-bot", headers=bearer(ADMIN_TOKEN),
                             json={"expires_at": "2099-06-01T00:00:00Z"})
        assert given.status_code == 200, given.text
        expiry_given = report(gateway, "owasp-nhi-2025")
        assert control(expiry_given, "NHI1")["status"] == "met"
        assert control(expiry_given, "NHI4")["status"] == "gap"  # nothing else changed yet

        await probe_until_the_kill_switch(gateway, STATIC_TOKEN)
        asi = report(gateway, "owasp-asi-2026")
        switch = fact(asi, "kill_switch")
        assert switch["status"] == "ok" and [a["agent_id"] for a in switch["data"]["activations"]] == ["static-bot"]
        assert fact(asi, "detections")["data"]["by_detector"].get("probing", 0) >= 1
        assert control(asi, "ASI10")["status"] == "met" and control(asi, "ASI08")["status"] == "met"
    finally:
        gateway.stop()

    # The last static token leaves the config, static-bot moves to a workload identity and a task grant; restart.
    gateway.tokens = {}
    agents_file(tmp_path / "fleet.yaml", {"kind": "oidc", "issuer": "https://idp.example.com", "subject": "static-bot"},
                True)
    gateway.start()
    try:
        after = report(gateway, "owasp-nhi-2025")
        for control_id in ("NHI1", "NHI4", "NHI7", "NHI10"):
            assert control(after, control_id)["status"] == "met", control(after, control_id)
        assert fact(after, "agent_authentication")["data"]["workload_only"] == ["static-bot", "wl-bot"]
        assert fact(after, "token_lifetimes")["data"]["longest_s"] == 900
        zero_trust = report(gateway, "nist-sp-800-207")
        assert control(zero_trust, "T3")["status"] == "met"  # per-call tokens, and every agent under a task grant
    finally:
        gateway.stop()


# --- for people: the HTML page in a browser ---------------------------------------------------------


def test_the_html_page_stands_alone_and_shows_every_control_in_chromium(gw: Gateway, tmp_path: Path) -> None:
    page = tmp_path / "asi.html"
    done = cli(gw, "--framework", "owasp-asi-2026", "--format", "html", "--output", str(page))
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "<script" not in text and "<link" not in text and "src=" not in text  # one self-contained page
    screenshot = tmp_path / "asi.png"
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(page.as_uri())
        sections = driver.find_elements(By.CSS_SELECTOR, "section.control")
        shown = {s.get_attribute("id"): s.text for s in sections}
        summary = driver.find_element(By.ID, "summary").text
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    assert list(shown) == CONTROLS["owasp-asi-2026"]
    assert all(text.startswith(control_id) for control_id, text in shown.items())
    assert "Agent Goal Hijack" in shown["ASI01"] and "GAP" in shown["ASI10"] and "MET" in shown["ASI04"]
    assert "met" in summary and "gap" in summary
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
