"""Workload identity settings: which OIDC issuers and SPIFFE trust domains the gateway trusts.

Read from the mapping under the top-level `identity:` key of the gateway config:

    identity:
      audience: https://gateway.example.com   # default: the gateway's base URL
      clock_skew_s: 30                        # at most 300
      key_refresh_min_interval_s: 30          # at most one unknown-kid refresh per key source per interval
      oidc_issuers:
        - issuer: https://token.actions.githubusercontent.com
          jwks_uri: https://...               # optional; else OIDC discovery
          algorithms: [RS256]                 # default [RS256, ES256]
          required_claims: [iat]              # exp, iss, aud and sub are always required
      spiffe_trust_domains:
        - trust_domain: example.org
          bundle_file: /etc/spire/bundle.json # or bundle_url (JWKS; only `use: jwt-svid` keys count)
          algorithms: [RS256, ES256]
      delegation_audience: https://gateway.example.com/oauth/delegate  # default: <base URL>/oauth/delegate
      authorization_servers:                  # people's MCP clients: external OpenID providers (docs/identity.md)
        - issuer: https://login.example.com   # its access tokens for this gateway's /mcp are accepted
          jwks_uri: https://...               # optional; else OIDC discovery
          algorithms: [RS256]                 # default [RS256, ES256]
          client_id_claims: [client_id, azp]  # where the client id is, first present wins (Okta: [cid])
          audiences: []                       # other values naming this gateway's /mcp at this provider
          claims: {groups: groups}            # the person's fields -> claim names (groups, email, email_verified,
                                              #   acr, amr, auth_time); groups_claim: x = claims: {groups: x}
          require_typ: at+jwt                 # default "" (no check): the JWT typ header access tokens must carry
          single_audience: false              # true: refuse tokens that also name other audiences
      advertise_authorization_servers: both   # RFC 9728 authorization_servers: both | external | gateway
      scopes_supported: [openid, email]       # RFC 9728 scopes_supported: what clients ask the provider for

Algorithms are an allow-list of asymmetric JWS algorithms. HMAC (`HS*`) and `none` are refused
here, at config time, so no later code path can ever accept them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.json_values import JsonValue
from gateway.settings.errors import ConfigError
from gateway.settings.network import is_loopback_host

# Each algorithm family is verified only with keys of the matching type (see jwks.py).
SUPPORTED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
DEFAULT_ALGORITHMS = ("RS256", "ES256")
# Claims every OIDC token must carry: without sub there is no identity to bind.
ALWAYS_REQUIRED_OIDC_CLAIMS = ("exp", "iss", "aud", "sub")
MAX_CLOCK_SKEW_S = 300.0
IDENTITY_KEYS = frozenset(
    {"audience", "clock_skew_s", "key_refresh_min_interval_s", "key_refresh_interval_s", "oidc_issuers",
     "spiffe_trust_domains", "authorization_servers", "advertise_authorization_servers",
     "scopes_supported"}
) | {"delegation_audience"}
OIDC_KEYS = frozenset({"issuer", "jwks_uri", "algorithms", "required_claims"})
AUTHORIZATION_SERVER_KEYS = OIDC_KEYS | {"groups_claim", "client_id_claims", "audiences", "claims", "require_typ",
                                        "single_audience"}
# RFC 9068 `client_id`, else OIDC `azp`; a provider that names the client otherwise is configured (Okta: `cid`).
DEFAULT_CLIENT_ID_CLAIMS = ("client_id", "azp")
# Which authorization servers the RFC 9728 metadata names: the external ones, the gateway's own token
# endpoint (workloads exchanging tokens), or both.
ADVERTISE_CHOICES = ("both", "external", "gateway")
SPIFFE_KEYS = frozenset({"trust_domain", "bundle_file", "bundle_url", "algorithms"})
# SPIFFE-ID spec: trust domain names are lower-case letters, digits, dots, dashes and underscores.
TRUST_DOMAIN_RE = re.compile(r"^[a-z0-9._-]+\Z")


@dataclass(frozen=True, slots=True)
class OidcIssuer:
    issuer: str
    jwks_uri: str | None = None  # None: found by discovery at {issuer}/.well-known/openid-configuration
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    required_claims: tuple[str, ...] = ALWAYS_REQUIRED_OIDC_CLAIMS

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class UserClaimNames:
    """Which claim of a provider's access token holds each of the person's fields (standard names by default)."""

    groups: str = "groups"
    email: str = "email"
    email_verified: str = "email_verified"
    acr: str = "acr"
    amr: str = "amr"
    auth_time: str = "auth_time"


USER_CLAIM_FIELDS = tuple(UserClaimNames.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class AuthorizationServer:
    """An external OpenID provider whose access tokens for this gateway's resource people's clients present."""

    issuer: str
    jwks_uri: str | None = None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    required_claims: tuple[str, ...] = ALWAYS_REQUIRED_OIDC_CLAIMS
    claims: UserClaimNames = UserClaimNames()
    client_id_claims: tuple[str, ...] = DEFAULT_CLIENT_ID_CLAIMS
    # Values that also name this gateway's /mcp at this provider (Entra ID: the API's Application ID URI or
    # client id). Only these, exactly: a token for any other audience is still refused.
    audiences: tuple[str, ...] = ()
    # The JWT `typ` header every access token must carry ("" = not checked): RFC 9068 `at+jwt`, which only some
    # providers send (docs/identity.md), so it is off unless the operator turns it on.
    require_typ: str = ""
    # Refuse a token that also names other audiences: any of them could replay it here. Off by default: Auth0
    # (with scope openid) and Keycloak (the `account` audience) add audiences of their own (docs/identity.md).
    single_audience: bool = False

    @property
    def groups_claim(self) -> str:
        return self.claims.groups

    def as_oidc_issuer(self) -> OidcIssuer:
        """The same keys and checks as a workload issuer (one JWT verifier for both)."""
        return OidcIssuer(self.issuer, self.jwks_uri, self.algorithms, self.required_claims)


@dataclass(frozen=True, slots=True)
class SpiffeTrustDomain:
    trust_domain: str
    bundle_file: Path | None = None
    bundle_url: str | None = None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    audience: str
    clock_skew_s: float = 30.0
    key_refresh_min_interval_s: float = 30.0
    # Every key set is re-read this often (0: never), so a withdrawn key stops being trusted.
    key_refresh_interval_s: float = 300.0
    oidc_issuers: tuple[OidcIssuer, ...] = ()
    spiffe_trust_domains: tuple[SpiffeTrustDomain, ...] = ()
    # The only audience an actor token (delegation) may name, and one no other token may: an actor token is
    # then refused on /mcp and as a subject token or client assertion. "": `<base URL>/oauth/delegate`.
    delegation_audience: str = ""
    authorization_servers: tuple[AuthorizationServer, ...] = ()
    advertise_authorization_servers: str = "both"
    scopes_supported: tuple[str, ...] = ()  # RFC 9728 metadata; empty: not advertised
    # This gateway's protected resource (`{base_url}/mcp`): the audience people's access tokens must name.
    resource: str = ""

    def advertised_issuers(self, gateway_issuer: str) -> list[str]:
        """RFC 9728 `authorization_servers`: where a client gets a token for this resource."""
        external = [server.issuer for server in self.authorization_servers]
        if not external or self.advertise_authorization_servers == "gateway":
            return [gateway_issuer]
        if self.advertise_authorization_servers == "external":
            return external
        return [*external, gateway_issuer]


def identity_settings_from_mapping(raw: Mapping[str, Any], base_dir: Path, default_audience: str) -> IdentitySettings:
    """Validate the mapping under `identity:`; relative bundle files resolve against `base_dir`."""
    if not isinstance(raw, Mapping):
        raise ConfigError("identity must be a mapping")
    _refuse_unknown(raw, IDENTITY_KEYS, "identity")
    audience = str(raw.get("audience") or default_audience).strip()
    if not audience:
        raise ConfigError("identity.audience must not be empty")
    settings = IdentitySettings(
        audience=audience,
        clock_skew_s=_bounded_float(raw.get("clock_skew_s", 30.0), "identity.clock_skew_s", 0.0, MAX_CLOCK_SKEW_S),
        key_refresh_min_interval_s=_bounded_float(
            raw.get("key_refresh_min_interval_s", 30.0), "identity.key_refresh_min_interval_s", 0.001, 86400.0
        ),
        key_refresh_interval_s=_bounded_float(
            raw.get("key_refresh_interval_s", 300.0), "identity.key_refresh_interval_s", 0.0, 86400.0
        ),
        oidc_issuers=tuple(
            _oidc_issuer(entry, f"identity.oidc_issuers[{i}]")
            for i, entry in enumerate(_list(raw.get("oidc_issuers"), "identity.oidc_issuers"))
        ),
        spiffe_trust_domains=tuple(
            _trust_domain(entry, f"identity.spiffe_trust_domains[{i}]", base_dir)
            for i, entry in enumerate(_list(raw.get("spiffe_trust_domains"), "identity.spiffe_trust_domains"))
        ),
        delegation_audience=str(raw.get("delegation_audience") or "").strip(),
        authorization_servers=tuple(
            _authorization_server(entry, f"identity.authorization_servers[{i}]")
            for i, entry in enumerate(_list(raw.get("authorization_servers"), "identity.authorization_servers"))
        ),
        advertise_authorization_servers=_advertise(raw.get("advertise_authorization_servers", "both")),
        resource=default_audience,
        scopes_supported=tuple(_string_list(raw.get("scopes_supported"), "identity.scopes_supported")),
    )
    _refuse_duplicates([o.issuer for o in settings.oidc_issuers], "identity.oidc_issuers", "issuer")
    # One issuer, one meaning: its tokens are either workloads' or people's, never routed by a guess.
    _refuse_duplicates([o.issuer for o in settings.oidc_issuers] + [a.issuer for a in settings.authorization_servers],
                       "identity.oidc_issuers and identity.authorization_servers", "issuer")
    _refuse_duplicates(
        [t.trust_domain for t in settings.spiffe_trust_domains], "identity.spiffe_trust_domains", "trust_domain"
    )
    return settings


def _oidc_issuer(entry: object, where: str) -> OidcIssuer:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    _refuse_unknown(entry, OIDC_KEYS, where)
    issuer = entry.get("issuer")
    if not isinstance(issuer, str) or not issuer.strip():
        raise ConfigError(f"{where}.issuer is required")
    # The issuer is compared byte for byte with `iss`, so it is kept exactly as written.
    check_fetch_url(issuer, f"{where}.issuer")
    jwks_uri = entry.get("jwks_uri")
    if jwks_uri is not None:
        jwks_uri = check_fetch_url(str(jwks_uri), f"{where}.jwks_uri")
    required = _string_list(entry.get("required_claims"), f"{where}.required_claims")
    return OidcIssuer(
        issuer=issuer,
        jwks_uri=jwks_uri,
        algorithms=_algorithms(entry.get("algorithms"), f"{where}.algorithms"),
        required_claims=tuple(dict.fromkeys((*ALWAYS_REQUIRED_OIDC_CLAIMS, *required))),
    )


def _authorization_server(entry: object, where: str) -> AuthorizationServer:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    _refuse_unknown(entry, AUTHORIZATION_SERVER_KEYS, where)
    oidc = _oidc_issuer({k: v for k, v in entry.items() if k in OIDC_KEYS}, where)
    client_id_claims = _string_list(entry.get("client_id_claims", list(DEFAULT_CLIENT_ID_CLAIMS)),
                                    f"{where}.client_id_claims")
    if not client_id_claims:
        raise ConfigError(f"{where}.client_id_claims must name at least one claim")
    return AuthorizationServer(oidc.issuer, oidc.jwks_uri, oidc.algorithms, oidc.required_claims,
                               claims=_user_claims(entry, where),
                               client_id_claims=tuple(dict.fromkeys(client_id_claims)),
                               audiences=_audiences(entry.get("audiences"), f"{where}.audiences"),
                               require_typ=_typ(entry.get("require_typ", ""), f"{where}.require_typ"),
                               single_audience=_bool(entry.get("single_audience", False), f"{where}.single_audience"))


def _user_claims(entry: Mapping[str, Any], where: str) -> UserClaimNames:
    """`claims` (field -> claim name), with `groups_claim` kept as the older spelling of `claims.groups`."""
    raw = entry.get("claims")
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}.claims must be a mapping of {', '.join(USER_CLAIM_FIELDS)} to claim names")
    _refuse_unknown(raw, frozenset(USER_CLAIM_FIELDS), f"{where}.claims")
    names = dict(raw)
    if "groups_claim" in entry:
        if "groups" in names and names["groups"] != entry["groups_claim"]:
            raise ConfigError(f"{where}: groups_claim and claims.groups name different claims; keep claims.groups")
        names["groups"] = entry["groups_claim"]
    for field, name in names.items():
        if not isinstance(name, str) or not name.strip():
            shown = "groups_claim" if field == "groups" and "groups_claim" in entry else f"claims.{field}"
            raise ConfigError(f"{where}.{shown} must be a non-empty claim name")
    return UserClaimNames(**names)


def _audiences(value: object, where: str) -> tuple[str, ...]:
    """Each extra audience named exactly: a pattern would accept tokens meant for other resources."""
    audiences = _string_list(value, where)
    for audience in audiences:
        if "*" in audience or audience != audience.strip():
            raise ConfigError(f"{where}: {audience!r} is not an exact audience (no wildcards, no surrounding spaces)")
    return tuple(dict.fromkeys(audiences))


def _typ(value: object, where: str) -> str:
    """A media type name without parameters, compared case-insensitively and without `application/` (RFC 8725 3.11)."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9!#$&^_.+-]*", value.removeprefix("application/")):
        raise ConfigError(f"{where} must be a JWT typ such as at+jwt (or empty for no check), got {value!r}")
    return value.removeprefix("application/")


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def _advertise(value: object) -> str:
    if value not in ADVERTISE_CHOICES:
        raise ConfigError(f"identity.advertise_authorization_servers must be one of {', '.join(ADVERTISE_CHOICES)}, "
                          f"got {value!r}")
    return str(value)


