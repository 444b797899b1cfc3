"""A real test identity provider: an OIDC issuer served over HTTP on loopback, and SPIFFE trust domains.

`TestIdentityProvider` runs an aiohttp server in a background thread (its own event loop, so the
tests' loop does the verifying while this one serves), with `/.well-known/openid-configuration`
and `/jwks.json`. Keys are generated in the test; `rotate()` swaps in a new kid; `stop()` and
`start()` take the endpoint down and up on the same port; `fetches` counts requests per path.

`TestTrustDomain` holds JWT-SVID signing keys of one SPIFFE trust domain, writes its bundle file
(JWKS with `use: jwt-svid`) and mints JWT-SVIDs.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
EC_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private_key: PrivateKey

    def public_jwk(self, use: str | None = "sig") -> dict[str, Any]:
        algorithm = RSAAlgorithm if isinstance(self.private_key, rsa.RSAPrivateKey) else ECAlgorithm
        jwk: dict[str, Any] = algorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk["kid"] = self.kid
        if use is not None:
            jwk["use"] = use
        return jwk

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def generate_key(alg: str = "RS256", kid: str | None = None) -> SigningKey:
    if alg.startswith(("RS", "PS")):
        private: PrivateKey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(EC_CURVES[alg]())
    return SigningKey(kid=kid or f"{alg.lower()}-{uuid.uuid4().hex[:12]}", alg=alg, private_key=private)


def sign(claims: Mapping[str, Any], key: SigningKey, *, alg: str | None = None, kid: str | None = None,
         headers: Mapping[str, Any] | None = None) -> str:
    """A JWS over `claims` with `key`; `alg`/`kid` override the header (to build mismatched tokens)."""
    header = {"kid": key.kid if kid is None else kid, **(headers or {})}
    return jwt.encode(dict(claims), key.private_key, algorithm=alg or key.alg, headers=header)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: Mapping[str, Any], claims: Mapping[str, Any], signature: bytes = b"") -> str:
    """A compact JWS with arbitrary header and signature bytes: what an attacker can send."""
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}.{b64url(signature)}"


def forge_hmac(claims: Mapping[str, Any], secret: bytes, *, kid: str, alg: str = "HS256") -> str:
    """HS256 with any bytes as secret, e.g. a public key's PEM (PyJWT itself refuses to do this)."""
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), digest).digest())}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestIdentityProvider:
    """An OIDC issuer on http://127.0.0.1:<port>, serving discovery and JWKS from a background thread."""

    __test__ = False  # not a pytest test class

    def __init__(self, audience: str, keys: list[SigningKey] | None = None) -> None:
        self.audience = audience
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.jwks_uri = f"{self.issuer}/jwks.json"
        self.keys: list[SigningKey] = list(keys) if keys is not None else [generate_key("RS256")]
        self.fetches: collections.Counter[str] = collections.Counter()
        self.jwks_delay_s = 0.0  # to hold a fetch open while concurrent lookups pile up
        self.discovery_issuer: str | None = None  # override, to serve a discovery document for another issuer
        self.documents: dict[str, Callable[[], Any]] = {}  # extra JSON documents by path (e.g. a SPIFFE bundle)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-idp", daemon=True)
        self._runner: web.AppRunner | None = None
        self._thread.start()
        self.start()

    # --- keys and tokens ---

    @property
    def jwks_fetches(self) -> int:
        return self.fetches["/jwks.json"]

    @property
    def discovery_fetches(self) -> int:
        return self.fetches["/.well-known/openid-configuration"]

    def add_key(self, key: SigningKey) -> SigningKey:
        with self._lock:
            self.keys.append(key)
        return key

    def remove_key(self, kid: str) -> None:
        with self._lock:
            self.keys = [k for k in self.keys if k.kid != kid]

    def rotate(self, alg: str = "RS256") -> SigningKey:
        """A new key with a new kid replaces all current keys; returns the new key."""
        new = generate_key(alg)
        with self._lock:
            self.keys = [new]
        return new

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "repo:example/app:ref:refs/heads/main", "aud": self.audience,
                  "iat": now, "exp": now + 300}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}  # None drops a claim

    def mint(self, claims: Mapping[str, Any] | None = None, *, kid: str | None = None, alg: str | None = None,
             key: SigningKey | None = None, **overrides: Any) -> str:
        """A token from this issuer: default claims updated by `claims`/`overrides`, signed by `key`."""
        return sign(self.claims(**{**(claims or {}), **overrides}), key or self.keys[0], alg=alg, kid=kid)

    # --- the HTTP endpoint ---

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        """Take the endpoint down: connections to the port are refused until `start()`."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._runner = runner

    async def _stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.fetches[path] += 1
        if path == "/.well-known/openid-configuration":
            return web.json_response({"issuer": self.discovery_issuer or self.issuer, "jwks_uri": self.jwks_uri,
                                      "id_token_signing_alg_values_supported": ["RS256", "ES256"]})
        if path == "/jwks.json":
            if self.jwks_delay_s:
                await asyncio.sleep(self.jwks_delay_s)
            with self._lock:
                return web.json_response({"keys": [k.public_jwk() for k in self.keys]})
        if path in self.documents:
            return web.json_response(self.documents[path]())
        return web.json_response({"error": "not found"}, status=404)


class TestTrustDomain:
    """One SPIFFE trust domain: JWT-SVID signing keys, its bundle, and minted JWT-SVIDs."""

    __test__ = False

    def __init__(self, trust_domain: str, audience: str, keys: list[SigningKey] | None = None) -> None:
        self.trust_domain = trust_domain
        self.audience = audience
        self.keys = list(keys) if keys is not None else [generate_key("ES256")]

    def spiffe_id(self, path: str = "/ns/prod/sa/agent") -> str:
        return f"spiffe://{self.trust_domain}{path}"

    def bundle(self, use: str | None = "jwt-svid") -> dict[str, Any]:
        """A SPIFFE bundle in JWKS form; `use` other than jwt-svid builds keys a verifier must ignore."""
        return {"keys": [k.public_jwk(use=use) for k in self.keys], "spiffe_sequence": 1,
                "spiffe_refresh_hint": 300}

    def write_bundle(self, path: Path, use: str | None = "jwt-svid") -> Path:
        path.write_text(json.dumps(self.bundle(use)))
        return path

    def mint_svid(self, path: str = "/ns/prod/sa/agent", *, key: SigningKey | None = None, kid: str | None = None,
                  alg: str | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"sub": self.spiffe_id(path), "aud": [self.audience], "exp": now + 300, "iat": now}
        claims.update(overrides)
        return sign({k: v for k, v in claims.items() if v is not None}, key or self.keys[0], alg=alg, kid=kid,
                    headers={"typ": "JWT"})

