"""What every admin API shares: JSON replies, reading a JSON body, and the authenticated route.

Each admin API hands its endpoints to `admin_route`, which authenticates the caller first (agent
credentials never pass) and lets the API map its own errors onto HTTP answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.admin.auth import AdminAuthenticator, AdminAuthError
from gateway.store.base import StoreError

Endpoint = Callable[[Request, Any], Awaitable[Response]]  # (request, actor name or Approver)
ErrorMapper = Callable[[Exception], Response | None]


class BadRequestBody(ValueError):
    """The request body is not a JSON object."""


def json_response(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error_response(status: int, message: str, problems: Iterable[object] = ()) -> Response:
    body: dict[str, Any] = {"error": message}
    listed = [str(p) for p in problems]
    if listed:
        body["problems"] = listed
    return json_response(body, status)


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequestBody("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequestBody("the request body must be a JSON object")
    return body


def admin_route(auth: AdminAuthenticator, endpoint: Endpoint, errors: ErrorMapper | None = None,
                approvers: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint behind admin authentication; `errors` turns the API's exceptions into answers.

    With `approvers`, approver-role credentials pass too and the endpoint gets the person
    (gateway.approvals.model.Approver) instead of the actor name.
    """

    async def guarded(request: Request) -> Response:
        try:
            authorization = request.headers.get("authorization")
            actor: Any = await auth.person(authorization) if approvers else await auth.authenticate(authorization)
        except AdminAuthError as exc:
            response = error_response(exc.status, exc.message)
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            return response
        try:
            return await endpoint(request, actor)
        except BadRequestBody as exc:
            return error_response(400, str(exc))
        except Exception as exc:
            answer = errors(exc) if errors is not None else None
            if answer is not None:
                return answer
            if isinstance(exc, StoreError):  # its message names no secret (gateway.store.base)
                return error_response(503, f"the store is unavailable: {exc}")
            raise

    return guarded
