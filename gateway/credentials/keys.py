"""The gateway's signing keys: generated on first start, stored, served as a JWKS, rotated with overlap.

Algorithm: ES256 (ECDSA P-256, SHA-256). Measured with pyjwt 2.15 / cryptography on the gateway's
machine, ES256 signs slightly faster than EdDSA/Ed25519 (raw: ~17 vs ~20 us; whole JWT: ~19 vs
~22 us), verifies faster (~48 vs ~61 us); counted by callgrind with cryptography 51 / OpenSSL 4.1 (a 450-byte
input), a signature is 270k vs 471k instructions and a verification 860k vs 1,466k
(docs/performance-cuts.md). And it is the asymmetric JWA algorithm that JWT and
OAuth resource-server libraries support most widely (RFC 7518 "Recommended+"); EdDSA support
(RFC 8037) is still missing from several. RS256 would be universal but costs ~1 ms per signature.

`sign()` is on the per-call hot path: it does no I/O and no locking. The current key and its
pre-encoded JWS headers live in one immutable snapshot that `rotate()`/`reload()` swap in a
single assignment, so a concurrent sign always sees one consistent key.

Private keys never leave this module except as PEM into the store; no repr, log line or API
return value contains them.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from gateway.store.base import SigningKeyRecord, SigningKeyStore

log = logging.getLogger("narrowgate.credentials")

ALG = "ES256"
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_P256_BYTES = 32
_NOT_A_SIGNATURE = "not a DER-encoded P-256 ECDSA signature"

Clock = Callable[[], float]


def b64url(data: bytes) -> bytes:
    """base64url without padding (RFC 7515 2): binascii directly, what base64.urlsafe_b64encode wraps in two calls;
    two replace() calls cost a third of one translate() at a token's size (memchr finds the few "+" and "/")."""
    return binascii.b2a_base64(data, newline=False).replace(b"+", b"-").replace(b"/", b"_").rstrip(b"=")


def raw_signature(der: bytes) -> bytes:
    """JWS wants ECDSA's raw r||s (RFC 7518 3.4), 32 bytes each for P-256, not the DER SEQUENCE of two INTEGERs
    that cryptography returns. Sliced straight out of the DER (a P-256 one is under 128 bytes: one-byte lengths);
    anything but two minimal non-negative INTEGERs below 2**256 is refused."""
    if len(der) < 8:
        raise ValueError(_NOT_A_SIGNATURE)
    r_len = der[3]
    s_at = 6 + r_len  # where s's bytes start
    s_len = len(der) - s_at
    if (s_len < 1 or r_len < 1 or der[0] != 0x30 or der[1] != len(der) - 2 or der[2] != 0x02
            or der[s_at - 2] != 0x02 or der[s_at - 1] != s_len):
        raise ValueError(_NOT_A_SIGNATURE)
    r, s = der[4:s_at - 2], der[s_at:]
    if not (_p256_integer(r) and _p256_integer(s)):
        raise ValueError(_NOT_A_SIGNATURE)
    return r[-_P256_BYTES:].rjust(_P256_BYTES, b"\0") + s[-_P256_BYTES:].rjust(_P256_BYTES, b"\0")


def _p256_integer(value: bytes) -> bool:
    """A DER INTEGER's bytes hold a number in [0, 2**256) in DER's shortest form: not negative (top bit clear),
    and a leading zero byte only alone or before a set top bit (then 33 bytes at most; else 32)."""
    first = value[0]
    if first & 0x80:
        return False
    if first == 0:
        return len(value) == 1 or (value[1] & 0x80 != 0 and len(value) <= _P256_BYTES + 1)
    return len(value) <= _P256_BYTES


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    private: ec.EllipticCurvePrivateKey = field(repr=False)
    public_jwk: Mapping[str, str]
    not_after: float | None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    current: _Key
    previous: tuple[_Key, ...]
    # typ -> base64url(header) + b".", built once per key so sign() only encodes the claims.
    headers: dict[str, bytes] = field(default_factory=dict)


