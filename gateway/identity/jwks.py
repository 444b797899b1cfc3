"""Verification keys from a JWKS (an OIDC `jwks_uri` or a SPIFFE trust bundle), and JWT checks with them.

A `KeySource` keeps the keys of one issuer or trust domain, parsed once, by `kid`. Looking up a
cached kid does no I/O. An unknown kid triggers a refresh, at most one per `min_refresh_interval_s`
per source, and concurrent lookups share one in-flight fetch; so a flood of tokens with made-up
kids costs the key endpoint one request per interval, while a real rotation is picked up without a
restart. A failed fetch keeps the keys already cached; a source that never loaded a key refuses.

Every key is bound to the algorithms its type allows (RSA: RS*/PS*; EC: the one ES* of its
curve), intersected with its own `alg` if it declares one. Together with the per-issuer allow-list
this is what defeats `alg: none` and "HS256 signed with the public key": no HMAC algorithm is ever
paired with any key, and symmetric (`oct`) keys are never loaded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.identity.verified import AudienceRejected, TokenRejected
from gateway.json_values import JsonValue

log = logging.getLogger("narrowgate.identity")

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHM_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
MIN_RSA_BITS = 2048
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_TOKEN_CHARS = 16 * 1024
FETCH_TIMEOUT_S = 5.0

JsonLoader = Callable[[], Awaitable[JsonValue]]


class KeyFetchError(Exception):
    """A JWKS or discovery document could not be fetched or read; safe to log."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    algorithms: frozenset[str]  # the only algorithms this key may verify


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """Header and claims of a JWT, decoded but NOT verified: only for routing to the right keys."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]

    @property
    def alg(self) -> str:
        return str(self.header.get("alg"))

    def require_kid(self) -> str:
        # Tokens must name their key: trying every key of an issuer would multiply the cost of bad tokens.
        kid = self.header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("token header names no key (kid)")
        return kid


# --- parsing -----------------------------------------------------------------------------------


def parse_unverified(token: str) -> UnverifiedToken:
    """Split a compact JWS and decode header and claims; refuse anything that is not one."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise TokenRejected("token is malformed")
    parts = token.split(".")
    # An empty signature is let through to the algorithm check, so `alg: none` is refused by name.
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise TokenRejected("token is malformed: not a signed JWT (header.payload.signature)")
    header, claims = _b64_json(parts[0]), _b64_json(parts[1])
    if not isinstance(header.get("alg"), str):
        raise TokenRejected("token is malformed: the header has no alg")
    if "crit" in header:
        # RFC 7515 4.1.11: critical extensions we do not understand mean the token must be refused.
        raise TokenRejected("token uses critical header extensions, which are not supported")
    return UnverifiedToken(header=header, claims=claims)


