"""The console's right-sizing page (admins only): per agent, granted versus used tools in the window,
the headline share, and the proposal as the patch or admin call a person reviews and applies."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.console.catalog import Endpoint, PageHandler, Renderer
from gateway.console.security import require_admin
from gateway.console.sessions import ConsoleSession
from gateway.privilege.rightsize import DEFAULT_WINDOW_S, NoRecordedData, RightsizeSources, rightsize_fleet
from gateway.settings.durations import parse_duration

WINDOWS = ("1d", "7d", "30d", "90d")


class RightsizePages:
    def __init__(self, sources: RightsizeSources, render: Renderer) -> None:
        self.sources = sources
        self.render = render

    def routes(self, page: Callable[[PageHandler], Endpoint]) -> list[Route]:
        return [Route("/rightsize", page(self.rightsize_page), methods=["GET"])]

    async def rightsize_page(self, request: Request, session: ConsoleSession) -> Response:
        require_admin(session, "see right-sizing (it shows how the fleet could be attacked)")
        window = request.query_params.get("since", "30d")
        since_s = parse_duration(window) if window in WINDOWS else DEFAULT_WINDOW_S
        window = window if window in WINDOWS else "30d"
        try:
            fleet = await rightsize_fleet(self.sources, since_s)
        except NoRecordedData as exc:
            return self.page(request, session, window, None, str(exc))
        return self.page(request, session, window, fleet, None)

    def page(self, request: Request, session: ConsoleSession, window: str, fleet: object,
             no_data: str | None) -> HTMLResponse:
        return self.render(request, "rightsize.html", session, title="Right-sizing", nav="rightsize",
                           fleet=fleet, no_data=no_data, window=window, windows=WINDOWS)
