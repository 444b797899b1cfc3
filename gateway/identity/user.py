"""The person a call is made for: someone signed in at an external authorization server, acting through
an MCP client (Claude Code, VS Code, the Inspector...) that the registry knows as an agent.

Built from the verified access token of that server (see gateway.identity.people); policies see it as
`context.user`, per-call upstream tokens name it as their `sub`, audit records and spans name it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class UserIdentity:
    subject: str  # the token's `sub`
    issuer: str  # the authorization server that signed the person in (`iss`)
    email: str  # "" unless the token says it is verified
    email_verified: bool
    groups: tuple[str, ...]
    client_id: str  # the client acting for the person (`client_id`, else `azp`)
    auth_time: int | None  # when the person last authenticated (epoch seconds), if the token says
    acr: str  # authentication context class reference, "" if none
    amr: tuple[str, ...]  # authentication methods used


def client_id_of(claims: Mapping[str, Any]) -> str | None:
    """RFC 9068 `client_id`, else OIDC `azp`: the client application the token was issued to."""
    for name in ("client_id", "azp"):
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def user_from_claims(claims: Mapping[str, Any], client_id: str, groups_claim: str) -> UserIdentity:
    """The person named by verified access-token claims (`sub` and `iss` are present: the verifier requires them)."""
    verified = claims.get("email_verified") is True
    email = claims.get("email")
    auth_time = claims.get("auth_time")
    return UserIdentity(
        subject=str(claims["sub"]),
        issuer=str(claims["iss"]),
        email=email if verified and isinstance(email, str) else "",
        email_verified=verified,
        groups=_strings(claims.get(groups_claim)),
        client_id=client_id,
        auth_time=int(auth_time) if isinstance(auth_time, int | float) and not isinstance(auth_time, bool) else None,
        acr=acr if isinstance(acr := claims.get("acr"), str) else "",
        amr=_strings(claims.get("amr")),
    )


def _strings(value: object) -> tuple[str, ...]:
    """A claim holding a list of strings (or one string, as some providers send one group), else ()."""
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        return tuple(dict.fromkeys(v for v in value if isinstance(v, str) and v))
    return ()
