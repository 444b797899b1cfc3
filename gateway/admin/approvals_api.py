"""`/admin/v1/approvals`: list, show, approve and deny step-up approval requests.

Admins and approvers (approver-role tokens) may use it; agent credentials never. Whether a person
may decide a given request is the approval service's rule (owner, @approvers group, self-approval).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.auth import AdminAuthenticator
from gateway.admin.http import Endpoint, admin_route, error_response, json_response, read_json
from gateway.approvals.model import Approval, ApprovalError, ApprovalState, Approver
from gateway.approvals.service import ApprovalService
from gateway.links import approval_path

DECISIONS = {"approve": True, "deny": False}
MAX_LIMIT = 1000


class ApprovalsApi:
    def __init__(self, approvals: ApprovalService, auth: AdminAuthenticator, base_url: str) -> None:
        self.approvals = approvals
        self.auth = auth
        self.base_url = base_url

    def routes(self) -> list[Route]:
        return [
            Route("/admin/v1/approvals", self.guard(self.list), methods=["GET"]),
            Route("/admin/v1/approvals/{approval_id}", self.guard(self.show), methods=["GET"]),
            Route("/admin/v1/approvals/{approval_id}/{action}", self.guard(self.decide), methods=["POST"]),
        ]

    def guard(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        return admin_route(self.auth, endpoint, approval_errors, approvers=True)

    async def list(self, request: Request, person: Approver) -> Response:
        states = [s for s in (request.query_params.get("state") or "").split(",") if s]
        known = {s.value for s in ApprovalState}
        unknown = [s for s in states if s not in known]
        if unknown:
            return error_response(400, f"unknown state(s) {', '.join(unknown)}; use {', '.join(sorted(known))}")
        try:
            limit = int(request.query_params.get("limit", "200"))
        except ValueError:
            return error_response(400, "limit must be a number")
        if not 1 <= limit <= MAX_LIMIT:
            return error_response(400, f"limit must be between 1 and {MAX_LIMIT}")
        approvals = await self.approvals.list(states or None, request.query_params.get("agent") or None, limit)
        return json_response({"approvals": [self.view(a, person) for a in approvals]})

    async def show(self, request: Request, person: Approver) -> Response:
        approval = await self.approvals.get(request.path_params["approval_id"])
        return json_response(self.view(approval, person))

    async def decide(self, request: Request, person: Approver) -> Response:
        action = request.path_params["action"]
        if action not in DECISIONS:
            return error_response(404, f"unknown action {action!r}; use approve or deny")
        body = await read_json(request)
        comment = body.get("comment", "")
        if not isinstance(comment, str):
            return error_response(400, "comment must be a string")
        decided = await self.approvals.decide(request.path_params["approval_id"], person, DECISIONS[action], comment)
        return json_response(self.view(decided, person))

    def view(self, approval: Approval, person: Approver) -> dict[str, Any]:
        data = self.approvals.shown_to(approval, person)
        data["url"] = self.base_url + approval_path(approval.id)
        if approval.state is ApprovalState.PENDING:
            refusal = self.approvals.refusal(approval, person)
            data["you_may_decide"] = refusal is None
            if refusal is not None:
                data["why_not"] = refusal
        return data


def approval_errors(exc: Exception) -> Response | None:
    if isinstance(exc, ApprovalError):
        return error_response(exc.status, str(exc))
    return None
