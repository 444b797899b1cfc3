"""Verify Narrowgate's per-call upstream tokens inside your MCP server (for tool owners).

This file depends only on the standard library and PyJWT with its crypto extra
(``pip install "pyjwt[crypto]"``); copy it into your server as one module if you like.

For every tools/call it receives, an upstream behind Narrowgate gets a bearer token minted for
that one call: an RFC 9068 JWT (header ``typ: at+jwt``) signed by the gateway, with ``aud`` = your
server's resource URI, ``scope`` = the tool's name, ``exp`` <= 60 s after ``iat``, a unique ``jti``,
``args_sha256`` = argument_digest(the call's arguments), ``task_id`` when the call belongs to a
task, and ``sub`` with ``sub_iss``: whom the call is for (``caller_of``). ``verify()`` checks all of it
and raises ``TokenRefused(reason)`` on the first failure:

    malformed token / no bearer token      wrong typ (not at+jwt)
    unknown signing key / bad signature    wrong issuer
    other upstream (aud)                   expired / issued in the future / lifetime over 60 s
    other tool (scope)                     changed arguments (args_sha256)
    no sub_iss (whose sub it is)
    revoked task or token                  replayed jti

Usage::

    verifier = UpstreamTokenVerifier(
        "https://gateway.example/.well-known/jwks.json",
        audience="https://tools.example/mcp",       # your resource URI as the gateway's catalog names it
        issuer="https://gateway.example",
        revocations_url="https://gateway.example/oauth/revocations",  # optional
    )
    claims = verifier.verify(bearer_token(request.headers.get("authorization")), "read_file", arguments)

Hash the arguments exactly as they arrived in the JSON-RPC request (``params.arguments``), before
any validation or type coercion by your framework, or equal calls may hash differently.

Keys and revocations: the JWKS is fetched on first use and cached; a token naming an unknown
``kid`` triggers a refetch at most once per ``refresh_s`` (so made-up kids cannot flood the
gateway), and the cache is refetched anyway after ``jwks_max_age_s`` so retired keys stop being
accepted. With ``revocations_url`` the deny-list is refetched when older than ``refresh_s``; if it
could not be refreshed for ``revocations_max_age_s`` (default 60 s, the longest token lifetime)
every token is refused, because then a revoked task could not be told from a live one.

Threads and asyncio: one verifier may be shared by any number of threads; the replay cache is
updated under a lock and the key and revocation caches are swapped atomically. ``verify()`` does
network I/O only when a cache is stale (at most one fetch per ``refresh_s``, with a 5 s timeout);
from async code call ``await verifier.averify(...)``, which runs ``verify`` in a worker thread so
such a fetch never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
import logging
import math
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import jwt
from jwt.algorithms import AllowedPublicKeys

_canonical_bytes: Callable[[object], bytes] | None
try:  # inside the gateway: the same bytes, computed faster (orjson where it spells them alike)
    from gateway.audit.canonical import canonical_bytes as _canonical_bytes
except ImportError:  # this file copied alone into a tool server: json below is the definition
    _canonical_bytes = None

__all__ = ["TokenRefused", "UpstreamTokenVerifier", "argument_digest", "bearer_token", "caller_of"]

log = logging.getLogger("narrowgate.verifier")

ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 2.1; media type may be spelled out
ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
REQUIRED_CLAIMS = ("iss", "sub", "sub_iss", "aud", "exp", "iat", "jti", "scope", "args_sha256")
MAX_TOKEN_LIFETIME_S = 60.0
MAX_DOCUMENT_BYTES = 1024 * 1024
FETCH_TIMEOUT_S = 5.0

Fetch = Callable[[str], object]  # url -> the parsed JSON document


class TokenRefused(Exception):
    """The token must not be honoured. `reason` is short, safe to log and to return to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def argument_digest(arguments: Mapping[str, Any] | None) -> str:
    """SHA-256 (lowercase hex) of the arguments' one JSON spelling. The definition, exactly:

        sha256(json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
               .encode("utf-8")).hexdigest()

    i.e. keys sorted (by code point) at every depth, no whitespace, non-ASCII characters as raw
    UTF-8 rather than \\u escapes, floats as Python's shortest repr, and ``None`` (no arguments)
    hashed as ``{}``. The gateway computes the ``args_sha256`` claim with this same function over
    the arguments it forwards, so both sides agree by construction. ("surrogatepass" only matters
    for lone surrogates, where plain .encode() would raise; every other string encodes the same.)
    """
    value = {} if arguments is None else arguments
    if _canonical_bytes is not None:
        return hashlib.sha256(_canonical_bytes(value)).hexdigest()
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def caller_of(claims: Mapping[str, Any]) -> tuple[str, str, bool]:
    """Whom a verified call is for: (``sub_iss``, ``sub``, is a person). ``sub_iss`` equal to the token's
    ``iss`` (the gateway) means ``sub`` is an agent id; anything else is the provider that signed a person in.
    Key your own records by the pair, never ``sub`` alone: a person's ``sub`` may equal an agent id."""
    issuer, subject = str(claims["sub_iss"]), str(claims["sub"])
    return issuer, subject, issuer != claims["iss"]


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRefused("no bearer token")
    return token.strip()


