"""The `auth:` section (development static tokens for agents) and the `admin:` section (admin API tokens).

A token is given inline, by the environment variable that holds it (`token_env`, read later by
gateway.config.with_secrets), or as its SHA-256 digest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gateway.settings.errors import ConfigError
from gateway.settings.fields import check_keys


@dataclass(frozen=True, slots=True)
class StaticToken:
    """A development-only bearer token mapped to an agent id."""

    agent: str
    token: str | None = field(default=None, repr=False)
    token_sha256: str | None = None
    token_env: str | None = None  # read into `token` by resolve_secrets


@dataclass(frozen=True, slots=True)
class AuthSettings:
    open_loopback: bool = False
    static_tokens: tuple[StaticToken, ...] = ()


@dataclass(frozen=True, slots=True)
class AdminToken:
    """A bearer token for the admin API; `name` is recorded as the actor of every change it makes."""

    name: str
    token: str | None = field(default=None, repr=False)
    token_sha256: str | None = None
    token_env: str | None = None  # read into `token` by resolve_secrets
    role: str = "admin"  # "admin": the whole admin API; "approver": approvals only
    groups: tuple[str, ...] = ()  # approver groups this person is in (see @approvers)


ADMIN_ROLES = ("admin", "approver")


@dataclass(frozen=True, slots=True)
class AdminSettings:
    tokens: tuple[AdminToken, ...] = ()
    # OIDC tokens from a configured issuer are admins (or approvers) when this claim holds the role.
    oidc_role_claim: str = "roles"
    oidc_admin_role: str = "narrowgate-admin"
    oidc_approver_role: str = "narrowgate-approver"
    oidc_name_claim: str = "email"  # a person's name, compared with agent owners (falls back to sub)
    oidc_groups_claim: str = "groups"


def auth_settings(raw: object) -> AuthSettings:
    if not isinstance(raw, dict):
        raise ConfigError("auth must be a mapping")
    check_keys(raw, frozenset({"open_loopback", "static_tokens"}), "auth")
    tokens = []
    for index, entry in enumerate(raw.get("static_tokens") or ()):
        tokens.append(_static_token(entry, index))
    return AuthSettings(open_loopback=bool(raw.get("open_loopback", False)), static_tokens=tuple(tokens))


def _static_token(entry: object, index: int) -> StaticToken:
    where = f"auth.static_tokens[{index}]"
    if not isinstance(entry, dict) or not entry.get("agent"):
        raise ConfigError(f"{where} needs an agent")
    token, env, digest = _secret(entry, where)
    return StaticToken(agent=str(entry["agent"]), token=token, token_sha256=digest, token_env=env)


def admin_settings(raw: object) -> AdminSettings:
    if not isinstance(raw, dict):
        raise ConfigError("admin must be a mapping")
    check_keys(raw, frozenset({"tokens", "oidc_role_claim", "oidc_admin_role", "oidc_approver_role",
                               "oidc_name_claim", "oidc_groups_claim"}), "admin")
    tokens = []
    for index, entry in enumerate(raw.get("tokens") or ()):
        where = f"admin.tokens[{index}]"
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ConfigError(f"{where} needs a name")
        role = str(entry.get("role", "admin"))
        if role not in ADMIN_ROLES:
            raise ConfigError(f"{where}.role must be one of {', '.join(ADMIN_ROLES)}")
        groups = entry.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
            raise ConfigError(f"{where}.groups must be a list of group names")
        token, env, digest = _secret({k: v for k, v in entry.items() if k not in ("role", "groups")}, where)
        tokens.append(AdminToken(name=str(entry["name"]), token=token, token_sha256=digest, token_env=env,
                                 role=role, groups=tuple(groups)))
    defaults = AdminSettings()
    return AdminSettings(
        tokens=tuple(tokens),
        **{key: str(raw.get(key, getattr(defaults, key)))
           for key in ("oidc_role_claim", "oidc_admin_role", "oidc_approver_role", "oidc_name_claim",
                       "oidc_groups_claim")},
    )


def _secret(entry: dict[str, Any], where: str) -> tuple[str | None, str | None, str | None]:
    """(token, token_env, token_sha256): a token given inline, by environment variable, or as its digest.

    The variable itself is read later, by with_secrets; `token_env` takes precedence over `token`.
    """
    check_keys(entry, frozenset({"agent", "name", "token", "token_env", "token_sha256"}), where)
    env = str(entry["token_env"]) if entry.get("token_env") else None
    token = None if env else entry.get("token")
    digest = entry.get("token_sha256")
    if digest is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", str(digest)):
        raise ConfigError(f"{where}.token_sha256 must be 64 hex digits (printf %s TOKEN | sha256sum)")
    if not token and not env and not digest:
        raise ConfigError(f"{where} needs token_env, token_sha256 or token")
    return (str(token) if token else None), env, (str(digest) if digest else None)
