"""The approver console in a real browser: headless Debian Chromium driven by Selenium.

An agent's call to a privileged tool is held (the shipped step-up policy); a person signs in to the
console with their approver token, finds the request in the inbox, opens it, comments and approves,
and the held call completes. Needs Debian's `chromium` and `chromium-driver` (CI installs them); the
test fails rather than skips without them. Selenium Manager is never used: the driver path is given.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from selenium.webdriver.common.by import By

from tests.support import browser
from tests.support.admin import bearer
from tests.support.browser import chromium, sign_in
from tests.support.clients import mcp_client
from tests.support.processes import ADMIN_TOKEN, Gateway, behaviour_manifest, cedar_copy

OWNER_TOKEN = "browser-owner-token"  # tests@example.com, the test agent's owner
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMMENT = "checked in the browser test"
PENDING_LOG_POLICY = """\
@id("browser-log-needs-approval")
@reason("writing to the log needs an approval")
@step_up("pending")
forbid (principal, action == Action::"brow__log", resource)
unless { context.approval.granted };
"""
LAPTOP = (1366, 768)
# What the inbox looks like to a script: horizontal overflow, and how many lines each time takes.
MEASURE_INBOX = """
const lines = (element) => {
  const height = parseFloat(getComputedStyle(element).lineHeight);
  return Math.round(element.getBoundingClientRect().height / height);
};
const cells = [...document.querySelectorAll('tr.approval-row td.when')];
return {
  overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  created: cells.map((td) => lines(td.querySelector('time'))),
  expires: cells.map((td) => lines(td.querySelector('small'))),
  args: [...document.querySelectorAll('tr.approval-row code.args')].map((code) => code.textContent),
};
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[Gateway]:
    manifest = behaviour_manifest("brow", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, timeout_s=10,
                                  tools=("echo", "log"))
    manifest["tools"][0]["risk"] = "privileged"  # held by the shipped cedar/policies/30-step-up-risk.cedar
    workdir = tmp_path_factory.mktemp("console-browser")
    gateway = Gateway(workdir, [manifest], extra_config={
        "policies": str(cedar_copy(workdir / "cedar", **{"70-tests": PENDING_LOG_POLICY})),
        "admin": {"tokens": [{"name": "test-admin", "token": ADMIN_TOKEN},
                             {"name": "tests@example.com", "token": OWNER_TOKEN, "role": "approver"}]},
        "approvals": {"keepalive": "1s", "default_mode": "hold"},  # the shipped rule asks; this test holds
    })
    gateway.start()
    yield gateway
    gateway.stop()


def pending_approval_id(gw: Gateway, tool: str, timeout_s: float = 15) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = httpx2.get(f"{gw.base}/admin/v1/approvals?state=pending", headers=bearer(OWNER_TOKEN),
                            timeout=10).json()["approvals"]
        found = [a["id"] for a in listed if a["tool"] == tool]
        if found:
            return str(found[0])
        time.sleep(0.1)
    raise AssertionError(f"no pending approval for {tool}")


