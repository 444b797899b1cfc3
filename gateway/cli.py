"""`narrowgate`: run the gateway, its demo, and check and review its catalog."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.admin.client import (
    AdminClientError,
    add_agents_parser,
    add_approvals_parser,
    add_keys_parser,
    add_tasks_parser,
)
from gateway.audit_commands import add_audit_parser
from gateway.catalog import CatalogError, load_catalog
from gateway.catalog_commands import add_catalog_review_parsers
from gateway.config import ConfigError, Settings, load_settings
from gateway.demo.state import DemoStateError
from gateway.logs import configure as configure_logging
from gateway.policy_commands import add_policy_parser

EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_INVALID
    try:
        return int(args.run(args))
    except KeyboardInterrupt:  # Ctrl-C before the server took over the signal (e.g. during start-up)
        print("narrowgate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except AdminClientError as exc:
        print(f"narrowgate: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, DemoStateError, ValueError) as exc:
        print(f"narrowgate: {exc}", file=sys.stderr)
        return EXIT_INVALID


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="narrowgate",
        description="Narrowgate: a least-privilege gateway for AI agents' MCP tool calls.",
    )
    parser.add_argument("--version", action="version", version=f"narrowgate {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("NARROWGATE_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"], help="log verbosity (default: info)")
    parser.add_argument("--log-format", default=os.environ.get("NARROWGATE_LOG_FORMAT", "text"),
                        choices=["text", "json"], help="text lines or one JSON object per line (default: text)")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway", description="Run the gateway until stopped.")
    serve.add_argument("--config", type=Path, help="YAML config file (NARROWGATE_* variables override it)")
    serve.add_argument("--open-loopback", action="store_true",
                       help="let unauthenticated local clients in (development only; refused unless bound "
                            "to a loopback address)")
    serve.set_defaults(run=run_serve)

    add_demo_parser(commands)

    catalog = commands.add_parser("catalog", help="work with the tool catalog")
    catalog_commands = catalog.add_subparsers(title="catalog commands", metavar="COMMAND", required=True)
    validate = catalog_commands.add_parser("validate", help="check every manifest; report problems with file:line")
    validate.add_argument("--config", type=Path, help="take the catalog directory from this config")
    validate.add_argument("--catalog", type=Path, help="catalog directory (default: tool_catalog/)")
    validate.set_defaults(run=run_catalog_validate)
    add_catalog_review_parsers(catalog_commands)

    add_agents_parser(commands)
    add_tasks_parser(commands)
    add_approvals_parser(commands)
    add_keys_parser(commands)
    add_policy_parser(commands)
    add_audit_parser(commands)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    from gateway.serving import PortUnavailable, bind_listener, interrupt_on_sigterm

    interrupt_on_sigterm()
    settings = load_settings(args.config)
    if args.open_loopback:
        settings = replace(settings, auth=replace(settings.auth, open_loopback=True))
    try:
        listener = bind_listener(settings.listen_host, settings.listen_port)
    except PortUnavailable as exc:
        print(f"narrowgate: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return serve(settings, listener)


def serve(settings: Settings, listener: socket.socket) -> int:
    """Serve on `listener` (bound first, see gateway.serving) until SIGINT or SIGTERM; 0 after a clean stop."""
    with listener:
        return _serve(settings, listener)


def _serve(settings: Settings, listener: socket.socket) -> int:
    import uvicorn

    from gateway.app import Gateway
    from gateway.policy.engine import PolicyLoadError
    from gateway.serving import DrainingServer
    from gateway.telemetry.memory_snapshots import start_if_asked

    start_if_asked()  # NARROWGATE_TRACEMALLOC: a diagnostic, off unless set (docs/operations.md#soak)
    try:
        catalog = load_catalog(settings.catalog_dir)
    except CatalogError as exc:
        print(f"narrowgate: refusing to start, the catalog is invalid:\n{exc}", file=sys.stderr)
        return EXIT_INVALID
    problem, tool_schemas = asyncio.run(preflight(settings))
    if problem is not None:
        print(f"narrowgate: refusing to start: {problem}", file=sys.stderr)
        return EXIT_INVALID
    try:
        gateway = Gateway(settings, catalog, tool_schemas)
    except PolicyLoadError as exc:
        print(f"narrowgate: refusing to start, the policy set is invalid:\n{exc}", file=sys.stderr)
        return EXIT_INVALID
    # Forwarding headers only from configured proxies: uvicorn's default believes them from loopback,
    # which lets a local caller pick its own address (and shed the console's sign-in throttle).
    trusted_proxies = list(settings.forwarded_allow_ips)
    config = uvicorn.Config(
        gateway.app, host=settings.listen_host, port=settings.listen_port, loop="uvloop", http="httptools",
        log_level="warning", lifespan="on", timeout_graceful_shutdown=3,
        proxy_headers=bool(trusted_proxies), forwarded_allow_ips=trusted_proxies or None,
    )
    DrainingServer(config, on_stop=gateway.drain).run(sockets=[listener])
    return 0


async def preflight(settings: Settings) -> tuple[str | None, dict[str, Any]]:
    """Open the store and apply the agents file once before serving, so a bad one is a clear refusal.

    Also returns the tool input schemas last seen, so the policy set is typed from the start.
    """
    from gateway.registry.errors import RegistryError
    from gateway.store import StoreError, open_store

    try:
        store = open_store(settings.state)
    except StoreError as exc:
        return f"state store: {exc}", {}
    try:
        await store.migrate()
        if settings.agents_file is not None:
            await check_agents_file(settings.agents_file, await store.list_agents())
        return None, await store.load_tool_schemas()
    except StoreError as exc:
        return f"state store: {exc}", {}
    except RegistryError as exc:
        return f"agents file {settings.agents_file}:\n{exc}", {}
    finally:
        await store.close()


async def check_agents_file(agents_file: Path, stored: list[Any]) -> None:
    """Apply the agents file to a scratch copy of the registry: every problem, but no change yet.

    The serving process applies it for real, so each change is audited there.
    """
    from gateway.registry.service import Registry
    from gateway.store import open_store

    scratch = open_store("sqlite:///:memory:")
    try:
        await scratch.migrate()
        for agent in stored:
            await scratch.save_agent(agent)
        await (await Registry.open(scratch)).load_agents_file(agents_file)
    finally:
        await scratch.close()


def run_catalog_validate(args: argparse.Namespace) -> int:
    config = load_settings(args.config, resolve_secrets=False) if args.config else None  # only its `catalog`
    directory = args.catalog or (config.catalog_dir if config else Path("tool_catalog"))
    try:
        catalog = load_catalog(directory)
    except CatalogError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return EXIT_INVALID
    tools = sum(len(server.tools) for server in catalog.servers.values())
    print(f"catalog ok: {len(catalog.servers)} server(s), {tools} tool(s) in {directory}")
    return 0


def add_demo_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="run the gateway with two demo upstreams (what `make run` does)",
        description="Run the gateway in front of the demo upstreams. Tokens, keys and the store are kept in the "
                    "state directory across restarts.")
    demo.add_argument("--port", type=int, help="gateway port (default: the port of $NARROWGATE_LISTEN, else 8080)")
    demo.add_argument("--state-dir", type=Path, help="the demo's state directory (default: .narrowgate/demo/)")
    demo.set_defaults(run=run_demo)
    sub = demo.add_subparsers(title="demo commands", metavar="COMMAND")
    token = sub.add_parser(
        "token", help="print a fresh workload token (JWT-SVID) from the demo's development trust domain",
        description="Print a workload identity token for an agent of the running demo, as SPIRE would issue it. "
                    "Present it on /mcp, or exchange it at /oauth/token for a task token (docs/tasks.md).")
    token.add_argument("--agent", default="demo-agent", help="the agent whose workload it names (default: demo-agent)")
    token.add_argument("--ttl", type=int, default=900, help="seconds the token is good for (default 900)")
    token.add_argument("--gateway", help="the demo's base URL, for the audience (default: $NARROWGATE_URL, else "
                                         "where the demo last listened)")
    token.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS,
                       help="the demo's state directory (default: the one $NARROWGATE_STATE is in, else "
                            ".narrowgate/demo/)")
    token.set_defaults(run=run_demo_token)


def run_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo as demo
    from gateway.demo.state import DEFAULT_STATE_DIR
    from gateway.serving import interrupt_on_sigterm

    interrupt_on_sigterm()
    return demo(args.port, args.state_dir or DEFAULT_STATE_DIR)


def run_demo_token(args: argparse.Namespace) -> int:
    from gateway.demo import run_token

    return run_token(args.agent, args.state_dir, args.gateway, args.ttl)


if __name__ == "__main__":
    raise SystemExit(main())
