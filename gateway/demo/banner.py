"""What `narrowgate demo` prints at start: where everything is, which calls ask for approval, and
the exact lines that point a shell's `narrowgate` commands at this demo."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from gateway.catalog import CatalogError, load_catalog
from gateway.config import Settings
from gateway.demo.approvals import approval_rules, summary_lines
from gateway.demo.issuer import TRUST_DOMAIN
from gateway.demo.state import REPO_ROOT, DemoState, DemoTokens
from gateway.policy.engine import PolicyLoadError
from gateway.policy.hours import WorkingHours
from gateway.registry.model import Agent

TASK_AGENT = "triage-bot"  # examples/agents/demo.yaml: an agent that works through task tokens only


def banner(settings: Settings, state: DemoState, tokens: DemoTokens, payments_port: int, agent: Agent) -> str:
    url = f"{settings.base_url}/mcp"
    return "\n".join([
        "",
        f"Narrowgate demo (state in {_shown(state.directory)}: tokens and keys are kept across restarts)",
        f"  MCP endpoint : {url}",
        f"  agent        : {agent.id}",
        f"  agent token  : {tokens.agent}   (development static token)",
        f"  upstreams    : tickets (stdio), payments (Streamable HTTP, port {payments_port})",
        f"  console      : {settings.base_url}/console   (approve held calls here)",
        f"  approver     : {agent.owner}, token {tokens.approver}",
        "",
        f"Which calls of {agent.id} ask for a person's approval (from the policies in "
        f"{_shown(settings.policies_dir)}/ and the catalog):",
        *approvals_section(settings, agent),
        "",
        "Point another shell's `narrowgate` at this demo (admin CLI, audit log):",
        *export_lines(settings, state, tokens),
        "  narrowgate agents list; narrowgate tasks list; narrowgate catalog review; narrowgate audit verify",
        "",
        f"Workload identity (development SPIFFE trust domain {TRUST_DOMAIN}; its key is in the state directory):",
        f"  narrowgate demo token --agent {TASK_AGENT}    # a fresh JWT-SVID, as SPIRE would issue it",
        f"  exchange it at {settings.base_url}/oauth/token for a task token: see README.md, docs/tasks.md",
        "",
        *client_configs(url, tokens.agent),
        "Press Ctrl-C to stop.",
        "",
    ])


def approvals_section(settings: Settings, agent: Agent) -> list[str]:
    hours = WorkingHours.from_mapping(settings.policy.working_hours)
    try:
        rules = approval_rules(settings, load_catalog(settings.catalog_dir), agent)
    except (CatalogError, PolicyLoadError) as exc:
        return [f"  (could not be worked out: {str(exc).splitlines()[0]})"]
    return summary_lines(rules, hours)


def export_lines(settings: Settings, state: DemoState, tokens: DemoTokens) -> list[str]:
    """The exact lines to paste: PATH for the `narrowgate` in use, then URL, admin token and store."""
    lines = []
    bin_dir = Path(sys.executable).parent
    if (bin_dir / "narrowgate").exists():
        lines.append(f'  export PATH={shlex.quote(str(bin_dir))}:"$PATH"')
    lines.append(f"  export NARROWGATE_URL={shlex.quote(settings.base_url)} "
                 f"NARROWGATE_ADMIN_TOKEN={shlex.quote(tokens.admin)} "
                 f"NARROWGATE_STATE={shlex.quote(state.store_url)}")
    return lines


def client_configs(url: str, token: str) -> list[str]:
    claude = {"mcpServers": {"narrowgate": {"command": "npx", "args": [
        "-y", "mcp-remote", url, "--header", f"Authorization: Bearer {token}"]}}}
    vscode = {"servers": {"narrowgate": {"type": "http", "url": url,
                                         "headers": {"Authorization": f"Bearer {token}"}}}}
    return [
        "Claude Desktop (claude_desktop_config.json):",
        json.dumps(claude, indent=2),
        "",
        "VS Code (.vscode/mcp.json):",
        json.dumps(vscode, indent=2),
        "",
        "mcp SDK (Python):",
        "  from mcp import Client",
        "  from mcp.client.streamable_http import streamable_http_client",
        "  import httpx2",
        f'  http = httpx2.AsyncClient(headers={{"Authorization": "Bearer {token}"}})',
        f'  async with Client(streamable_http_client("{url}", http_client=http)) as client:',
        "      print(await client.list_tools())",
        "",
    ]


def _shown(path: Path) -> str:
    """A path relative to the checkout when it is inside it (shorter to read), else absolute."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
