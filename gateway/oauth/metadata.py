"""RFC 8414 authorization-server metadata for the gateway's token endpoint, and the RFC 9728
protected-resource metadata of `/mcp`.

Served at `/.well-known/oauth-authorization-server` and `/.well-known/oauth-protected-resource`.
RFC 9728's `authorization_servers` names the external authorization servers people's clients sign in
at (identity.authorization_servers) and/or the gateway's own `issuer` (workloads exchanging tokens),
as `identity.advertise_authorization_servers` says, so an MCP client that finds the protected
resource also finds where to get tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.oauth.token_endpoint import CLIENT_CREDENTIALS, TOKEN_EXCHANGE, TOKEN_PATH

JWKS_PATH = "/.well-known/jwks.json"
RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource"
METADATA_PATH = "/.well-known/oauth-authorization-server"


def authorization_server_metadata(
    base_url: str,
    *,
    assertion_algorithms: Iterable[str] = ("RS256", "ES256"),
    scopes: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The metadata document. `base_url` is the gateway's public base URL (the issuer);
    `assertion_algorithms` are those the configured workload issuers may sign client assertions
    with; `scopes` (optional) are the exposed tool names a task may ask for."""
    issuer = base_url.rstrip("/")
    document: dict[str, Any] = {
        "issuer": issuer,
        "token_endpoint": f"{issuer}{TOKEN_PATH}",
        "jwks_uri": f"{issuer}{JWKS_PATH}",
        "grant_types_supported": [TOKEN_EXCHANGE, CLIENT_CREDENTIALS],
        # No authorization endpoint: agents are workloads, there is no user to redirect.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": sorted(set(assertion_algorithms)),
    }
    if scopes is not None:
        document["scopes_supported"] = sorted(set(scopes))
    return document


def protected_resource_metadata(base_url: str, authorization_servers: list[str],
                                scopes: Iterable[str] = ()) -> dict[str, Any]:
    """RFC 9728 metadata for `{base_url}/mcp`; `authorization_servers` from IdentitySettings.advertised_issuers."""
    document: dict[str, Any] = {
        "resource": f"{base_url.rstrip('/')}/mcp",
        "authorization_servers": authorization_servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "Narrowgate MCP gateway",
    }
    if scopes:
        document["scopes_supported"] = sorted(set(scopes))
    return document
