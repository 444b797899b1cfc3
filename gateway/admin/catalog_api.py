"""`/admin/v1/catalog/tools` and `/admin/v1/catalog/resources`: the review queues of upstream tools,
resources and resource templates, and their approval or rejection.

Tool owners (the manifest's tool or server owner, by name or group) and admins may review; the
person's credential is an admin or approver credential, never an agent's. A reviewer names the
definition hash they looked at (`expected_sha256`), so a tool that changes again meanwhile cannot be
approved by accident. Resources and templates are reviewed by their server's owner or an admin, and
named by their review id (URIs hold slashes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.auth import AdminAuthenticator
from gateway.admin.http import Endpoint, admin_route, error_response, json_response, read_json
from gateway.approvals.model import Approver
from gateway.catalog.definitions import definition_diff, description_diff
from gateway.discovery.model import STATUSES, ResourceReview, ReviewError, ToolReview
from gateway.discovery.resources import ResourceReviews
from gateway.discovery.service import ToolReviews

APPROVE_FIELDS = frozenset({"expected_sha256", "risk", "data_classes", "egress", "comment"})
REJECT_FIELDS = frozenset({"expected_sha256", "comment"})


class CatalogApi:
    def __init__(self, reviews: ToolReviews, auth: AdminAuthenticator, resources: ResourceReviews) -> None:
        self.reviews = reviews
        self.auth = auth
        self.resources = resources

    def routes(self) -> list[Route]:
        return [
            Route("/admin/v1/catalog/tools", self.guard(self.list), methods=["GET"]),
            Route("/admin/v1/catalog/tools/{server_id}/{name}", self.guard(self.show), methods=["GET"]),
            Route("/admin/v1/catalog/tools/{server_id}/{name}/{action}", self.guard(self.decide), methods=["POST"]),
            Route("/admin/v1/catalog/resources", self.guard(self.list_resources), methods=["GET"]),
            Route("/admin/v1/catalog/resources/{review_id}", self.guard(self.show_resource), methods=["GET"]),
            Route("/admin/v1/catalog/resources/{review_id}/{action}", self.guard(self.decide_resource),
                  methods=["POST"]),
        ]

    def guard(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        return admin_route(self.auth, endpoint, review_errors, approvers=True)

    async def list(self, request: Request, person: Approver) -> Response:
        status = request.query_params.get("status") or None
        if status is not None and status not in STATUSES:
            return unknown_status(status)
        return json_response({"tools": [self.summary(r, person) for r in self.reviews.list(status)]})

    async def show(self, request: Request, person: Approver) -> Response:
        review = self.reviews.get(request.path_params["server_id"], request.path_params["name"])
        return json_response(review_view(review, self.reviews.refusal(review, person)))

    async def decide(self, request: Request, person: Approver) -> Response:
        action = request.path_params["action"]
        key = (request.path_params["server_id"], request.path_params["name"])
        if action not in ("approve", "reject"):
            return error_response(404, f"unknown action {action!r}; use approve or reject")
        refusal = self.reviews.refusal(self.reviews.get(*key), person)  # who may, before what they sent
        if refusal is not None:
            return error_response(403, refusal)
        body = await read_json(request)
        allowed = APPROVE_FIELDS if action == "approve" else REJECT_FIELDS
        unknown = sorted(set(body) - allowed)
        if unknown:
            return error_response(400, f"unknown field(s): {', '.join(unknown)}")
        problem = _body_problem(body)
        if problem:
            return error_response(400, problem)
        common: dict[str, Any] = {"expected_hash": body.get("expected_sha256"), "comment": body.get("comment") or ""}
        if action == "approve":
            decided = await self.reviews.approve(key, person, risk=body.get("risk"),
                                                 data_classes=body.get("data_classes"), egress=body.get("egress"),
                                                 **common)
        else:
            decided = await self.reviews.reject(key, person, **common)
        return json_response(review_view(decided, self.reviews.refusal(decided, person)))

    async def list_resources(self, request: Request, person: Approver) -> Response:
        status = request.query_params.get("status") or None
        if status is not None and status not in STATUSES:
            return unknown_status(status)
        return json_response({"resources": [self.resource_summary(r, person) for r in self.resources.list(status)]})

    async def show_resource(self, request: Request, person: Approver) -> Response:
        review = self.resources.get(request.path_params["review_id"])
        return json_response(review_view(review, self.resources.refusal(review, person)))

    async def decide_resource(self, request: Request, person: Approver) -> Response:
        action, review_id = request.path_params["action"], request.path_params["review_id"]
        if action not in ("approve", "reject"):
            return error_response(404, f"unknown action {action!r}; use approve or reject")
        refusal = self.resources.refusal(self.resources.get(review_id), person)
        if refusal is not None:
            return error_response(403, refusal)
        body = await read_json(request)
        unknown = sorted(set(body) - REJECT_FIELDS)
        if unknown:
            return error_response(400, f"unknown field(s): {', '.join(unknown)}")
        problem = _body_problem(body)
        if problem:
            return error_response(400, problem)
        decide = self.resources.approve if action == "approve" else self.resources.reject
        decided = await decide(review_id, person, expected_hash=body["expected_sha256"],
                               comment=body.get("comment") or "")
        return json_response(review_view(decided, self.resources.refusal(decided, person)))

    def resource_summary(self, review: ResourceReview, person: Approver) -> dict[str, Any]:
        return {"id": review.id, "server_id": review.server_id, "kind": review.kind, "key": review.key,
                "status": review.status, "change": review.change, "owner": review.owner,
                "flags": [f["code"] for f in review.flags], "definition_sha256": review.current_hash,
                "approved_sha256": review.approved_hash, "changed_at": review.changed_at,
                "you_may_review": self.resources.refusal(review, person) is None}

    def summary(self, review: ToolReview, person: Approver) -> dict[str, Any]:
        return {"server_id": review.server_id, "name": review.name, "tool": review.exposed_name,
                "status": review.status, "change": review.change, "origin": review.origin, "owner": review.owner,
                "flags": [f["code"] for f in review.flags], "definition_sha256": review.current_hash,
                "approved_sha256": review.approved_hash,
                "changed_at": review.changed_at, "you_may_review": self.reviews.refusal(review, person) is None}


def review_view(review: ToolReview | ResourceReview, refusal: str | None) -> dict[str, Any]:
    """The whole record, with what changed against the last approved definition."""
    data = review.to_dict()
    data["diff"] = definition_diff(review.approved_definition, review.current_definition)
    data["description_diff"] = description_diff(review.approved_definition, review.current_definition)
    data["you_may_review"] = refusal is None
    if refusal is not None:
        data["why_not"] = refusal
    return data


def _body_problem(body: dict[str, Any]) -> str | None:
    if not isinstance(body.get("expected_sha256"), str):
        return "expected_sha256 is required: the definition hash you reviewed (sha256:...)"
    if "comment" in body and not isinstance(body["comment"], str):
        return "comment must be a string"
    classes = body.get("data_classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        return "data_classes must be a list of strings"
    if "egress" in body and not isinstance(body["egress"], bool):
        return "egress must be true or false"
    return None


def review_errors(exc: Exception) -> Response | None:
    if isinstance(exc, ReviewError):
        return error_response(exc.status, str(exc))
    return None


def unknown_status(status: str) -> Response:
    return error_response(400, f"unknown status {status!r}; use {', '.join(STATUSES)}")