def approve_in_the_browser(base: str, approval_id: str, user_data_dir: Path, screenshot: Path) -> dict[str, str]:
    """Sign in, open the request from the inbox, comment, approve; what the pages showed on the way."""
    driver = chromium(user_data_dir)
    try:
        wait = sign_in(driver, f"{base}/console", OWNER_TOKEN)  # not signed in: sent to the login page
        row_selector = f'.approval-row[data-approval-id="{approval_id}"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row_selector))
        row = driver.find_element(By.CSS_SELECTOR, row_selector)
        seen = {"inbox_url": driver.current_url, "row": row.text,
                "pending_count": driver.find_element(By.ID, "pending-count").text}
        row.find_element(By.CSS_SELECTOR, "a.open").click()
        wait.until(lambda d: d.find_elements(By.ID, "comment"))
        seen["preview"] = driver.find_element(By.ID, "preview").text
        driver.find_element(By.ID, "comment").send_keys(COMMENT)
        driver.find_element(By.ID, "approve").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".flash"))
        seen["flash"] = driver.find_element(By.CSS_SELECTOR, ".flash").text
        seen["state"] = driver.find_element(By.ID, "state").text
        driver.save_screenshot(str(screenshot))
        return seen
    finally:
        driver.quit()


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_a_person_approves_a_held_call_in_the_browser(gw: Gateway, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager must never download
    text = f"approved-in-a-browser-{time.time_ns()}"
    screenshot = tmp_path / "console-approved.png"
    async with mcp_client(gw.url, "token-agent-a", "legacy") as client:
        call = asyncio.create_task(client.call_tool("brow__echo", {"text": text}))
        approval_id = await asyncio.to_thread(pending_approval_id, gw, "brow__echo")
        assert not call.done()  # held while nobody has decided
        seen = await asyncio.to_thread(approve_in_the_browser, gw.base, approval_id, tmp_path / "chromium",
                                       screenshot)
        result = await asyncio.wait_for(call, 30)
    assert not result.is_error and text_of(result) == text
    assert seen["inbox_url"] == f"{gw.base}/console"
    assert "brow__echo" in seen["row"] and "privileged" in seen["row"] and "agent-a" in seen["row"]
    assert "held: the call is waiting" in seen["row"] and 'text="approved-in-a-browser-' in seen["row"]
    assert seen["pending_count"] == "1"
    assert text in seen["preview"]
    assert seen["flash"] == f"You approved {approval_id}." and seen["state"] in ("approved", "used")
    shown = httpx2.get(f"{gw.base}/admin/v1/approvals/{approval_id}", headers=bearer(OWNER_TOKEN), timeout=10).json()
    assert shown["state"] == "used" and shown["comment"] == COMMENT
    assert shown["decided_by"] == "admin:tests@example.com"
    image = screenshot.read_bytes()
    assert len(image) > len(PNG_MAGIC) and image.startswith(PNG_MAGIC)


def inbox_on_a_laptop(base: str, user_data_dir: Path, screenshot: Path) -> dict[str, Any]:
    driver = chromium(user_data_dir, window=LAPTOP)
    try:
        wait = sign_in(driver, f"{base}/console/login", OWNER_TOKEN)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".approval-row"))
        driver.save_screenshot(str(screenshot))
        return dict(driver.execute_script(MEASURE_INBOX))
    finally:
        driver.quit()


async def test_the_inbox_reads_well_on_a_1366_pixel_laptop(gw: Gateway, tmp_path: Path) -> None:
    amounts = (120, 75, 1999)
    asked_for: list[str] = []
    async with mcp_client(gw.url, "token-agent-a", "legacy") as client:
        for amount in amounts:
            asked = await client.call_tool("brow__log", {"message": f"refund {amount} EUR to ACME Corporation for "
                                                                    f"invoice 2026-{amount}", "level": "info"})
            assert asked.is_error and "retry the identical call" in text_of(asked)
            asked_for.append((asked.meta or {})["narrowgate/approval"]["id"])
    screenshot = tmp_path / "console-inbox-1366.png"
    try:
        seen = await asyncio.to_thread(inbox_on_a_laptop, gw.base, tmp_path / "chromium", screenshot)
    finally:
        for approval_id in asked_for:  # leave the inbox as it was for the other tests
            httpx2.post(f"{gw.base}/admin/v1/approvals/{approval_id}/deny", headers=bearer(OWNER_TOKEN), json={},
                        timeout=10)
    assert seen["overflow"] <= 0, seen  # nothing to scroll sideways
    assert len(seen["created"]) >= len(amounts)
    assert set(seen["created"]) == {1} and set(seen["expires"]) == {1}, seen  # each time on one line
    for amount in amounts:  # two refunds of one tool look different
        assert any(f"refund {amount} EUR" in args for args in seen["args"]), seen["args"]
    assert screenshot.read_bytes().startswith(PNG_MAGIC)


def test_a_missing_browser_fails_the_test_with_how_to_install_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium-here")
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium chromium-driver"):
        chromium(tmp_path / "profile")
