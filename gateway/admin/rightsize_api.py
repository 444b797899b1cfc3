"""`/admin/v1/rightsize`: per agent, what it may do, what it did in a window, the difference and a proposal.

Admins only: it shows how the fleet could be attacked. Query: `agent` (one agent), `since` (a duration like
`30d`, default 30 days). 404 for an unknown agent, 422 when the window holds no recorded decision (nothing
was measured, so no share is reported), 400 for a bad `since`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.auth import AdminAuthenticator
from gateway.admin.http import admin_route, error_response, json_response
from gateway.privilege.rightsize import (
    DEFAULT_WINDOW_S,
    FleetRightsize,
    NoRecordedData,
    RightsizeSources,
    UnknownAgent,
    rightsize_fleet,
    rightsize_to_dict,
)
from gateway.settings.durations import parse_duration

PATH = "/admin/v1/rightsize"
Refresh = Callable[[], Awaitable[object]]


class RightsizeApi:
    def __init__(self, sources: RightsizeSources, auth: AdminAuthenticator,
                 after_report: Refresh | None = None) -> None:
        """`after_report`: run after a fleet report over the default window (the unused-share gauge's refresh)."""
        self.sources = sources
        self.auth = auth
        self.after_report = after_report

    def routes(self) -> list[Route]:
        return [Route(PATH, admin_route(self.auth, self.report, rightsize_errors), methods=["GET"])]

    async def report(self, request: Request, actor: str) -> Response:
        since = request.query_params.get("since")
        try:
            since_s = parse_duration(since) if since else DEFAULT_WINDOW_S
        except ValueError as exc:
            return error_response(400, f"since: {exc}")
        agent_id = request.query_params.get("agent") or None
        fleet = await self.fleet(since_s, agent_id)
        return json_response(rightsize_to_dict(fleet))

    async def fleet(self, since_s: float, agent_id: str | None) -> FleetRightsize:
        fleet = await rightsize_fleet(self.sources, since_s, agent_id)
        if self.after_report is not None and agent_id is None and since_s == DEFAULT_WINDOW_S:
            await self.after_report()
        return fleet


def rightsize_errors(exc: Exception) -> Response | None:
    if isinstance(exc, UnknownAgent):
        return error_response(404, str(exc))
    if isinstance(exc, NoRecordedData):
        return error_response(422, str(exc))
    return None
