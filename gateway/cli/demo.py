"""`narrowgate demo` (what `make run` starts): the gateway in front of the two demo upstreams; `demo token`.

In order: the state directory (tokens and keys from earlier runs), the settings (NARROWGATE_*
variables apply as for any gateway; `--port` wins over NARROWGATE_LISTEN), the listening socket
(a port in use is one plain line, before anything else is printed or started), the payments
upstream over HTTP, the banner, then the gateway itself, which spawns the stdio tickets upstream.
The demo's pieces that are not the command (state, issuer, payments child, banner) are in gateway.demo.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.cli.policy import agent_from_file
from gateway.cli.serve import serve
from gateway.config import Settings, apply_env_overrides, settings_from_mapping
from gateway.demo.banner import banner
from gateway.demo.issuer import DEFAULT_TTL_S, KEY_FILE, DevelopmentIssuer
from gateway.demo.payments import PaymentsServer
from gateway.demo.state import DEFAULT_STATE_DIR, REPO_ROOT, DemoState, DemoTokens
from gateway.registry.model import Agent

PAYMENTS_SERVER = REPO_ROOT / "examples" / "demo_upstreams" / "payments_server.py"
AGENTS_FILE = REPO_ROOT / "examples" / "agents" / "demo.yaml"
DEMO_AGENT = "demo-agent"
DEMO_OWNER = "support-platform@example.com"  # examples/agents/demo.yaml
DEMO_ADMIN = "demo-admin"
DEFAULT_LISTEN = "127.0.0.1:8080"
EXIT_PORT_TAKEN = 2


def run_demo(args: argparse.Namespace) -> int:
    from gateway.serving import interrupt_on_sigterm

    interrupt_on_sigterm()
    return serve_demo(args.port, args.state_dir or DEFAULT_STATE_DIR)


def run_demo_token(args: argparse.Namespace) -> int:
    return print_token(args.agent, args.state_dir, args.gateway, args.ttl)


def serve_demo(port: int | None, state_dir: Path) -> int:
    from gateway.serving import PortUnavailable, bind_listener

    state = DemoState.open(state_dir)
    tokens = state.tokens()
    issuer = DevelopmentIssuer.open(state)
    settings = demo_settings(state, tokens, issuer, port, os.environ)
    try:
        listener = bind_listener(settings.listen_host, settings.listen_port)
    except PortUnavailable as exc:
        print(f"narrowgate: {exc}; pick another port: narrowgate demo --port N, make run PORT=N, "
              f"or NARROWGATE_LISTEN=127.0.0.1:N", file=sys.stderr)
        return EXIT_PORT_TAKEN
    with listener:
        payments = PaymentsServer.start(PAYMENTS_SERVER, REPO_ROOT)
        try:
            os.environ["DEMO_PAYMENTS_PORT"] = str(payments.port)  # tool_catalog/payments.yaml reads it
            state.record_url(settings.base_url)
            print(banner(settings, state, tokens, payments.port, demo_agent(settings)), flush=True)
            return serve(settings, listener)
        finally:
            payments.stop()


def demo_settings(state: DemoState, tokens: DemoTokens, issuer: DevelopmentIssuer, port: int | None,
                  environ: Mapping[str, str]) -> Settings:
    raw: dict[str, Any] = {
        "listen": DEFAULT_LISTEN,
        "catalog": "tool_catalog",
        "policies": "cedar",
        "agents_file": str(AGENTS_FILE),
        "auth": {"static_tokens": [{"agent": DEMO_AGENT, "token": tokens.agent}]},
        "admin": {"tokens": [
            # The demo agent's owner, who approves its held calls in the console.
            {"name": DEMO_OWNER, "token": tokens.approver, "role": "approver"},
            {"name": DEMO_ADMIN, "token": tokens.admin, "role": "admin"},
        ]},
        # Workload identity: JWT-SVIDs from the demo's development trust domain (`narrowgate demo token`).
        "identity": {"spiffe_trust_domains": [issuer.trust_domain()]},
    }
    apply_env_overrides(raw, environ)
    raw["state"] = state.store_url  # the demo's store is its state directory's, whatever NARROWGATE_STATE says
    if port is not None:
        host = str(raw["listen"]).rpartition(":")[0] or "127.0.0.1"
        raw["listen"] = f"{host}:{port}"
    return settings_from_mapping(raw, REPO_ROOT)


def demo_agent(settings: Settings) -> Agent:
    """demo-agent's record as the agents file declares it (read without touching the store)."""
    assert settings.agents_file is not None
    agent = asyncio.run(agent_from_file(settings.agents_file, DEMO_AGENT))
    assert agent is not None, f"{settings.agents_file} declares no {DEMO_AGENT}"
    return agent


# --- narrowgate demo token ------------------------------------------------------------------------


def print_token(agent_id: str, state_dir: Path | None, gateway_url: str | None, ttl_s: int = DEFAULT_TTL_S) -> int:
    """Print a fresh workload token (JWT-SVID) for `agent_id`, for the gateway's audience."""
    state = DemoState(state_dir or token_state_dir(os.environ))
    issuer = DevelopmentIssuer.open(state, create=False)
    url = (gateway_url or os.environ.get("NARROWGATE_URL") or state.recorded_url()
           or f"http://{DEFAULT_LISTEN}").rstrip("/")
    print(issuer.mint(agent_id, f"{url}/mcp", ttl_s))
    return 0


def token_state_dir(environ: Mapping[str, str]) -> Path:
    """The demo the shell points at: the directory of NARROWGATE_STATE's database (as the banner's
    export line sets it) when that is a demo state directory, else the default one."""
    store = str(environ.get("NARROWGATE_STATE", ""))
    if store.startswith("sqlite:///"):
        directory = Path(store.removeprefix("sqlite:///")).parent
        if (directory / KEY_FILE).exists():
            return directory
    return DEFAULT_STATE_DIR