def _b64_json(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise TokenRejected("token is malformed: a segment is not base64url JSON") from None
    if not isinstance(value, dict):
        raise TokenRejected("token is malformed: a segment is not a JSON object")
    return value


def parse_jwks(document: object, *, required_use: str | None, source: str) -> dict[str, VerificationKey]:
    """Keys by kid. `required_use`: e.g. "jwt-svid" for SPIFFE bundles; None accepts absent or "sig"."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyFetchError(f"{source}: not a JWKS document (no 'keys' list)")
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        key = _parse_jwk(jwk, required_use, source)
        if key is None:
            continue
        if key.kid in keys:
            log.warning("%s: duplicate kid %r ignored", source, key.kid)
            continue
        keys[key.kid] = key
    return keys


def _parse_jwk(jwk: object, required_use: str | None, source: str) -> VerificationKey | None:
    """One usable public key, or None (with a log line saying why it was skipped)."""
    if not isinstance(jwk, dict):
        return None
    kid, use = jwk.get("kid"), jwk.get("use")
    if not isinstance(kid, str) or not kid:
        log.info("%s: key without kid skipped (tokens must name their key)", source)
        return None
    if (use != required_use) if required_use else (use not in (None, "sig")):
        log.debug("%s: key %r skipped: use %r", source, kid, use)
        return None
    if "d" in jwk or "k" in jwk:
        log.error("%s: key %r holds private or symmetric key material and is refused", source, kid)
        return None
    try:
        key, family = _public_key(jwk)
    except (KeyFetchError, ValueError, TypeError, jwt.InvalidKeyError) as exc:
        log.warning("%s: key %r skipped: %s", source, kid, exc)
        return None
    declared = jwk.get("alg")
    algorithms = family & {declared} if declared else family
    if not algorithms:
        log.warning("%s: key %r skipped: its alg %r does not fit its key type", source, kid, declared)
        return None
    return VerificationKey(kid=kid, key=key, algorithms=frozenset(algorithms))


def _public_key(jwk: dict[str, Any]) -> tuple[rsa.RSAPublicKey | ec.EllipticCurvePublicKey, frozenset[str]]:
    kty = jwk.get("kty")
    if kty == "RSA":
        key = RSAAlgorithm.from_jwk(jwk)
        if not isinstance(key, rsa.RSAPublicKey):
            raise KeyFetchError("not an RSA public key")
        if key.key_size < MIN_RSA_BITS:
            raise KeyFetchError(f"RSA key of {key.key_size} bits is too small")
        return key, RSA_ALGORITHMS
    if kty == "EC":
        algorithm = EC_ALGORITHM_BY_CURVE.get(str(jwk.get("crv")))
        if algorithm is None:
            raise KeyFetchError(f"unsupported curve {jwk.get('crv')!r}")
        ec_key = ECAlgorithm.from_jwk(jwk)
        if not isinstance(ec_key, ec.EllipticCurvePublicKey):
            raise KeyFetchError("not an EC public key")
        return ec_key, frozenset({algorithm})
    raise KeyFetchError(f"unsupported key type {kty!r}")


# --- verification with one key -------------------------------------------------------------------

_REJECTIONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not yet valid"),
    (jwt.InvalidAudienceError, "token audience is not this gateway"),
    (jwt.InvalidIssuerError, "token issuer does not match"),
    (jwt.InvalidAlgorithmError, "token algorithm is not allowed"),
)


def check_algorithm(alg: str, allowed: Iterable[str], source: str) -> None:
    """Refuse an algorithm outside the allow-list before any key is looked up or fetched."""
    if alg not in allowed:
        raise TokenRejected(f"token algorithm {alg[:20]!r} is not allowed for {source}")


def decode_with_key(
    token: str,
    alg: str,
    key: VerificationKey,
    *,
    audience: str | tuple[str, ...],  # a tuple: any one of these values
    leeway: float,
    required_claims: Iterable[str],
    issuer: str | None = None,
) -> dict[str, Any]:
    """Check signature, then time, audience, issuer and required claims; return the verified claims."""
    if alg not in key.algorithms:
        # e.g. an ES256 header naming an RSA key, or HS256 naming any key.
        raise TokenRejected(f"token algorithm {alg[:20]!r} does not match its key {key.kid!r}")
    try:
        return jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": list(required_claims), "verify_iss": issuer is not None},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"token lacks the required claim {exc.claim!r}") from None
    except jwt.InvalidAudienceError:
        raise AudienceRejected(_rejection_reason(jwt.InvalidAudienceError())) from None
    except jwt.InvalidTokenError as exc:
        raise TokenRejected(_rejection_reason(exc)) from None


def _rejection_reason(exc: jwt.InvalidTokenError) -> str:
    for kind, reason in _REJECTIONS:
        if isinstance(exc, kind):
            return reason
    # PyJWT's own messages name the claim or segment at fault, never the token.
    return f"token is invalid: {str(exc)[:200]}"


# --- fetching ------------------------------------------------------------------------------------


class HttpFetcher:
    """JSON over HTTP with a timeout and size limit, on the gateway's session (or one of its own)."""

    def __init__(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session
        self._owned: aiohttp.ClientSession | None = None

    async def get_json(self, url: str) -> JsonValue:
        session = self._session or self._own_session()
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        try:
            # No redirects: a key URL that redirects could lead off https, and the keys are trust anchors.
            async with session.get(url, timeout=timeout, allow_redirects=False,
                                   headers={"Accept": "application/json"}) as response:
                if response.status != 200:
                    raise KeyFetchError(f"GET {url}: HTTP {response.status}")
                body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KeyFetchError(f"GET {url}: {type(exc).__name__}: {exc}") from None
        return _json_document(body, url)

    def _own_session(self) -> aiohttp.ClientSession:
        if self._owned is None or self._owned.closed:
            self._owned = aiohttp.ClientSession()
        return self._owned

    async def close(self) -> None:
        if self._owned is not None:
            await self._owned.close()
            self._owned = None


def file_loader(path: Path) -> JsonLoader:
    async def load() -> JsonValue:
        try:
            body = await asyncio.to_thread(_read_limited, path)
        except OSError as exc:
            raise KeyFetchError(f"cannot read {path}: {exc.strerror or exc}") from None
        return _json_document(body, str(path))

    return load


def url_loader(fetcher: HttpFetcher, url: str) -> JsonLoader:
    async def load() -> JsonValue:
        return await fetcher.get_json(url)

    return load


def _read_limited(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(MAX_DOCUMENT_BYTES + 1)


def _json_document(body: bytes, source: str) -> JsonValue:
    if len(body) > MAX_DOCUMENT_BYTES:
        raise KeyFetchError(f"{source}: document larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError:
        raise KeyFetchError(f"{source}: not JSON") from None


# --- the cache -----------------------------------------------------------------------------------


class KeySource:
    """The verification keys of one issuer or trust domain, by kid, with rate-limited refresh."""

    def __init__(
        self,
        name: str,
        loader: JsonLoader,
        *,
        min_refresh_interval_s: float,
        required_use: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.fetch_count = 0
        self._loader = loader
        self._interval = min_refresh_interval_s
        self._required_use = required_use
        self._clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._loaded = False
        self._last_attempt: float | None = None
        self._last_error: str | None = None
        self._inflight: asyncio.Task[bool] | None = None

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    async def key_for(self, kid: str) -> VerificationKey:
        key = self._keys.get(kid)
        if key is not None:
            return key  # the hot path: no I/O, no await
        await self.refresh(force=False)
        key = self._keys.get(kid)
        if key is not None:
            return key
        if not self._loaded:
            raise TokenRejected(f"no verification keys are available for {self.name} ({self._last_error})")
        raise TokenRejected(f"token key id {kid[:64]!r} is unknown to {self.name}")

    async def refresh(self, *, force: bool) -> bool:
        """Fetch the keys again, unless one fetch is running (join it) or, unforced, one ran too recently."""
        if self._inflight is None:
            now = self._clock()
            if not force and self._last_attempt is not None and now - self._last_attempt < self._interval:
                return False
            self._last_attempt = now
            self._inflight = asyncio.get_running_loop().create_task(self._fetch())
        # Shielded: a caller that gives up (cancelled request) does not cancel the fetch for the others.
        return await asyncio.shield(self._inflight)

    async def _fetch(self) -> bool:
        self.fetch_count += 1
        try:
            keys = parse_jwks(await self._loader(), required_use=self._required_use, source=self.name)
        except KeyFetchError as exc:
            self._last_error = str(exc)
            # Keep what we have: a key endpoint outage must not log every agent out.
            log.warning("key refresh for %s failed (%d cached key(s) kept): %s", self.name, len(self._keys), exc)
            return False
        except Exception as exc:  # a refresh must never turn into a 500 for the request that triggered it
            self._last_error = f"unexpected {type(exc).__name__}"
            log.exception("key refresh for %s failed unexpectedly", self.name)
            return False
        finally:
            self._inflight = None
        if not keys:
            log.warning("%s: the key set holds no usable keys", self.name)
        self._keys, self._loaded, self._last_error = keys, True, None
        log.info("%s: %d verification key(s) loaded", self.name, len(keys))
        return True

    async def close(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            task.cancel()
