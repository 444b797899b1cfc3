"""Builds the gateway's ASGI application and owns its lifetime (upstreams up, then serve)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import __version__
from gateway.catalog import Catalog
from gateway.config import Settings
from gateway.identity.static_tokens import Authenticator
from gateway.mcp_methods import Methods
from gateway.transport.endpoint import McpEndpoint
from gateway.transport.sessions import SessionRegistry
from gateway.upstream.pool import UpstreamPool

log = logging.getLogger("narrowgate")
LIST_CHANGED = {
    "tools": "notifications/tools/list_changed",
    "prompts": "notifications/prompts/list_changed",
    "resources": "notifications/resources/list_changed",
}


class Gateway:
    """Everything one running gateway holds; the ASGI app is `self.app`."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.pool = UpstreamPool(catalog)
        self.sessions = SessionRegistry(settings.limits.session_idle_s)
        self.methods = Methods(catalog, self.pool)
        self.endpoint = McpEndpoint(settings, Authenticator(settings), self.methods, self.sessions)
        self.pool.on_list_changed = self.announce_list_changed
        self.pool.on_resource_updated = self.relay_resource_updated
        self.app = Starlette(
            routes=[
                Route("/mcp", self.endpoint, methods=["GET", "POST", "DELETE"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/.well-known/oauth-protected-resource", self.resource_metadata, methods=["GET"]),
                Route("/.well-known/oauth-protected-resource/mcp", self.resource_metadata, methods=["GET"]),
            ],
            lifespan=self.lifespan,
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.pool.start()
        down = [sid for sid, client in self.pool.clients.items() if not client.available]
        if down:
            log.warning("started with upstream(s) down: %s (retrying in the background)", ", ".join(down))
        log.info("Narrowgate %s serving MCP at %s/mcp", __version__, self.settings.base_url)
        try:
            yield
        finally:
            await self.pool.close()

    async def healthz(self, request: Request) -> Response:
        upstreams = {sid: client.available for sid, client in self.pool.clients.items()}
        return JSONResponse({"status": "ok", "version": __version__, "upstreams": upstreams})

    async def resource_metadata(self, request: Request) -> Response:
        """RFC 9728 protected-resource metadata for `/mcp`."""
        return JSONResponse({
            "resource": f"{self.settings.base_url}/mcp",
            "authorization_servers": [],
            "bearer_methods_supported": ["header"],
            "resource_name": "Narrowgate MCP gateway",
        })

    async def announce_list_changed(self, kinds: set[str]) -> None:
        for kind in sorted(kinds):
            message = {"jsonrpc": "2.0", "method": LIST_CHANGED[kind]}
            for session in self.sessions.all():
                session.publish(message)
            self.endpoint.listen_hub.publish(message["method"], {})

    async def relay_resource_updated(self, message: dict[str, Any]) -> None:
        uri = (message.get("params") or {}).get("uri")
        for session in self.sessions.all():
            if uri in session.subscriptions:
                session.publish(message)
        self.endpoint.listen_hub.publish("notifications/resources/updated", message.get("params") or {})
