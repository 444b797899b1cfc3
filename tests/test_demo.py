"""`narrowgate demo` (what `make run` starts) serves both demo upstreams and cleans up on Ctrl-C."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.clients import mcp_client
from tests.support.processes import NARROWGATE, REPO, free_port


def read_until(process: subprocess.Popen[bytes], pattern: str, timeout_s: float) -> re.Match[str]:
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    seen = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if selector.select(timeout=0.2):
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
            if match := re.search(pattern, seen):
                return match
    raise AssertionError(f"pattern {pattern!r} not seen in demo output:\n{seen[-3000:]}")


def child_pids(pid: int) -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        children.update(int(p) for p in task.read_text().split())
    return children


@pytest.mark.timeout(90)
async def test_demo_serves_both_upstreams_and_stops_its_children() -> None:
    port = free_port()
    process = subprocess.Popen([str(NARROWGATE), "demo", "--port", str(port)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        token = read_until(process, r"agent token\s*:\s*(\S+)", 30).group(1)
        read_until(process, r"serving MCP at", 30)
        children = child_pids(process.pid)
        assert len(children) >= 2, "the payments (HTTP) and tickets (stdio) upstreams should be running"
        async with mcp_client(f"http://127.0.0.1:{port}/mcp", token, "legacy") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            tickets = await client.call_tool("tickets__list_tickets", {})
            balance = await client.call_tool("payments__get_balance", {"account": "acct-ops"})
        assert {"tickets__create_ticket", "payments__refund_payment"} <= names
        assert not tickets.is_error and "T-100" in tickets.content[0].text
        assert not balance.is_error and "acct-ops" in balance.content[0].text
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    for pid in children:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text().lower(), f"upstream {pid} outlived the demo"
