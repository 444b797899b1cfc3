"""Step-up by re-authentication (RFC 9470): a forbid the person lifts by signing in again, recently or strongly.

A policy asks for it with annotations on a forbid, beside the approval step-up's `@step_up`:

    @id("refunds-over-100-need-recent-mfa")
    @step_up("reauth") @acr_values("mfa") @max_age("300")
    @reason("refunds over 100 need a multi-factor sign-in within the last 5 minutes")
    forbid (principal, action == Action::"payments__refund", resource)
    when { context.input.amount > 100 }
    unless { context.user.acr == "mfa" && context.request.time - context.user.auth_time <= 300 };

Cedar decides (the `unless` is the rule); the annotations are what the client is told to ask its
authorization server for: `acr_values` (space-separated, RFC 9470 section 3) and `max_age` (seconds, or
a duration like "5m"). At least one of the two is required. Such a policy may not read `context.user.amr`
(refused at load): RFC 9470 lets the client ask for acr values and a maximum age only, never for
authentication methods, so the gateway cannot know that signing in again would bring them (it would
never ask, and the call would only be denied); state the method as an acr (`@acr_values`) instead.
The gateway answers such a call with HTTP 401
and `WWW-Authenticate: Bearer error="insufficient_user_authentication", acr_values=..., max_age=...`.
It asks only if a person who signed in just now with the first asked acr would then be allowed (with an
approval, if a policy also asks for one); a workload (no person) can never satisfy it and is denied, and so
is a person whose provider sends no `auth_time` when only a known sign-in time would allow the call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.policy.sources import PolicySource
from gateway.settings.durations import parse_duration

REAUTH = "reauth"
ANNOTATIONS = ("acr_values", "max_age")
log = logging.getLogger("narrowgate.policy")
NO_PERSON = "re-authentication of a person is required, and this caller acts for no person"
# Asking again would only loop: the fresh token from the same provider would carry no auth_time either.
NO_AUTH_TIME = ("re-authentication is required, but the person's access token carries no auth_time the gateway can "
                "read (the provider sends none, one after the token was issued, or under another claim name or type "
                "than configured), so signing in again would not help: configure the provider to send auth_time")
# context.user.amr, in either Cedar attribute syntax (comments are stripped before matching).
_READS_AMR = re.compile(r'context\s*(?:\.\s*user|\[\s*"user"\s*\])\s*(?:\.\s*amr\b|\[\s*"amr"\s*\]|has\s+amr\b)')
_COMMENT = re.compile(r"//[^\n]*")
_WARNED_NO_AUTH_TIME: set[str] = set()  # providers already warned about (configured ones: a handful)


def warn_no_auth_time(issuer: str) -> None:
    """A re-authentication policy a person's provider can never satisfy (no usable `auth_time`) is a configuration
    problem: say so once per provider, beside the deny every such call gets."""
    if issuer in _WARNED_NO_AUTH_TIME:
        return
    _WARNED_NO_AUTH_TIME.add(issuer)
    log.warning("configuration: a re-authentication policy needs auth_time, but %s sent an access token without a "
                "usable one: no such policy can be met until the provider puts auth_time in its access tokens (see "
                "docs/delegation.md)", issuer)


@dataclass(frozen=True, slots=True)
class ReauthTerms:
    """What the RFC 9470 challenge asks for: the union of the asked acr values, the shortest max age."""

    acr_values: tuple[str, ...] = ()
    max_age_s: int | None = None

    def challenge(self, description: str) -> str:
        """The WWW-Authenticate parameters after `Bearer ` (without resource_metadata)."""
        parts = ['error="insufficient_user_authentication"', f'error_description="{_quoted(description)}"']
        if self.acr_values:
            parts.append(f'acr_values="{" ".join(self.acr_values)}"')
        if self.max_age_s is not None:
            parts.append(f"max_age={self.max_age_s}")
        return ", ".join(parts)


def annotation_problems(source: PolicySource) -> list[str]:
    """@acr_values and @max_age belong to @step_up("reauth"), which needs at least one of them."""
    notes = source.annotations
    given = [key for key in ANNOTATIONS if key in notes]
    if notes.get("step_up") != REAUTH:
        return [f"{source.where}: @{key} only applies to a policy with @step_up(\"reauth\")" for key in given]
    problems = []
    if not given:
        problems.append(f"{source.where}: @step_up(\"reauth\") needs @acr_values and/or @max_age (what the client "
                        "must ask for)")
    if "acr_values" in notes and not _acr_values(notes["acr_values"]):
        problems.append(f"{source.where}: @acr_values needs one or more space-separated acr values")
    if _READS_AMR.search(_COMMENT.sub("", source.text)):
        problems.append(f"{source.where}: a @step_up(\"reauth\") policy cannot read context.user.amr: a client can "
                        "ask its provider for acr values and a max age only (RFC 9470), so signing in again is not "
                        "known to bring an authentication method; test context.user.acr with @acr_values instead")
    if "max_age" in notes:
        try:
            parse_duration(notes["max_age"])
        except ValueError:
            problems.append(f"{source.where}: @max_age must be seconds or a duration like \"5m\", not "
                            f"{notes['max_age']!r}")
    return problems


def terms(sources: Iterable[PolicySource]) -> ReauthTerms:
    """The challenge for these determining reauth policies (their annotations were checked at load)."""
    acr: list[str] = []
    ages: list[int] = []
    for source in sources:
        notes = source.annotations
        acr.extend(v for v in _acr_values(notes.get("acr_values", "")) if v not in acr)
        if notes.get("max_age"):
            ages.append(int(parse_duration(notes["max_age"])))
    return ReauthTerms(tuple(acr), min(ages) if ages else None)


def _acr_values(text: str) -> list[str]:
    # acr values are space-separated tokens; quotes or backslashes could break out of the header parameter.
    return [v for v in text.split() if '"' not in v and "\\" not in v]


def _quoted(text: str) -> str:
    """A quoted-string body (RFC 9110 5.6.4) limited to printable ASCII: no header can be split or forged."""
    return "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "?" for c in text)[:300]
