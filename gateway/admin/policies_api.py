"""`/admin/v1/policies`: what policy set is in force, reload it, and what shadow mode saw."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.auth import AdminAuthenticator
from gateway.admin.http import admin_route, json_response
from gateway.policy.engine import PolicyEngine
from gateway.policy.reloader import PolicyReloader


class PoliciesApi:
    def __init__(self, engine: PolicyEngine, reloader: PolicyReloader, auth: AdminAuthenticator) -> None:
        self.engine = engine
        self.reloader = reloader
        self.auth = auth

    def routes(self) -> list[Route]:
        return [
            Route("/admin/v1/policies", self.guard(self.status), methods=["GET"]),
            Route("/admin/v1/policies/reload", self.guard(self.reload), methods=["POST"]),
            Route("/admin/v1/policies/shadow", self.guard(self.shadow), methods=["GET"]),
        ]

    def guard(self, endpoint: Callable[[str], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def with_actor(request: Request, actor: str) -> Response:
            return await endpoint(actor)

        return admin_route(self.auth, with_actor)

    async def status(self, actor: str) -> Response:
        return json_response(self.engine.status())

    async def reload(self, actor: str) -> Response:
        outcome = await self.reloader.reload(f"admin API ({actor})")
        body = {"ok": outcome.ok, "version": outcome.version, "changed": outcome.changed, "problems": outcome.problems}
        return json_response(body, 200 if outcome.ok else 422)

    async def shadow(self, actor: str) -> Response:
        return json_response({"disagreements": list(self.engine.shadow_disagreements),
                              "status": self.engine.status().get("shadow")})