def _trust_domain(entry: object, where: str, base_dir: Path) -> SpiffeTrustDomain:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    _refuse_unknown(entry, SPIFFE_KEYS, where)
    name = entry.get("trust_domain")
    if not isinstance(name, str) or not TRUST_DOMAIN_RE.match(name):
        raise ConfigError(
            f"{where}.trust_domain must be a SPIFFE trust domain name (lower-case letters, digits, '.', '-', '_'; "
            f"no scheme), got {name!r}"
        )
    bundle_file, bundle_url = entry.get("bundle_file"), entry.get("bundle_url")
    if (bundle_file is None) == (bundle_url is None):
        raise ConfigError(f"{where} needs exactly one of bundle_file or bundle_url")
    path = None
    if bundle_file is not None:
        path = Path(str(bundle_file))
        path = path if path.is_absolute() else (base_dir / path).resolve()
    return SpiffeTrustDomain(
        trust_domain=name,
        bundle_file=path,
        bundle_url=None if bundle_url is None else check_fetch_url(str(bundle_url), f"{where}.bundle_url"),
        algorithms=_algorithms(entry.get("algorithms"), f"{where}.algorithms"),
    )


def with_delegation_audience(settings: IdentitySettings, base_url: str) -> IdentitySettings:
    """The delegation audience set (default `<base URL>/oauth/delegate`) and never one another token names."""
    audience = settings.delegation_audience or f"{base_url}/oauth/delegate"
    taken = {settings.audience, f"{base_url}/mcp", f"{base_url}/oauth/token"}
    if audience.rstrip("/") in {a.rstrip("/") for a in taken}:
        raise ConfigError(f"identity.delegation_audience {audience!r} must differ from the /mcp audience and the "
                          "token endpoint: actor tokens must be good for nothing but delegation")
    for server in settings.authorization_servers:
        if audience.rstrip("/") in {a.rstrip("/") for a in server.audiences}:
            raise ConfigError(f"identity.authorization_servers: {server.issuer} lists the delegation audience "
                              f"{audience!r} among its audiences; it names delegation, never /mcp")
    return replace(settings, delegation_audience=audience)


