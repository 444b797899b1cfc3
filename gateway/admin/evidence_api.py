"""`/admin/v1/evidence`: compliance evidence for one framework, from the running deployment (admins only).

`?framework=NAME` (required), `?since=30d` (the period for activity figures; default 30 days) and
`?format=json|md|html` (default json). The report shows how the fleet could be attacked, so only the
admin role may read it: approver and agent credentials are refused like everywhere in the admin API.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.auth import AdminAuthenticator
from gateway.admin.http import admin_route, error_response
from gateway.privilege.evidence.frameworks import FRAMEWORKS
from gateway.privilege.evidence.render import CONTENT_TYPES, FORMATS, render
from gateway.privilege.evidence.report import build_report
from gateway.privilege.evidence.sources import EvidenceSources
from gateway.settings.durations import parse_duration

log = logging.getLogger("narrowgate.admin")
DEFAULT_WINDOW = "30d"


class EvidenceApi:
    def __init__(self, sources: EvidenceSources, auth: AdminAuthenticator) -> None:
        self.sources = sources
        self.auth = auth

    def routes(self) -> list[Route]:
        return [Route("/admin/v1/evidence", admin_route(self.auth, self.evidence), methods=["GET"])]

    async def evidence(self, request: Request, actor: str) -> Response:
        name = request.query_params.get("framework", "")
        fmt = request.query_params.get("format", "json")
        if name not in FRAMEWORKS:
            return error_response(400, f"unknown framework {name!r}: choose one of {', '.join(FRAMEWORKS)}")
        if fmt not in FORMATS:
            return error_response(400, f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
        try:
            window = parse_duration(request.query_params.get("since", DEFAULT_WINDOW))
        except ValueError as exc:
            return error_response(400, f"since: {exc} (e.g. 30d, 12h)")
        report = await build_report(self.sources, name, window)
        log.info("evidence report for %s read by %s", name, actor)
        return Response(render(report, fmt), media_type=CONTENT_TYPES[fmt])
