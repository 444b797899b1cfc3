"""`narrowgate demo` (what `make run` starts): the gateway in front of the two demo upstreams.

The stdio upstream (tickets) is spawned by the gateway itself from its manifest; the HTTP one
(payments) is started here first, on a free port, and stopped when the gateway stops.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from gateway.config import Settings, settings_from_mapping

REPO_ROOT = Path(__file__).resolve().parents[1]
PAYMENTS_SERVER = REPO_ROOT / "examples" / "demo_upstreams" / "payments_server.py"
DEMO_AGENT = "demo-agent"
DEMO_OWNER = "support-platform@example.com"  # examples/agents/demo.yaml


def run_demo(port: int) -> int:
    from gateway.cli import serve

    payments = start_payments_server()
    try:
        token = secrets.token_urlsafe(24)
        approver_token = secrets.token_urlsafe(24)
        settings = settings_from_mapping({
            "listen": f"127.0.0.1:{port}",
            "catalog": "tool_catalog",
            "policies": "cedar",
            "state": f"sqlite:///{REPO_ROOT / '.narrowgate' / 'demo.db'}",
            "agents_file": "examples/agents/demo.yaml",
            "auth": {"static_tokens": [{"agent": DEMO_AGENT, "token": token}]},
            # The demo agent's owner, who approves its privileged calls in the console.
            "admin": {"tokens": [{"name": DEMO_OWNER, "token": approver_token, "role": "approver"}]},
        }, REPO_ROOT)
        print(banner(settings, token, approver_token), flush=True)
        return serve(settings)
    finally:
        payments.terminate()
        try:
            payments.wait(timeout=5)
        except subprocess.TimeoutExpired:
            payments.kill()


def start_payments_server() -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(PAYMENTS_SERVER), "--port", "0"],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("LISTENING "):
            os.environ["DEMO_PAYMENTS_PORT"] = line.split()[1]
            return process
    process.wait()
    raise RuntimeError("the demo payments server did not start")


def banner(settings: Settings, token: str, approver_token: str) -> str:
    url = f"{settings.base_url}/mcp"
    claude = {"mcpServers": {"narrowgate": {"command": "npx", "args": [
        "-y", "mcp-remote", url, "--header", f"Authorization: Bearer {token}"]}}}
    vscode = {"servers": {"narrowgate": {"type": "http", "url": url,
                                         "headers": {"Authorization": f"Bearer {token}"}}}}
    return f"""
Narrowgate demo
  MCP endpoint : {url}
  agent        : {DEMO_AGENT}
  agent token  : {token}   (development static token; printed only here)
  upstreams    : tickets (stdio), payments (Streamable HTTP, port {os.environ.get("DEMO_PAYMENTS_PORT")})
  console      : {settings.base_url}/console   (approve held calls, e.g. payments__refund_payment)
  approver     : {DEMO_OWNER}, token {approver_token}

Claude Desktop (claude_desktop_config.json):
{json.dumps(claude, indent=2)}

VS Code (.vscode/mcp.json):
{json.dumps(vscode, indent=2)}

mcp SDK (Python):
  from mcp import Client
  from mcp.client.streamable_http import streamable_http_client
  import httpx2
  http = httpx2.AsyncClient(headers={{"Authorization": "Bearer {token}"}})
  async with Client(streamable_http_client("{url}", http_client=http)) as client:
      print(await client.list_tools())

Press Ctrl-C to stop.
"""
