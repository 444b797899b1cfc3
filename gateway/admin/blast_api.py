"""`/admin/v1/blast-radius`: what each agent can do with no person involved (gateway.privilege.blast_radius).

Admins only (the same check as /admin/v1/agents): the answer shows how the fleet could be attacked, so
approver and agent credentials are refused. An unknown agent or task is a 404.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.auth import AdminAuthenticator
from gateway.admin.http import admin_route, error_response, json_response
from gateway.privilege.blast_radius import BlastRadiusService, blast_to_dict, fleet_row
from gateway.privilege.blast_svg import blast_svg
from gateway.privilege.reach import UnknownAgent, UnknownTask

FORMATS = ("json", "svg")


class BlastRadiusApi:
    def __init__(self, service: BlastRadiusService, auth: AdminAuthenticator) -> None:
        self.service = service
        self.auth = auth

    def routes(self) -> list[Route]:
        return [
            Route("/admin/v1/blast-radius", admin_route(self.auth, self.fleet), methods=["GET"]),
            Route("/admin/v1/blast-radius/{agent_id}", admin_route(self.auth, self.agent, unknown_to_404),
                  methods=["GET"]),
        ]

    async def fleet(self, request: Request, actor: str) -> Response:
        return json_response({"agents": [fleet_row(b) for b in await self.service.fleet()]})

    async def agent(self, request: Request, actor: str) -> Response:
        shape = request.query_params.get("format", "json")
        if shape not in FORMATS:
            return error_response(400, f"unknown format {shape!r}; use one of {', '.join(FORMATS)}")
        blast = await self.service.agent(request.path_params["agent_id"], request.query_params.get("task") or None)
        if shape == "svg":
            return Response(blast_svg(blast), media_type="image/svg+xml")
        return json_response(blast_to_dict(blast))


def unknown_to_404(exc: Exception) -> Response | None:
    if isinstance(exc, UnknownAgent | UnknownTask):
        return error_response(404, str(exc.args[0]))
    return None
