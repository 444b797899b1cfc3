"""The console's blast-radius pages (admins only): the fleet ranked, and one agent's picture and figures.

They read the same BlastRadiusService as `/admin/v1/blast-radius` and `narrowgate blast-radius`. The
picture is the SVG of gateway.privilege.blast_svg inlined in the page (presentation attributes only, so
the console's Content-Security-Policy, which allows no inline styles or scripts, lets it draw).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.console.catalog import Endpoint, PageHandler, Renderer
from gateway.console.security import Refused, require_admin
from gateway.console.sessions import ConsoleSession
from gateway.privilege.blast_radius import BlastRadiusService, blast_to_dict
from gateway.privilege.blast_svg import blast_svg
from gateway.privilege.reach import UnknownAgent, UnknownTask


class BlastPages:
    def __init__(self, service: BlastRadiusService, render: Renderer) -> None:
        self.service = service
        self.render = render

    def routes(self, page: Callable[[PageHandler], Endpoint]) -> list[Route]:
        """Relative to `/console`; `page` is the console's session wrapper."""
        return [
            Route("/blast-radius", page(self.fleet_page), methods=["GET"]),
            Route("/blast-radius/{agent_id}", page(self.agent_page), methods=["GET"]),
        ]

    async def fleet_page(self, request: Request, session: ConsoleSession) -> Response:
        require_admin(session, "see blast radius (it shows how the fleet could be attacked)")
        fleet = await self.service.fleet()
        return self.render(request, "blast_fleet.html", session, title="Blast radius", nav="blast", fleet=fleet)

    async def agent_page(self, request: Request, session: ConsoleSession) -> Response:
        require_admin(session, "see blast radius (it shows how the fleet could be attacked)")
        agent_id, task_id = request.path_params["agent_id"], request.query_params.get("task") or None
        try:
            blast = await self.service.agent(agent_id, task_id)
        except (UnknownAgent, UnknownTask) as exc:
            raise Refused(404, f"{str(exc.args[0]).capitalize()}.") from None
        view: dict[str, Any] = blast_to_dict(blast)
        # The SVG escapes every name it draws (blast_svg._x): safe to inline.
        picture = Markup(blast_svg(blast))
        return self.render(request, "blast_radius.html", session, title=f"Blast radius of {agent_id}", nav="blast",
                           blast=view, picture=picture)