def fetch_json(url: str) -> object:
    """GET `url` and parse JSON (at most 1 MiB, 5 s timeout)."""
    if not url.lower().startswith(("https://", "http://")):
        raise ValueError(f"{url}: only http(s) URLs are fetched")  # urllib would also open file:// URLs
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
        body = response.read(MAX_DOCUMENT_BYTES + 1)
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"{url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
    return json.loads(body)


class UpstreamTokenVerifier:
    def __init__(
        self,
        jwks_url: str,
        audience: str,
        issuer: str,
        *,
        revocations_url: str | None = None,
        leeway_s: float = 5,
        refresh_s: float = 5,
        jwks_max_age_s: float = 300,
        revocations_max_age_s: float = MAX_TOKEN_LIFETIME_S,
        max_token_lifetime_s: float = MAX_TOKEN_LIFETIME_S,
        max_replay_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
        fetch: Fetch = fetch_json,
    ) -> None:
        self.jwks_url, self.audience, self.issuer = jwks_url, audience, issuer
        self.revocations_url = revocations_url
        self.leeway_s, self.refresh_s = leeway_s, refresh_s
        self.jwks_max_age_s, self.revocations_max_age_s = jwks_max_age_s, revocations_max_age_s
        self.max_token_lifetime_s = max_token_lifetime_s
        self.max_replay_entries = max_replay_entries
        self._clock, self._fetch = clock, fetch
        # kid -> (key, algorithm); replaced whole on refresh, so readers never see a half-built map.
        self._keys: dict[str, tuple[AllowedPublicKeys, str]] = {}
        self._keys_fetched_at = -math.inf
        self._keys_attempted_at = -math.inf
        self._keys_lock = threading.Lock()
        self._revoked_tasks: dict[str, float] = {}
        self._revoked_jtis: dict[str, float] = {}
        self._revocations_fetched_at = -math.inf
        self._revocations_attempted_at = -math.inf
        self._revocations_lock = threading.Lock()
        self._seen: dict[str, float] = {}  # jti -> exp
        self._seen_by_exp: list[tuple[float, str]] = []
        self._seen_lock = threading.Lock()

    # --- public API ----------------------------------------------------------------------------

    def verify(self, token: str, tool: str, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """The verified claims, or TokenRefused. `arguments`: the call's raw arguments (None = none)."""
        kid, alg = self._check_header(token)
        key, key_alg = self._key(kid)
        if alg != key_alg:
            raise TokenRefused("token algorithm does not match its signing key")
        claims = self._decode(token, key, key_alg)
        now = self._clock()
        self._check_times(claims, now)
        if claims["scope"] != tool:
            raise TokenRefused("token is for another tool (scope)")
        if claims["args_sha256"] != argument_digest(arguments):
            raise TokenRefused("arguments differ from those the token was minted for (args_sha256)")
        self._check_revocations(claims, now)
        self._remember(claims["jti"], float(claims["exp"]), now)
        return claims

    async def averify(self, token: str, tool: str, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """verify() in a worker thread: a JWKS or revocation fetch never blocks the event loop."""
        return await asyncio.to_thread(self.verify, token, tool, arguments)

    # --- checks ----------------------------------------------------------------------------------

    def _check_header(self, token: str) -> tuple[str, str]:
        if not isinstance(token, str) or len(token) > 16 * 1024:
            raise TokenRefused("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenRefused("malformed token") from None
        typ, kid, alg = header.get("typ"), header.get("kid"), header.get("alg")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            raise TokenRefused("wrong token type (typ must be at+jwt)")
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise TokenRefused("token algorithm is not allowed")
        if not isinstance(kid, str) or not kid:
            raise TokenRefused("token names no signing key (kid)")
        return kid, alg

    def _decode(self, token: str, key: AllowedPublicKeys, alg: str) -> dict[str, Any]:
        # Times are checked by _check_times with our clock (testable, and one leeway rule for all).
        options: jwt.types.Options = {"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                                      "require": list(REQUIRED_CLAIMS)}
        try:
            return jwt.decode(token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                              options=options)
        except jwt.InvalidSignatureError:
            raise TokenRefused("bad signature") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused("token is for another upstream (aud)") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused("wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRefused(f"token lacks the {exc.claim} claim") from None
        except jwt.InvalidTokenError:
            raise TokenRefused("malformed token") from None

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        exp, iat, nbf = claims["exp"], claims["iat"], claims.get("nbf", claims["iat"])
        if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in (exp, iat, nbf)):
            raise TokenRefused("malformed token (exp, iat or nbf is not a number)")
        if now > exp + self.leeway_s:
            raise TokenRefused("token expired")
        if iat > now + self.leeway_s or nbf > now + self.leeway_s:
            raise TokenRefused("token is not valid yet (iat/nbf in the future)")
        # Bounds the replay cache too: no accepted jti has to be remembered for longer than this.
        if exp - iat > self.max_token_lifetime_s:
            raise TokenRefused(f"token lifetime exceeds {self.max_token_lifetime_s:.0f} s")
        if not isinstance(claims["jti"], str) or not isinstance(claims["scope"], str):
            raise TokenRefused("malformed token (jti or scope is not a string)")
        if not all(isinstance(claims[name], str) and claims[name] for name in ("sub", "sub_iss")):
            raise TokenRefused("malformed token (sub or sub_iss is not a non-empty string)")

    def _check_revocations(self, claims: Mapping[str, Any], now: float) -> None:
        if self.revocations_url is None:
            return
        self._refresh_revocations(now)
        if now - self._revocations_fetched_at > self.revocations_max_age_s:
            raise TokenRefused("revocation list unavailable")
        task_id = claims.get("task_id")
        if isinstance(task_id, str) and self._revoked_tasks.get(task_id, now) > now:
            raise TokenRefused("task revoked")
        if self._revoked_jtis.get(claims["jti"], now) > now:
            raise TokenRefused("token revoked")

    def _remember(self, jti: str, exp: float, now: float) -> None:
        """Refuse a jti seen before; remember it until the token could no longer be accepted."""
        with self._seen_lock:
            while self._seen_by_exp and self._seen_by_exp[0][0] + self.leeway_s < now:
                _, old = heapq.heappop(self._seen_by_exp)
                self._seen.pop(old, None)
            if jti in self._seen:
                raise TokenRefused("replayed token (jti already used)")
            if len(self._seen) >= self.max_replay_entries:
                # Fail closed: evicting a live jti would let its token be replayed.
                raise TokenRefused("replay cache full; try again shortly")
            self._seen[jti] = exp
            heapq.heappush(self._seen_by_exp, (exp, jti))

    # --- caches ----------------------------------------------------------------------------------

    def _key(self, kid: str) -> tuple[AllowedPublicKeys, str]:
        entry = self._keys.get(kid)
        if entry is None or self._clock() - self._keys_fetched_at > self.jwks_max_age_s:
            self._refresh_keys()
            entry = self._keys.get(kid)
        if entry is None:
            raise TokenRefused("unknown signing key (kid)")
        return entry

    def _refresh_keys(self) -> None:
        with self._keys_lock:
            now = self._clock()
            # Re-checked under the lock: the thread that waited here finds the fetch already done.
            if now - self._keys_attempted_at < self.refresh_s:
                return
            self._keys_attempted_at = now
            try:
                keys = parse_jwks(self._fetch(self.jwks_url))
            except Exception as exc:  # a failed fetch keeps the keys we have
                log.warning("cannot refresh JWKS from %s: %s", self.jwks_url, exc)
                return
            self._keys, self._keys_fetched_at = keys, now

    def _refresh_revocations(self, now: float) -> None:
        if now - self._revocations_attempted_at < self.refresh_s:
            return
        with self._revocations_lock:
            if self._clock() - self._revocations_attempted_at < self.refresh_s:
                return
            self._revocations_attempted_at = now
            try:
                tasks, jtis = parse_revocations(self._fetch(self.revocations_url or ""))
            except Exception as exc:
                log.warning("cannot refresh revocations from %s: %s", self.revocations_url, exc)
                return
            self._revoked_tasks, self._revoked_jtis, self._revocations_fetched_at = tasks, jtis, now


def parse_jwks(document: object) -> dict[str, tuple[AllowedPublicKeys, str]]:
    """kid -> (public key, its one algorithm). Keys without kid, symmetric or private keys are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, tuple[AllowedPublicKeys, str]] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or jwk.get("use", "sig") != "sig":
            continue
        if jwk.get("kty") == "oct" or "d" in jwk:
            continue  # never verify with a shared secret, never hold a private key
        try:
            parsed = jwt.PyJWK(jwk)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        # Binding each key to one algorithm defeats alg confusion (e.g. an RS256 header on an EC key).
        if parsed.algorithm_name in ASYMMETRIC_ALGORITHMS:
            keys[jwk["kid"]] = (parsed.key, parsed.algorithm_name)
    return keys


def parse_revocations(document: object) -> tuple[dict[str, float], dict[str, float]]:
    """The gateway's GET /oauth/revocations body -> (task id -> until, jti -> until)."""
    if not isinstance(document, dict):
        raise ValueError("not a revocations document")
    return _entries(document.get("tasks")), _entries(document.get("jtis"))


def _entries(items: object) -> dict[str, float]:
    entries: dict[str, float] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str):
            entries[item] = math.inf
        elif isinstance(item, dict) and isinstance(item.get("id"), str):
            until = item.get("until")
            entries[item["id"]] = float(until) if isinstance(until, int | float) else math.inf
    return entries
