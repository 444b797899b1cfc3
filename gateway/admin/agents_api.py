"""`/admin/v1/agents`: create, list, show, update, activate, suspend, resume, retire."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.auth import AdminAuthenticator
from gateway.admin.http import Endpoint, admin_route, error_response, json_response, read_json
from gateway.registry.model import Agent, agent_to_dict, event_to_dict
from gateway.registry.service import Conflict, NotFound, Registry, RegistryError

LIFECYCLE_ACTIONS = ("activate", "suspend", "resume", "retire")


def agent_view(agent: Agent, now: float) -> dict[str, Any]:
    """The stored record plus what the gateway treats it as now (an expired agent is retired)."""
    return {**agent_to_dict(agent), "effective_state": agent.effective_state(now).value}


class AgentsApi:
    def __init__(self, registry: Registry, auth: AdminAuthenticator) -> None:
        self.registry = registry
        self.auth = auth

    def routes(self) -> list[Route]:
        return [
            Route("/admin/v1/agents", self.route(self.list_or_create), methods=["GET", "POST"]),
            Route("/admin/v1/agents/{agent_id}", self.route(self.show_or_update), methods=["GET", "PATCH"]),
            Route("/admin/v1/agents/{agent_id}/{action}", self.route(self.lifecycle), methods=["POST"]),
        ]

    def route(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        return admin_route(self.auth, endpoint, registry_errors)

    async def list_or_create(self, request: Request, actor: str) -> Response:
        if request.method == "GET":
            now = self.registry.clock()
            return json_response({"agents": [agent_view(a, now) for a in self.registry.agents()]})
        body = await read_json(request)
        reason = str(body.pop("reason", "") or "created through the admin API")
        agent = await self.registry.create(body, actor, reason)
        return json_response(agent_view(agent, self.registry.clock()), 201)

    async def show_or_update(self, request: Request, actor: str) -> Response:
        agent_id = request.path_params["agent_id"]
        if request.method == "PATCH":
            body = await read_json(request)
            reason = str(body.pop("reason", "") or "updated through the admin API")
            updated = await self.registry.update(agent_id, body, actor, reason)
            return json_response(agent_view(updated, self.registry.clock()))
        agent = self.registry.get(agent_id)
        if agent is None:
            raise NotFound(f"no agent {agent_id!r}")
        events = await self.registry.events(agent_id)
        view = agent_view(agent, self.registry.clock())
        return json_response({**view, "events": [event_to_dict(e) for e in events]})

    async def lifecycle(self, request: Request, actor: str) -> Response:
        action = request.path_params["action"]
        if action not in LIFECYCLE_ACTIONS:
            return error_response(404, f"unknown action {action!r}; use one of {', '.join(LIFECYCLE_ACTIONS)}")
        body = await read_json(request)
        reason = str(body.get("reason") or "").strip()
        if not reason:
            raise RegistryError("a reason is required for every lifecycle change")
        change = getattr(self.registry, action)
        agent = await change(request.path_params["agent_id"], actor, reason)
        return json_response(agent_view(agent, self.registry.clock()))


def registry_errors(exc: Exception) -> Response | None:
    """Registry refusals as HTTP answers: 404 unknown, 409 conflicting, 400 otherwise."""
    if isinstance(exc, NotFound):
        return error_response(404, str(exc))
    if isinstance(exc, Conflict):
        return error_response(409, str(exc), exc.problems)
    if isinstance(exc, RegistryError):
        return error_response(400, str(exc), exc.problems)
    return None
