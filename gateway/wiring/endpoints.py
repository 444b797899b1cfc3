"""The gateway's small HTTP endpoints: health, metrics, the RFC 9728 and RFC 8414 metadata, the
keys upstreams verify per-call tokens with, and the revocation list."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import __version__
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.oauth.metadata import (
    METADATA_PATH,
    RESOURCE_METADATA_PATH,
    authorization_server_metadata,
    protected_resource_metadata,
)
from gateway.policy.engine import PolicyEngine
from gateway.policy.reloader import PolicyReloader
from gateway.settings.identity import IdentitySettings
from gateway.state.revocations import RevocationListUnavailable
from gateway.telemetry import Telemetry
from gateway.telemetry import attributes as A
from gateway.upstream.pool import UpstreamPool
from gateway.wiring.catalog_sync import CatalogSync
from gateway.wiring.catalog_version import CatalogVersion


class SmallEndpoints:
    def __init__(self, base_url: str, pool: UpstreamPool, policy: PolicyEngine, reloader: PolicyReloader,
                 catalog_sync: CatalogSync, telemetry: Telemetry, upstream_auth: UpstreamAuth,
                 replica_id: str, identity: IdentitySettings | None = None) -> None:
        self.base_url = base_url
        self.identity = identity if identity is not None else IdentitySettings(audience=f"{base_url}/mcp")
        self.pool = pool
        self.policy = policy
        self.reloader = reloader
        self.catalog_sync = catalog_sync
        self.telemetry = telemetry
        self.upstream_auth = upstream_auth
        self.replica_id = replica_id
        self.catalog_version = CatalogVersion(pool)
        telemetry.report_versions(self.versions)

    def versions(self) -> dict[str, str]:
        """Who this replica is and what it enforces: replicas that agree report the same versions."""
        return {A.REPLICA: self.replica_id, A.POLICY_VERSION: self.policy.version,
                A.CATALOG_VERSION: self.catalog_version.current()}

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route(RESOURCE_METADATA_PATH, self.resource_metadata, methods=["GET"]),
            Route(f"{RESOURCE_METADATA_PATH}/mcp", self.resource_metadata, methods=["GET"]),
            Route(METADATA_PATH, self.authorization_server_metadata, methods=["GET"]),
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route("/oauth/revocations", self.revocations, methods=["GET"]),
        ]

    async def healthz(self, request: Request) -> Response:
        upstreams = {sid: client.available for sid, client in self.pool.clients.items()}
        # The gateway itself is up either way (200); "degraded" says some upstream is not.
        status = "ok" if all(upstreams.values()) else "degraded"
        policy = {"version": self.policy.version, "reload_failures": self.reloader.failures,
                  "schema_update_failures": self.catalog_sync.schema_update_failures}
        return JSONResponse({"status": status, "version": __version__, "replica_id": self.replica_id,
                             "policy_version": self.policy.version, "catalog_version": self.catalog_version.current(),
                             "upstreams": upstreams, "policy": policy})

    async def resource_metadata(self, request: Request) -> Response:
        """RFC 9728 protected-resource metadata for `/mcp`."""
        return JSONResponse(protected_resource_metadata(
            self.base_url, self.identity.advertised_issuers(self.base_url), self.identity.scopes_supported))

    async def authorization_server_metadata(self, request: Request) -> Response:
        """RFC 8414: where agents exchange workload tokens for task tokens."""
        return JSONResponse(authorization_server_metadata(self.base_url))

    async def metrics(self, request: Request) -> Response:
        """Prometheus text exposition of the gateway's metrics."""
        body, content_type = self.telemetry.metrics_response()
        return Response(body, media_type=content_type)

    async def jwks(self, request: Request) -> Response:
        """The public keys upstreams verify per-call tokens with (current, and previous during overlap)."""
        return JSONResponse(self.upstream_auth.jwks(), headers={"Cache-Control": "max-age=60"})

    async def revocations(self, request: Request) -> Response:
        """Tasks (and token ids) whose minted upstream tokens must be refused until they expire."""
        try:
            snapshot = self.upstream_auth.revocations.snapshot()
        except RevocationListUnavailable as exc:  # a list that may miss entries is never served
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Cache-Control": "no-store"})
        return JSONResponse(snapshot, headers={"Cache-Control": "no-store"})
