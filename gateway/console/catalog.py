"""The console's catalog pages: the queue of quarantined upstream tools, resources and resource
templates, one item's review, and the decision.

They drive the same ToolReviews and ResourceReviews services as the admin API
(`/admin/v1/catalog/tools`, `/admin/v1/catalog/resources`) and `narrowgate catalog`, which stay the
authority on who may review, what a discovered tool needs and the `expected_sha256` guard; the checks
here only come first so the person gets a plain answer. The decide form carries the hash of the
definition the page showed, so an item that changed again after the page was rendered is never
approved by accident (409). The services' `on_decided` observers (CatalogSync.apply_reviews,
CatalogSync.apply_resource_reviews) then rebuild what agents see and tell them.

Resources and templates are named by their review id (`/console/resources/res_...`): their URIs and
templates hold slashes, and a path of their own cannot collide with a server's tool page.
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
from gateway.console.security import Refused
from gateway.console.sessions import ConsoleSession
from gateway.console.views import Review, by_severity, definition_json, recently_decided, review_detail
from gateway.discovery.model import QUARANTINED, STATUSES, DefinitionChanged, ResourceReview, ToolReview
from gateway.discovery.resources import ResourceReviews
from gateway.discovery.service import ToolReviews
from gateway.links import resource_path, tool_path

log = logging.getLogger("narrowgate.console")
Endpoint = Callable[[Request], Awaitable[Response]]
PageHandler = Callable[[Request, ConsoleSession], Awaitable[Response]]
ActionHandler = Callable[[Request, ConsoleSession, dict[str, str]], Awaitable[Response]]
Renderer = Callable[..., HTMLResponse]  # Console.render
ACTIONS = ("approve", "reject")
ALL = "all"
FILTERS = (QUARANTINED, *(s for s in STATUSES if s != QUARANTINED), ALL)  # the queue's status filter
MAX_DATA_CLASSES = 20
MAX_DATA_CLASS_CHARS = 100


class CatalogPages:
    def __init__(self, reviews: ToolReviews, resources: ResourceReviews, render: Renderer) -> None:
        self.reviews = reviews
        self.resources = resources
        self.render = render

    def routes(self, page: Callable[[PageHandler], Endpoint],
               action: Callable[[ActionHandler], Endpoint]) -> list[Route]:
        """Relative to `/console`; `page` and `action` are the console's session and CSRF wrappers."""
        return [
            Route("/catalog", page(self.queue_page), methods=["GET"]),
            Route("/catalog/{server_id}/{name}", page(self.tool_page), methods=["GET"]),
            Route("/catalog/{server_id}/{name}/decide", action(self.decide), methods=["POST"]),
            Route("/resources/{review_id}", page(self.resource_page), methods=["GET"]),
            Route("/resources/{review_id}/decide", action(self.decide_resource), methods=["POST"]),
        ]

    def quarantined_count(self) -> int:
        """Everything waiting for review: tools, resources and templates."""
        return len(self.reviews.list(QUARANTINED)) + len(self.resources.list(QUARANTINED))

    # pages

    async def queue_page(self, request: Request, session: ConsoleSession) -> Response:
        shown = request.query_params.get("status") or QUARANTINED
        if shown not in FILTERS:
            raise Refused(400, f"Unknown status filter: choose one of {', '.join(FILTERS)}.")
        status = None if shown == ALL else shown
        tools = [(review, by_severity(review.flags), self.reviews.refusal(review, session.person))
                 for review in self.reviews.list(status)]  # newest change first
        resources = [(review, by_severity(review.flags), self.resources.refusal(review, session.person))
                     for review in self.resources.list(status)]
        decided: list[Review] = [*self.reviews.list(), *self.resources.list()]
        return self.render(request, "catalog.html", session, title="Catalog", nav="catalog", shown=shown,
                           filters=FILTERS, rows=tools, resource_rows=resources, decided=recently_decided(decided))

    async def tool_page(self, request: Request, session: ConsoleSession) -> Response:
        review = self.reviewed(request)
        return self.render(request, "catalog_tool.html", session, title=f"Tool {reveal_hidden(review.exposed_name)}",
                           **self.review_context(review, self.reviews.refusal(review, session.person)),
                           risk_tiers=RISK_TIERS)

    async def resource_page(self, request: Request, session: ConsoleSession) -> Response:
        review = self.resources.get(request.path_params["review_id"])
        return self.render(request, "catalog_resource.html", session,
                           title=f"{review.kind.capitalize()} {reveal_hidden(review.key)}",
                           **self.review_context(review, self.resources.refusal(review, session.person)))

    @staticmethod
    def review_context(review: ToolReview | ResourceReview, refusal: str | None) -> dict[str, Any]:
        """What every review page shows: the record, who may decide, the diff, both definitions as JSON."""
        waiting = review.status == QUARANTINED
        approved = review.approved_definition
        return {"nav": "catalog", "review": review, "waiting": waiting, "refusal": refusal if waiting else None,
                "detail": review_detail(review), "current": definition_json(review.current_definition),
                "approved": definition_json(approved) if approved is not None else None}

    # deciding

    async def decide(self, request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
        action = chosen_action(form)
        review = self.reviewed(request)
        common: dict[str, Any] = {"expected_hash": reviewed_hash(form), "comment": form.get("comment", "")}
        try:  # the service decides who may and what is waiting; only the wording for a person is ours
            if action == "approve":
                self.reviews.check(review.key, session.person, common["expected_hash"])  # before reading risk
                decided = await self.reviews.approve(review.key, session.person, **common,
                                                     **classification(review, form))
            else:
                decided = await self.reviews.reject(review.key, session.person, **common)
        except DefinitionChanged:
            raise changed_again("tool", review.current_hash) from None
        log.info("console: %s %s tool %s of %s", session.person.actor, decided.status, decided.name,
                 decided.server_id)
        session.flash(f"You {decided.status} {reveal_hidden(decided.exposed_name)}.")
        return RedirectResponse(tool_path(decided.server_id, decided.name), 303)

    async def decide_resource(self, request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
        action = chosen_action(form)
        review = self.resources.get(request.path_params["review_id"])
        decide = self.resources.approve if action == "approve" else self.resources.reject
        try:
            decided = await decide(review.id, session.person, expected_hash=reviewed_hash(form),
                                   comment=form.get("comment", ""))
        except DefinitionChanged:
            raise changed_again(review.kind, review.current_hash) from None
        log.info("console: %s %s %s %r of %s", session.person.actor, decided.status, decided.kind, decided.key,
                 decided.server_id)
        session.flash(f"You {decided.status} {decided.kind} {reveal_hidden(decided.key)}.")
        return RedirectResponse(resource_path(decided.id), 303)

    def reviewed(self, request: Request) -> ToolReview:
        return self.reviews.get(request.path_params["server_id"], request.path_params["name"])


def chosen_action(form: dict[str, str]) -> str:
    action = form.get("action", "")
    if action not in ACTIONS:
        raise Refused(400, "Choose Approve or Reject.")
    return action


def reviewed_hash(form: dict[str, str]) -> str:
    """The hash of the definition the page showed; a decision always names one."""
    expected = form.get("expected_sha256", "")
    if not expected:
        raise Refused(400, "The form does not name the definition you reviewed: reload the page. "
                           "Nothing was decided.")
    return expected


def changed_again(noun: str, current_hash: str) -> Refused:
    return Refused(409, f"The {noun} changed again since this page was loaded (it is now {current_hash}): "
                        "reload the page and review the new definition. Nothing was decided.")


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
