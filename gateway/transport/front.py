"""The ASGI app uvicorn serves: `/mcp` straight to its endpoint, everything else to the Starlette app.

Every agent request is a `/mcp` request, and the endpoint is raw ASGI already. Through Starlette it
also passed the error and exception middleware (a wrapped `send` each), the router's match over
every route and the route's method check, for nothing the endpoint uses (see docs/performance.md). Other verbs on `/mcp`
(HEAD, PUT...) still go through Starlette, which answers them 405 as before, and so does everything
under a root path.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

MCP_PATH = "/mcp"
MCP_VERBS = frozenset({"GET", "POST", "DELETE"})


class McpFirst:
    def __init__(self, endpoint: ASGIApp, app: ASGIApp) -> None:
        self.endpoint = endpoint
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["path"] == MCP_PATH and scope["method"] in MCP_VERBS
                and not scope.get("root_path")):
            await self.endpoint(scope, receive, send)
            return
        await self.app(scope, receive, send)
