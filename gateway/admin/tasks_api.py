"""`/admin/v1/tasks`: an orchestrator starts tasks for agents (and gets their task tokens), lists, shows, ends them.

Same admin authentication as `/admin/v1/agents`; agent credentials never work here. The admin who
starts a task is recorded as its `started_by`, and the admin who ends one as the actor of that event.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.auth import AdminAuthenticator
from gateway.admin.http import Endpoint, admin_route, error_response, json_response, read_json
from gateway.registry.errors import RegistryError
from gateway.registry.service import Registry
from gateway.tasks.model import (
    AgentNotActive,
    TaskEnded,
    TaskError,
    TaskNotFound,
    TaskState,
    ToolsRefused,
    event_to_dict,
    task_to_dict,
)
from gateway.tasks.service import TaskService
from gateway.tasks.tokens import TaskTokenIssuer

log = logging.getLogger("narrowgate.admin")
END_ACTIONS = ("complete", "fail", "revoke")
MIN_DEADLINE_S = 1
START_FIELDS = frozenset({"agent_id", "purpose", "tools", "deadline_s", "budget", "trim", "reason"})
# A listing returns (and loads) at most this many tasks, the newest: the store keeps every task
# ever started, and a listing of all of them grew the gateway's memory with its history.
DEFAULT_LIST_LIMIT = 1000
MAX_LIST_LIMIT = 10_000


def list_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIST_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise TaskError("limit must be a number") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise TaskError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    return limit


class NotFound(Exception):
    """An unknown agent or task named by the request (404)."""


class TasksApi:
    def __init__(self, tasks: TaskService, tokens: TaskTokenIssuer, registry: Registry,
                 auth: AdminAuthenticator) -> None:
        self.tasks = tasks
        self.tokens = tokens
        self.registry = registry
        self.auth = auth

    def routes(self) -> list[Route]:
        return [
            Route("/admin/v1/tasks", self.guard(self.list_or_start), methods=["GET", "POST"]),
            Route("/admin/v1/tasks/{task_id}", self.guard(self.show), methods=["GET"]),
            Route("/admin/v1/tasks/{task_id}/{action}", self.guard(self.end), methods=["POST"]),
        ]

    def guard(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        return admin_route(self.auth, endpoint, task_errors)

    async def list_or_start(self, request: Request, actor: str) -> Response:
        if request.method == "GET":
            agent_id = request.query_params.get("agent") or None
            state = request.query_params.get("state") or None
            if state is not None and state not in {s.value for s in TaskState}:
                raise TaskError(f"unknown state {state!r}; use one of {', '.join(s.value for s in TaskState)}")
            tasks = await self.tasks.list(agent_id=agent_id, state=state, limit=list_limit(request))
            return json_response({"tasks": [task_to_dict(t) for t in tasks]})
        return await self.start(await read_json(request), actor)

    async def start(self, body: dict[str, Any], actor: str) -> Response:
        unknown_fields = sorted(set(body) - START_FIELDS)
        if unknown_fields:
            raise TaskError(f"unknown field(s): {', '.join(unknown_fields)}; "
                            f"use {', '.join(sorted(START_FIELDS))}")
        agent_id = body.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id.strip():
            raise TaskError("agent_id is required: the agent the task is for")
        agent = self.registry.get(agent_id.strip())
        if agent is None:
            raise NotFound(f"no agent {agent_id.strip()!r}")
        tools = body.get("tools")
        if not isinstance(tools, list):
            raise TaskError("tools is required: a list of the exposed tool names the task needs")
        deadline_s = body.get("deadline_s")
        if deadline_s is not None and (
            isinstance(deadline_s, bool) or not isinstance(deadline_s, int | float) or not math.isfinite(deadline_s)
        ):
            raise TaskError("deadline_s must be a number of seconds from now")
        if deadline_s is not None and deadline_s < MIN_DEADLINE_S:
            # A task token carries whole seconds: a shorter task could not be handed a usable one.
            raise TaskError(f"deadline_s must be at least {MIN_DEADLINE_S} second (from now)")
        trim = body.get("trim", False)
        if not isinstance(trim, bool):
            raise TaskError("trim must be true or false")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise TaskError("reason must be a string")
        task = await self.tasks.start(agent.id, body.get("purpose", ""), tools, started_by=actor,
                                      deadline_s=deadline_s, budget=body.get("budget"), trim=trim)
        try:
            token, expires_in = self.tokens.issue(task, agent)
        except TaskEnded as exc:
            # No token could be issued (the deadline came too close): end the task rather than leave it dangling.
            await self.tasks.revoke(task.id, actor, f"no task token could be issued: {exc.reason}")
            raise TaskError(f"the deadline is too close to issue a task token ({exc.reason})") from None
        log.info("task %s started for agent %s by %s through the admin API%s", task.id, agent.id, actor,
                 f": {reason.strip()}" if reason and reason.strip() else "")
        return json_response({"task": task_to_dict(task), "token": token, "expires_in": expires_in}, 201)

    async def show(self, request: Request, actor: str) -> Response:
        task_id = request.path_params["task_id"]
        task = self.tasks.get(task_id) or await self.tasks.store.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r}")
        events = await self.tasks.events(task_id)
        return json_response({**task_to_dict(task), "events": [event_to_dict(e) for e in events]})

    async def end(self, request: Request, actor: str) -> Response:
        action = request.path_params["action"]
        if action not in END_ACTIONS:
            return error_response(404, f"unknown action {action!r}; use one of {', '.join(END_ACTIONS)}")
        task_id = request.path_params["task_id"]
        body = await read_json(request)
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise TaskError("a reason is required to end a task")
        try:
            task = await getattr(self.tasks, action)(task_id, actor, reason)
        except TaskNotFound:
            # Tasks that ended long ago leave the service's memory but not the store.
            stored = await self.tasks.store.get_task(task_id)
            if stored is None:
                raise
            raise TaskEnded(f"task {task_id} already ended: task {stored.state.value}", task_id,
                            stored.state) from None
        return json_response(task_to_dict(task))


def task_errors(exc: Exception) -> Response | None:
    """Task refusals as HTTP answers: 404 unknown, 409 ended or inactive, 400 otherwise."""
    if isinstance(exc, NotFound | TaskNotFound):
        return error_response(404, str(exc))
    if isinstance(exc, AgentNotActive):
        return error_response(409, str(exc))
    if isinstance(exc, TaskEnded):
        return error_response(409, exc.reason)
    if isinstance(exc, ToolsRefused):
        body: dict[str, Any] = {"error": exc.message}
        if exc.unknown:
            body["unknown"] = list(exc.unknown)
        if exc.outside:
            body["outside"] = list(exc.outside)
        return json_response(body, 400)
    if isinstance(exc, TaskError | RegistryError):
        return error_response(400, str(exc))
    return None
