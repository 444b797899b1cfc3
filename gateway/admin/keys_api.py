"""`/admin/v1/keys`: the gateway's token signing keys (public parts only) and their rotation.

Rotation makes a new key current at once; the old key stays in `/.well-known/jwks.json` for the
overlap window, so tokens signed just before the rotation still verify wherever they are checked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.auth import AdminAuthenticator
from gateway.admin.http import Endpoint, admin_route, error_response, json_response, read_json
from gateway.admin.key_overlap import DEFAULT_OVERLAP_S, MAX_OVERLAP_S, MIN_OVERLAP_S
from gateway.credentials.upstream_auth import UpstreamAuth

log = logging.getLogger("narrowgate.admin")


class KeysApi:
    def __init__(self, upstream_auth: UpstreamAuth, auth: AdminAuthenticator) -> None:
        self.upstream_auth = upstream_auth
        self.auth = auth

    def routes(self) -> list[Route]:
        return [
            Route("/admin/v1/keys", self.guard(self.list_keys), methods=["GET"]),
            Route("/admin/v1/keys/rotate", self.guard(self.rotate), methods=["POST"]),
        ]

    def guard(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def keys_loaded(request: Request, actor: str) -> Response:
            if self.upstream_auth.keyring is None:
                return error_response(503, "the signing keys are not loaded yet")
            return await endpoint(request, actor)

        return admin_route(self.auth, keys_loaded)

    async def list_keys(self, request: Request, actor: str) -> Response:
        assert self.upstream_auth.keyring is not None
        return json_response({"current_kid": self.upstream_auth.keyring.current_kid,
                              "keys": self.upstream_auth.jwks()["keys"]})

    async def rotate(self, request: Request, actor: str) -> Response:
        keyring = self.upstream_auth.keyring
        assert keyring is not None
        body = await read_json(request)
        unknown = sorted(set(body) - {"overlap_s"})
        if unknown:
            return error_response(400, f"unknown field(s): {', '.join(unknown)}; use overlap_s")
        overlap = body.get("overlap_s", DEFAULT_OVERLAP_S)
        if isinstance(overlap, bool) or not isinstance(overlap, int | float) or not math.isfinite(overlap):
            return error_response(400, "overlap_s must be a number of seconds")
        if overlap < MIN_OVERLAP_S:
            return error_response(400, f"overlap_s must be at least {MIN_OVERLAP_S:.0f} s: tokens signed with "
                                       "the old key must keep verifying until they expire")
        if overlap > MAX_OVERLAP_S:
            return error_response(400, f"overlap_s must be at most {MAX_OVERLAP_S:.0f} s (30 days)")
        previous_kid = keyring.current_kid
        kid = await keyring.rotate(float(overlap))
        for rotated in self.upstream_auth.on_keys_rotated:
            await rotated()
        log.warning("signing key rotated by %s: %s is current, %s stays in the JWKS for %.0f s",
                    actor, kid, previous_kid, overlap)
        keys: list[dict[str, Any]] = self.upstream_auth.jwks()["keys"]
        previous = [k["kid"] for k in keys if k["kid"] != kid]
        return json_response({"current_kid": kid, "previous": previous, "overlap_s": float(overlap)})
