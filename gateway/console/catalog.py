"""The console's catalog pages: the queue of quarantined upstream tools, one tool's review, and the decision.

They drive the same ToolReviews service as the admin API (`/admin/v1/catalog/tools`) and `narrowgate
catalog`, which stays the authority on who may review, what a discovered tool needs and the
`expected_sha256` guard; the checks here only come first so the person gets a plain answer. The decide
form carries the hash of the definition the page showed, so a tool that changed again after the page
was rendered is never approved by accident (409). The service's `on_decided` observers (Gateway.apply_reviews)
then rebuild the catalog and tell the agents whose tool list changed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway.catalog.definitions import reveal_hidden
from gateway.catalog.model import RISK_TIERS
from gateway.console.links import tool_path
from gateway.console.security import Refused
from gateway.console.sessions import ConsoleSession
from gateway.console.views import by_severity, definition_json, recently_decided, review_detail
from gateway.discovery.model import QUARANTINED, DefinitionChanged, ToolReview
from gateway.discovery.service import ToolReviews

log = logging.getLogger("narrowgate.console")
Endpoint = Callable[[Request], Awaitable[Response]]
PageHandler = Callable[[Request, ConsoleSession], Awaitable[Response]]
ActionHandler = Callable[[Request, ConsoleSession, dict[str, str]], Awaitable[Response]]
Renderer = Callable[..., HTMLResponse]  # Console.render
ACTIONS = ("approve", "reject")
MAX_DATA_CLASSES = 20
MAX_DATA_CLASS_CHARS = 100


class CatalogPages:
    def __init__(self, reviews: ToolReviews, render: Renderer) -> None:
        self.reviews = reviews
        self.render = render

    def routes(self, page: Callable[[PageHandler], Endpoint],
               action: Callable[[ActionHandler], Endpoint]) -> list[Route]:
        """Relative to `/console`; `page` and `action` are the console's session and CSRF wrappers."""
        return [
            Route("/catalog", page(self.queue_page), methods=["GET"]),
            Route("/catalog/{server_id}/{name}", page(self.tool_page), methods=["GET"]),
            Route("/catalog/{server_id}/{name}/decide", action(self.decide), methods=["POST"]),
        ]

    def quarantined_count(self) -> int:
        return len(self.reviews.list(QUARANTINED))

    # pages

    async def queue_page(self, request: Request, session: ConsoleSession) -> Response:
        rows = [(review, by_severity(review.flags), self.reviews.refusal(review, session.person))
                for review in self.reviews.list(QUARANTINED)]  # newest change first
        return self.render(request, "catalog.html", session, title="Catalog", nav="catalog", rows=rows,
                           decided=recently_decided(self.reviews.list()))

    async def tool_page(self, request: Request, session: ConsoleSession) -> Response:
        review = self.reviewed(request)
        waiting = review.status == QUARANTINED
        approved = review.approved_definition
        title = f"Tool {reveal_hidden(review.exposed_name)}"
        return self.render(request, "catalog_tool.html", session, title=title, nav="catalog",
                           review=review, waiting=waiting,
                           refusal=self.reviews.refusal(review, session.person) if waiting else None,
                           detail=review_detail(review), current=definition_json(review.current_definition),
                           approved=definition_json(approved) if approved is not None else None,
                           risk_tiers=RISK_TIERS)

    # deciding

    async def decide(self, request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
        action = form.get("action")
        if action not in ACTIONS:
            raise Refused(400, "Choose Approve or Reject.")
        review = self.reviewed(request)
        expected = form.get("expected_sha256", "")
        if not expected:
            raise Refused(400, "The form does not name the definition you reviewed: reload the page. "
                               "Nothing was decided.")
        common: dict[str, Any] = {"expected_hash": expected, "comment": form.get("comment", "")}
        try:  # the service decides who may and what is waiting; only the wording for a person is ours
            if action == "approve":
                self.reviews.check(review.key, session.person, expected)  # before reading risk from the form
                decided = await self.reviews.approve(review.key, session.person, **common,
                                                     **classification(review, form))
            else:
                decided = await self.reviews.reject(review.key, session.person, **common)
        except DefinitionChanged:
            raise Refused(409, "The tool changed again since this page was loaded (it is now "
                               f"{review.current_hash}): reload the page and review the new definition. "
                               "Nothing was decided.") from None
        log.info("console: %s %s tool %s of %s", session.person.actor, decided.status, decided.name,
                 decided.server_id)
        session.flash(f"You {decided.status} {reveal_hidden(decided.exposed_name)}.")
        return RedirectResponse(tool_path(decided.server_id, decided.name), 303)

    def reviewed(self, request: Request) -> ToolReview:
        return self.reviews.get(request.path_params["server_id"], request.path_params["name"])


def classification(review: ToolReview, form: dict[str, str]) -> dict[str, Any]:
    """Risk tier, data classes and egress for a discovered tool; a catalogued tool keeps its manifest's."""
    if review.origin != "discovered":
        return {}
    risk = form.get("risk", "")
    if risk not in RISK_TIERS:
        raise Refused(400, f"Choose a risk tier for this discovered tool ({', '.join(RISK_TIERS)}). "
                           "Nothing was decided.")
    return {"risk": risk, "data_classes": data_classes_of(form.get("data_classes", "")),
            "egress": form.get("egress") is not None}  # an unticked checkbox sends nothing


def data_classes_of(text: str) -> list[str]:
    """Comma-separated data classes, trimmed, empty ones and repeats dropped."""
    classes = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if len(classes) > MAX_DATA_CLASSES or any(len(c) > MAX_DATA_CLASS_CHARS for c in classes):
        raise Refused(400, f"At most {MAX_DATA_CLASSES} data classes of up to {MAX_DATA_CLASS_CHARS} characters "
                           "each. Nothing was decided.")
    return classes