class SigningKeyring:
    """The gateway's signing keys. Construct with `await SigningKeyring.open(store)`."""

    def __init__(self, store: SigningKeyStore, clock: Clock, snapshot: _Snapshot) -> None:
        self._store = store
        self._clock = clock
        self._snapshot = snapshot

    @classmethod
    async def open(cls, store: SigningKeyStore, clock: Clock = time.time) -> SigningKeyring:
        """Load the stored keys; on first start generate and store the first key."""
        records = await store.load_signing_keys()
        if not any(r.state == "current" for r in records):
            first = _new_record(clock())
            if await store.add_first_signing_key(first):
                log.info("generated the first token signing key %s (%s)", first.kid, first.alg)
            records = await store.load_signing_keys()  # another replica may have won the race
        return cls(store, clock, _snapshot_of(records))

    @property
    def current_kid(self) -> str:
        return self._snapshot.current.kid

    @property
    def alg(self) -> str:
        return ALG

    def sign(self, claims: Mapping[str, Any], typ: str) -> str:
        """A compact JWS of `claims` with header {alg, kid, typ}, signed by the current key. No I/O."""
        snapshot = self._snapshot
        header = snapshot.headers.get(typ)
        if header is None:
            header = _encode_header(snapshot.current.kid, typ)
            snapshot.headers[typ] = header  # a benign race: two threads store the same bytes
        signing_input = header + b64url(orjson.dumps(claims))
        signature = raw_signature(snapshot.current.private.sign(signing_input, _ECDSA_SHA256))
        return b".".join((signing_input, b64url(signature))).decode("ascii")

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Public keys only: the current key, then previous keys still inside their overlap window."""
        snapshot, now = self._snapshot, self._clock()
        live = [snapshot.current] + [k for k in snapshot.previous if k.not_after is not None and k.not_after > now]
        return {"keys": [dict(k.public_jwk) for k in live]}

    async def rotate(self, overlap_s: float) -> str:
        """Make a new current key; the old one stays in the JWKS for `overlap_s` seconds. Returns the new kid.

        The overlap must cover how long verifiers cache the JWKS plus the longest token lifetime,
        so that tokens signed just before the rotation still verify everywhere.
        """
        if overlap_s < 0:
            raise ValueError("overlap_s must not be negative")
        now = self._clock()
        new = _new_record(now)
        await self._store.rotate_signing_key(new, retire_at=now + overlap_s, prune_before=now)
        await self.reload()
        log.info("rotated token signing key: %s is current, %s stays in the JWKS for %.0f s",
                 new.kid, self._previous_kid_or_none(), overlap_s)
        return new.kid

    async def reload(self) -> None:
        """Re-read the stored keys, e.g. after `narrowgate keys rotate` ran in another process."""
        self._snapshot = _snapshot_of(await self._store.load_signing_keys())

    def __repr__(self) -> str:
        return f"SigningKeyring(current_kid={self.current_kid!r}, alg={ALG!r})"

    def _previous_kid_or_none(self) -> str | None:
        previous = self._snapshot.previous
        return previous[0].kid if previous else None


def _new_record(now: float) -> SigningKeyRecord:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return SigningKeyRecord(kid=_thumbprint(private.public_key()), alg=ALG, private_key_pem=pem,
                            created_at=now, not_after=None, state="current")


def _snapshot_of(records: list[SigningKeyRecord]) -> _Snapshot:
    current = [r for r in records if r.state == "current"]
    if len(current) != 1:
        raise RuntimeError(f"signing_keys holds {len(current)} current keys; expected exactly one")
    previous = sorted((r for r in records if r.state == "previous"), key=lambda r: r.created_at, reverse=True)
    return _Snapshot(current=_load(current[0]), previous=tuple(_load(r) for r in previous))


def _load(record: SigningKeyRecord) -> _Key:
    if record.alg != ALG:
        raise RuntimeError(f"signing key {record.kid} uses {record.alg}; this build signs only with {ALG}")
    private = serialization.load_pem_private_key(record.private_key_pem.encode("ascii"), password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(private.curve, ec.SECP256R1):
        raise RuntimeError(f"signing key {record.kid} is not a P-256 key")
    return _Key(kid=record.kid, private=private, public_jwk=_public_jwk(record.kid, private.public_key()),
                not_after=record.not_after)


def _public_jwk(kid: str, public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    return {"kty": "EC", "crv": jwk["crv"], "x": jwk["x"], "y": jwk["y"], "kid": kid, "alg": ALG, "use": "sig"}


def _thumbprint(public: ec.EllipticCurvePublicKey) -> str:
    """The RFC 7638 JWK thumbprint: a kid derived from the key itself, stable and collision-free."""
    jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    digest = hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode()).digest()
    return b64url(digest).decode("ascii")


def _encode_header(kid: str, typ: str) -> bytes:
    return b64url(orjson.dumps({"alg": ALG, "kid": kid, "typ": typ})) + b"."
