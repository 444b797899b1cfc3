"""`/admin/v1/secrets`: rotating the per-server secrets the gateway owns (secret.vault.rotate) on demand."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.auth import AdminAuthenticator
from gateway.admin.http import admin_route, error_response, json_response
from gateway.credentials.rotation import NotRotatable, SecretRotation
from gateway.credentials.secret_errors import SecretUnavailable

log = logging.getLogger("narrowgate.admin")


class SecretsApi:
    def __init__(self, rotation: SecretRotation, auth: AdminAuthenticator) -> None:
        self.rotation = rotation
        self.auth = auth

    def routes(self) -> list[Route]:
        return [Route("/admin/v1/secrets/{server}/rotate", admin_route(self.auth, self.rotate), methods=["POST"])]

    async def rotate(self, request: Request, actor: str) -> Response:
        server = request.path_params["server"]
        try:
            rotated = await self.rotation.rotate_now(server, actor)
        except NotRotatable as exc:
            return error_response(404, str(exc))
        except SecretUnavailable as exc:  # audited; the current version stays in use
            return error_response(503, f"rotation failed, the current version stays in use: {exc}")
        log.warning("secret of upstream %s rotated by %s: version %d -> %d", server, actor, rotated.from_version,
                    rotated.to_version)
        return json_response(rotated.to_dict())
