"""`narrowgate serve`: run the gateway until stopped, after checking what would make it fail to start.

The app, uvicorn and the store are imported when the command runs, so the other commands start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.catalog import Catalog, CatalogError, load_catalog
from gateway.cli.exit_codes import EXIT_INVALID
from gateway.config import Settings, load_settings
from gateway.settings.cluster import worker_cluster, workers_problem


def run_serve(args: argparse.Namespace) -> int:
    from gateway.serving import PortUnavailable, bind_listener, interrupt_on_sigterm

    interrupt_on_sigterm()
    settings = load_settings(args.config)
    if args.open_loopback:
        settings = replace(settings, auth=replace(settings.auth, open_loopback=True))
    if args.workers is not None:
        settings = replace(settings, workers=args.workers)
    problem = workers_problem(settings.workers, settings.cluster, settings.state)  # the config's or the flag's
    if problem is not None:
        print(f"narrowgate: refusing to start: {problem}", file=sys.stderr)
        return EXIT_INVALID
    try:
        listener = bind_listener(settings.listen_host, settings.listen_port, reuse_port=settings.workers > 1)
    except PortUnavailable as exc:
        print(f"narrowgate: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return serve(settings, listener)


def serve(settings: Settings, listener: socket.socket) -> int:
    """Serve on `listener` (bound first, see gateway.serving) until SIGINT or SIGTERM; 0 after a clean stop."""
    with listener:
        return _serve(settings, listener)


def _serve(settings: Settings, listener: socket.socket) -> int:
    from gateway.supervisor import Supervisor
    from gateway.telemetry.memory_snapshots import start_if_asked

    try:
        catalog = load_catalog(settings.catalog_dir)
    except CatalogError as exc:
        print(f"narrowgate: refusing to start, the catalog is invalid:\n{exc}", file=sys.stderr)
        return EXIT_INVALID
    problem, tool_schemas = asyncio.run(preflight(settings))
    if problem is not None:
        print(f"narrowgate: refusing to start: {problem}", file=sys.stderr)
        return EXIT_INVALID
    if settings.workers == 1:
        import gateway.app  # noqa: F401  (imported untraced: tracing start-up took minutes under load)

        start_if_asked()  # NARROWGATE_TRACEMALLOC: a diagnostic, off unless set (docs/operations.md#soak)
        return run_gateway(settings, catalog, tool_schemas, listener)

    from gateway.serving import bind_listener

    def serve_worker(number: int, sock: socket.socket, started: Callable[[], None]) -> int:
        worker = replace(settings, cluster=worker_cluster(settings.cluster, number))
        return run_gateway(worker, catalog, tool_schemas, sock, started)

    # One socket per worker on the same address (SO_REUSEPORT): the kernel spreads connections evenly,
    # where one shared socket lets whichever worker wakes first take a whole burst of them.
    port = listener.getsockname()[1]
    listeners = [listener, *(bind_listener(settings.listen_host, port, reuse_port=True)
                             for _ in range(settings.workers - 1))]
    try:
        return Supervisor(listeners, serve_worker).run()
    finally:
        for extra in listeners[1:]:
            extra.close()


def run_gateway(settings: Settings, catalog: Catalog, tool_schemas: dict[str, Any], listener: socket.socket,
                on_started: Callable[[], None] | None = None) -> int:
    """One gateway process serving `listener` until stopped (the whole gateway, or one of its workers)."""
    import uvicorn

    from gateway.app import Gateway
    from gateway.cluster.connection import ClusterUnavailable
    from gateway.policy.engine import PolicyLoadError
    from gateway.serving import DrainingServer, StartRefused

    try:
        gateway = Gateway(settings, catalog, tool_schemas)
    except PolicyLoadError as exc:
        print(f"narrowgate: refusing to start, the policy set is invalid:\n{exc}", file=sys.stderr)
        return EXIT_INVALID
    # Forwarding headers only from configured proxies: uvicorn's default believes them from loopback,
    # which lets a local caller pick its own address (and shed the console's sign-in throttle).
    trusted_proxies = list(settings.forwarded_allow_ips)
    # No access log (the audit log and metrics record every call; uvicorn's logger would only build and drop
    # a line per request) and no `server` header naming the software behind the gateway.
    config = uvicorn.Config(
        gateway.app, host=settings.listen_host, port=settings.listen_port, loop="uvloop", http="httptools",
        log_level="warning", access_log=False, server_header=False, lifespan="on", timeout_graceful_shutdown=3,
        proxy_headers=bool(trusted_proxies), forwarded_allow_ips=trusted_proxies or None,
    )
    server = DrainingServer(config, on_stop=gateway.drain, refusals=(ClusterUnavailable,), on_started=on_started)
    try:
        server.run(sockets=[listener])
    except StartRefused as exc:
        print(f"narrowgate: refusing to start: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return 0


async def preflight(settings: Settings) -> tuple[str | None, dict[str, Any]]:
    """Reach Redis (if configured), open the store and apply the agents file once before serving, so
    a bad one is a clear refusal before any worker or upstream starts.

    Also returns the tool input schemas last seen, so the policy set is typed from the start.
    """
    from gateway.cluster.connection import ClusterUnavailable, reach_redis
    from gateway.registry.errors import RegistryError
    from gateway.store import StoreError, open_store

    try:
        await reach_redis(settings.cluster)
    except ClusterUnavailable as exc:
        return str(exc), {}
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
