"""`/admin/v1/agents`: create, list, show, update, activate, suspend, resume, retire."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.auth import AdminAuthenticator, AdminAuthError
from gateway.registry.errors import Problem
from gateway.registry.model import Agent, agent_to_dict, event_to_dict
from gateway.registry.service import Conflict, NotFound, Registry, RegistryError

LIFECYCLE_ACTIONS = ("activate", "suspend", "resume", "retire")
Endpoint = Callable[[Request, str], Awaitable[Response]]


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error_response(status: int, message: str, problems: tuple[Problem, ...] = ()) -> Response:
    body: dict[str, Any] = {"error": message}
    if problems:
        body["problems"] = [str(p) for p in problems]
    return json_response(body, status)


def agent_view(agent: Agent, now: float) -> dict[str, Any]:
    """The stored record plus what the gateway treats it as now (an expired agent is retired)."""
    return {**agent_to_dict(agent), "effective_state": agent.effective_state(now).value}


class AgentsApi:
    def __init__(self, registry: Registry, auth: AdminAuthenticator) -> None:
        self.registry = registry
        self.auth = auth

    def routes(self) -> list[Route]:
        return [
            Route("/admin/v1/agents", self.guard(self.list_or_create), methods=["GET", "POST"]),
            Route("/admin/v1/agents/{agent_id}", self.guard(self.show_or_update), methods=["GET", "PATCH"]),
            Route("/admin/v1/agents/{agent_id}/{action}", self.guard(self.lifecycle), methods=["POST"]),
        ]

    def guard(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate the admin, then map registry errors onto HTTP answers."""

        async def guarded(request: Request) -> Response:
            try:
                actor = await self.auth.authenticate(request.headers.get("authorization"))
            except AdminAuthError as exc:
                headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
                return Response(orjson.dumps({"error": exc.message}), exc.status, headers, "application/json")
            try:
                return await endpoint(request, actor)
            except NotFound as exc:
                return error_response(404, str(exc))
            except Conflict as exc:
                return error_response(409, str(exc), exc.problems)
            except RegistryError as exc:
                return error_response(400, str(exc), exc.problems)

        return guarded

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
            agent = await self.registry.update(agent_id, body, actor, reason)
            return json_response(agent_view(agent, self.registry.clock()))
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


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RegistryError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RegistryError("the request body must be a JSON object")
    return body


