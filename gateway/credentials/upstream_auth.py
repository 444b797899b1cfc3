"""What the gateway presents to an upstream: a per-call token it mints, or the server's vaulted secret.

The agent's own token never leaves the gateway. `gateway-token` upstreams get an RFC 9068 token
good for one tool, one upstream and at most a minute; `secret` upstreams (legacy APIs) get their
configured secret in a header; `none` upstreams get nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from gateway.catalog.model import Credentials, ServerEntry
from gateway.credentials.keys import SigningKeyring
from gateway.credentials.leases import LeaseBroker
from gateway.credentials.revocations import Revocations
from gateway.credentials.secret_sources import SecretResolver, SecretUnavailable
from gateway.credentials.upstream_tokens import UpstreamTokenMinter
from gateway.events import AsyncObservers
from gateway.identity.principal import Principal
from gateway.protocol.errors import UPSTREAM_UNAVAILABLE, RpcError
from gateway.state.revocations import RevocationList
from gateway.store.base import SigningKeyStore
from gateway.verifier import argument_digest

DISCOVERY_SCOPE = "mcp:discovery"  # handshake and list requests, which call no tool


class UpstreamAuth:
    def __init__(self, issuer: str, secrets: SecretResolver, ttl_s: float = 60.0,
                 revocations: RevocationList | None = None) -> None:
        self.issuer = issuer
        self.secrets = secrets
        self.ttl_s = ttl_s
        self.revocations: RevocationList = revocations if revocations is not None else Revocations()
        self.keyring: SigningKeyring | None = None
        self.minter: UpstreamTokenMinter | None = None
        self._public: dict[str, jwt.PyJWK] = {}
        self._public_kids: tuple[str, ...] = ()
        self.on_keys_rotated: AsyncObservers[[]] = []  # after a rotation here (the fleet re-reads the keys)
        self.leases: LeaseBroker | None = None  # per-task Vault leases (mode: lease), set by the app

    async def start(self, store: SigningKeyStore) -> None:
        """Open (or create, on first start) the signing keys."""
        self.keyring = await SigningKeyring.open(store)
        self.minter = UpstreamTokenMinter(self.keyring, self.issuer, self.ttl_s)

    async def for_call(
        self, server: ServerEntry, principal: Principal, tool: str, arguments_digest: str,
        task_id: str | None, txn: str,
    ) -> dict[str, str]:
        """Headers for one tools/call to `server` on behalf of `principal`; `arguments_digest` is
        gateway.verifier.argument_digest of the arguments sent."""
        credentials = server.credentials
        if credentials.mode == "gateway-token":
            return self.token_headers(credentials, principal, tool, arguments_digest, task_id, txn)
        if credentials.mode == "lease":
            return await self.lease_headers(server, task_id)
        return await self.secret_headers(server)

    def token_headers(self, credentials: Credentials, principal: Principal, tool: str, arguments_digest: str,
                      task_id: str | None, txn: str) -> dict[str, str]:
        """`for_call` of a `gateway-token` upstream, which never waits: a token minted for this one call."""
        user = principal.user  # a person's call: the person is the subject, the agent acts (RFC 8693)
        token = self.mint(credentials, user.subject if user else principal.agent_id, actor_of(principal), tool,
                          arguments_digest, task_id, txn, user.issuer if user else None)
        return {"Authorization": "Bearer " + token}

    async def for_discovery(self, server: ServerEntry) -> dict[str, str]:
        """Headers for requests that call no tool (initialize, lists, notification streams)."""
        credentials = server.credentials
        if credentials.mode == "gateway-token":
            actor = {"sub": "narrowgate", "iss": self.issuer}
            token = self.mint(credentials, "narrowgate", actor, DISCOVERY_SCOPE, argument_digest(None), None, "")
            return {"Authorization": f"Bearer {token}"}
        return await self.secret_headers(server)

    def mint(self, credentials: Credentials, agent_id: str, actor: dict[str, Any], tool: str,
             arguments_digest: str, task_id: str | None, txn: str, subject_issuer: str | None = None) -> str:
        """`agent_id`: the token's `sub` (the person, with `subject_issuer`, for a person's call; without one,
        `sub_iss` is this gateway: the `sub` is an agent id)."""
        minter = self.minter
        if minter is None:  # a real check, not an assert: -O strips those
            raise RuntimeError("UpstreamAuth.start() was not awaited")
        return minter.mint(agent_id, actor, credentials.resource, tool, task_id, txn, arguments_digest,
                           subject_issuer).token

    async def secret_headers(self, server: ServerEntry) -> dict[str, str]:
        credentials = server.credentials
        if credentials.mode != "secret" or credentials.secret is None or not credentials.header:
            return {}
        try:
            secret = await self.secrets.value(credentials.secret)
        except SecretUnavailable as exc:
            raise RpcError(UPSTREAM_UNAVAILABLE, f"credentials for upstream {server.id!r}: {exc}") from None
        return {credentials.header: credentials.header_format.replace("{secret}", secret)}

    async def lease_headers(self, server: ServerEntry, task_id: str | None) -> dict[str, str]:
        """mode: lease: this task's own credential; discovery (no task) gets none (see docs/catalog.md)."""
        if self.leases is None:
            raise RpcError(UPSTREAM_UNAVAILABLE, f"credentials for upstream {server.id!r}: leases are not set up")
        return await self.leases.headers(server, task_id)

    def jwks(self) -> dict[str, Any]:
        return self.keyring.jwks() if self.keyring is not None else {"keys": []}

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        """Sign a gateway token (task tokens) with the current key."""
        assert self.keyring is not None, "UpstreamAuth.start() was not awaited"
        return self.keyring.sign(claims, typ)

    def public_keys(self) -> dict[str, jwt.PyJWK]:
        """kid -> key for the gateway's own tokens; rebuilt only when the key set changes."""
        jwks = self.jwks()
        kids = tuple(k["kid"] for k in jwks["keys"])
        if kids != self._public_kids:
            self._public = {k["kid"]: jwt.PyJWK(k) for k in jwks["keys"]}
            self._public_kids = kids
        return self._public


def actor_of(principal: Principal) -> dict[str, Any]:
    """The `act` claim: the workload identity the agent proved (RFC 8693 actor); for a person's call, the
    agent (their client) acting for them."""
    if principal.user is not None:
        return {"sub": principal.agent_id, "client_id": principal.user.client_id}
    claims = principal.claims
    act = claims.get("act")
    if principal.auth_method == "task-token" and isinstance(act, Mapping) and "sub" in act:
        # A task token's own sub/iss are the agent id and the gateway; the proven identity is its `act`.
        return dict(act)
    if "sub" in claims:
        actor: dict[str, Any] = {"sub": claims["sub"]}
        if "iss" in claims:
            actor["iss"] = claims["iss"]
        return actor
    return {"sub": principal.agent_id, "iss": principal.auth_method}