def check_fetch_url(url: str, where: str) -> str:
    """Keys are trust anchors: fetch them over https only (plain http only to loopback, for development)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname):
        return url
    raise ConfigError(f"{where} must be an https URL (http only to a loopback host), got {url!r}")


def _algorithms(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_ALGORITHMS
    names = _string_list(value, where)
    if not names:
        raise ConfigError(f"{where} must not be empty")
    for name in names:
        if name.lower() == "none" or name.upper().startswith("HS"):
            raise ConfigError(
                f"{where}: {name!r} is refused; only asymmetric algorithms are allowed "
                "(an HMAC key could be confused with a public key, and 'none' is no signature)"
            )
        if name not in SUPPORTED_ALGORITHMS:
            raise ConfigError(f"{where}: unsupported algorithm {name!r}; use one of {sorted(SUPPORTED_ALGORITHMS)}")
    return tuple(dict.fromkeys(names))


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list")
    return value


def _string_list(value: object, where: str) -> list[str]:
    items = _list(value, where)
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigError(f"{where} must be a list of non-empty strings")
    return items


def _bounded_float(value: JsonValue, where: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} must be a number, got {value!r}") from exc
    if not low <= number <= high:
        raise ConfigError(f"{where} must be between {low:g} and {high:g}, got {number:g}")
    return number


def _refuse_unknown(raw: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s): {', '.join(map(str, unknown))}")


def _refuse_duplicates(names: list[str], where: str, key: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{where}: {key} {name!r} is configured twice")
        seen.add(name)
