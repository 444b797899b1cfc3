"""The person a call is made for: someone signed in at an external authorization server, acting through
an MCP client (Claude Code, VS Code, the Inspector...) that the registry knows as an agent.

Built from the verified access token of that server (see gateway.identity.people); policies see it as
`context.user`, per-call upstream tokens name it as their `sub`, audit records and spans name it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.settings.identity import DEFAULT_CLIENT_ID_CLAIMS, UserClaimNames

log = logging.getLogger("narrowgate.identity")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class UserIdentity:
    subject: str  # the token's `sub`
    issuer: str  # the authorization server that signed the person in (`iss`)
    email: str  # "" unless the token says it is verified
    email_verified: bool
    groups: tuple[str, ...]
    client_id: str  # the client acting for the person (`client_id`, else `azp`, or as configured)
    auth_time: int | None  # when the person last authenticated (epoch seconds), if the token says
    acr: str  # authentication context class reference, "" if none
    amr: tuple[str, ...]  # authentication methods used


def client_id_of(claims: Mapping[str, Any], names: Sequence[str] = DEFAULT_CLIENT_ID_CLAIMS) -> str | None:
    """The client application the token was issued to: the first of `names` that holds a non-empty string
    (RFC 9068 `client_id`, else OIDC `azp` by default; Okta's `cid`, Entra ID v1's `appid` when configured)."""
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def user_from_claims(claims: Mapping[str, Any], client_id: str, names: UserClaimNames,
                     clock_skew_s: float) -> UserIdentity:
    """The person named by verified access-token claims (`sub` and `iss` are present: the verifier requires them).

    Each field is read from the claim `names` gives. A claim of the wrong type counts as absent (no groups, no
    email, `auth_time` unknown...) and is logged by name and type, never by value: fail closed, and visibly.
    An `auth_time` after the token was issued (or after now), beyond `clock_skew_s`, is unknown too: a sign-in
    "in the future" would pass every `max_age` for the token's whole life.
    """
    read = _ClaimReader(claims, str(claims["iss"]))
    verified = read.boolean(names.email_verified, "email_verified") is True
    email = read.string(names.email, "email")
    return UserIdentity(
        subject=str(claims["sub"]),
        issuer=str(claims["iss"]),
        email=email if verified else "",
        email_verified=verified,
        groups=read.strings(names.groups, "groups"),
        client_id=client_id,
        auth_time=_signed_in_at(read.epoch(names.auth_time, "auth_time"), claims, clock_skew_s, time.time()),
        acr=read.string(names.acr, "acr"),
        amr=read.strings(names.amr, "amr"),
    )


def _signed_in_at(auth_time: int | None, claims: Mapping[str, Any], clock_skew_s: float, now: float) -> int | None:
    """`auth_time` unless it is later than the token's `iat` (or now, whichever is earlier) plus the skew."""
    if auth_time is None:
        return None
    iat = claims.get("iat")
    issued = min(float(iat), now) if isinstance(iat, int | float) and not isinstance(iat, bool) else now
    if auth_time <= issued + clock_skew_s:
        return auth_time
    log.warning("%s: access-token claim auth_time is %d s after the token was issued: a sign-in in the future "
                "is unknown (no re-authentication policy is met)", claims.get("iss"), int(auth_time - issued))
    return None


class _ClaimReader:
    """Typed reads of one token's claims; a present claim of the wrong type is logged and read as absent."""

    def __init__(self, claims: Mapping[str, Any], issuer: str) -> None:
        self._claims = claims
        self._issuer = issuer

    def string(self, name: str, field: str) -> str:
        value = self._claims.get(name)
        if value is None or isinstance(value, str):
            return value or ""
        return self._ignored(name, field, value, "a string", "")

    def boolean(self, name: str, field: str) -> bool | None:
        value = self._claims.get(name)
        if value is None or isinstance(value, bool):
            return value
        return self._ignored(name, field, value, "a boolean", None)

    def epoch(self, name: str, field: str) -> int | None:
        value = self._claims.get(name)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        return self._ignored(name, field, value, "a number (epoch seconds)", None)

    def strings(self, name: str, field: str) -> tuple[str, ...]:
        """A list of strings (or one string, as some providers send one group)."""
        value = self._claims.get(name)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,) if value else ()
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(dict.fromkeys(v for v in value if v))
        return self._ignored(name, field, value, "a list of strings", ())

    def _ignored(self, name: str, field: str, value: object, expected: str, absent: _T) -> _T:
        log.warning("%s: access-token claim %r (the person's %s) is %s, not %s: ignored", self._issuer, name[:100],
                    field, type(value).__name__, expected)
        return absent
