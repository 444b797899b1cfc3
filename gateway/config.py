"""Gateway settings: one YAML file, with `NARROWGATE_*` environment overrides.

Any key can be overridden from the environment: `NARROWGATE_LISTEN=0.0.0.0:9000`, and nested keys
with a double underscore, `NARROWGATE_AUTH__OPEN_LOOPBACK=true`. Values that are JSON (`true`,
`42`, `["a", "b"]`) keep their types; anything else is a string.

Tokens named by `token_env` are secrets only the serving gateway needs: they are read by
`resolve_secrets`, which `load_settings` runs unless told not to. Commands that only read (audit,
policy, catalog validate) load with `resolve_secrets=False`, so an operator can run them without
the gateway's secrets, while `serve` still refuses to start when one is missing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

ENV_PREFIX = "NARROWGATE_"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_UPSTREAM_REPLY_BYTES = 4 * 1024 * 1024
DEFAULT_STATE = "sqlite:///var/lib/narrowgate/state.db"
CONFIG_KEYS = frozenset({
    "listen", "catalog", "policies", "state", "public_url", "allowed_origins", "auth",
    "limits", "identity", "admin", "agents_file", "policy", "tokens", "monitoring", "approvals",
    "discovery", "forwarded_allow_ips",
})


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


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


@dataclass(frozen=True, slots=True)
class PolicySettings:
    # What a denied agent is told: the policy's @reason text ("annotation") or only "denied by policy".
    agent_reasons: str = "annotation"
    # A candidate policy directory evaluated beside the live one, log-only (shadow mode).
    shadow: Path | None = None
    # How often the policy directory is checked for changes; 0 turns the watcher off.
    watch_interval_s: float = 2.0
    # The raw `working_hours` mapping, read by gateway.policy.
    working_hours: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenSettings:
    # Per-call upstream tokens: one tool, one upstream, this long (at most 60 s).
    upstream_ttl_s: float = 60.0
    # Task tokens: how long one stays usable, never past its task's deadline (at most 900 s).
    task_ttl_s: float = 900.0


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_depth: int = 64
    # How long a 2025-11-25 session may sit idle before the gateway forgets it.
    session_idle_s: float = 3600.0
    # Open 2025-11-25 sessions: at most this many per agent, and in all (a new one beyond is refused).
    max_sessions_per_agent: int = 64
    max_sessions: int = 10_000
    # Largest single message read from an upstream (a reply, an SSE event, a stdio line).
    max_upstream_reply_bytes: int = DEFAULT_MAX_UPSTREAM_REPLY_BYTES


@dataclass(frozen=True, slots=True)
class Settings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    catalog_dir: Path = Path("tool_catalog")
    policies_dir: Path = Path("cedar")
    state: str = DEFAULT_STATE
    public_url: str | None = None
    allowed_origins: tuple[str, ...] = ()
    # Reverse proxies / load balancers whose X-Forwarded-For and X-Forwarded-Proto are believed (IPs or
    # networks; "*" for any peer). Empty: forwarding headers are ignored and the peer address is used.
    forwarded_allow_ips: tuple[str, ...] = ()
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    tokens: TokenSettings = field(default_factory=TokenSettings)
    # gateway.chain.settings.MonitoringSettings, typed loosely like `identity`.
    monitoring: Any = None
    # Where chain-monitoring detections are POSTed (optional), and the env var holding the HMAC secret.
    monitoring_webhook_url: str | None = None
    monitoring_webhook_secret_env: str | None = None
    agents_file: Path | None = None
    # gateway.approvals.settings.ApprovalSettings, typed loosely like `identity`.
    approvals: Any = None
    # gateway.discovery.settings.DiscoverySettings, typed loosely like `identity`.
    discovery: Any = None
    # gateway.identity.settings.IdentitySettings; typed loosely to keep config free of identity imports.
    identity: Any = None

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{_host_for_url(self.listen_host)}:{self.listen_port}"

    def is_loopback_bind(self) -> bool:
        return is_loopback_host(self.listen_host)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def load_settings(path: str | Path | None, environ: Mapping[str, str] | None = None, *,
                  resolve_secrets: bool = True) -> Settings:
    """Read the YAML file (if any), apply environment overrides, and validate.

    With `resolve_secrets=False` the tokens named by `token_env` are left unread (their `token` is
    None): for commands that never authenticate anyone, so they need not be given the secrets.
    """
    raw: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        config_path = Path(path)
        try:
            loaded = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_path} must hold a mapping at the top level")
        raw = loaded or {}
        base_dir = config_path.resolve().parent
    env = os.environ if environ is None else environ
    apply_env_overrides(raw, env)
    settings = settings_from_mapping(raw, base_dir, resolve_secrets=False)
    return with_secrets(settings, env) if resolve_secrets else settings


def with_secrets(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """`settings` with every `token_env` token read from the environment; ConfigError naming each one unset.

    All missing variables are named in one line, so a refused start says everything at once.
    """
    env = os.environ if environ is None else environ
    missing: list[str] = []
    static = tuple(_read_token(t, f"auth.static_tokens[{i}]", env, missing)
                   for i, t in enumerate(settings.auth.static_tokens))
    admin = tuple(_read_token(t, f"admin.tokens[{i}]", env, missing) for i, t in enumerate(settings.admin.tokens))
    if missing:
        raise ConfigError("; ".join(missing))
    return replace(settings, auth=replace(settings.auth, static_tokens=static),
                   admin=replace(settings.admin, tokens=admin))


TokenEntry = TypeVar("TokenEntry", StaticToken, AdminToken)


def _read_token(entry: TokenEntry, where: str, environ: Mapping[str, str], missing: list[str]) -> TokenEntry:
    if not entry.token_env:
        return entry
    value = environ.get(entry.token_env)
    if not value:
        missing.append(f"{where}: environment variable {entry.token_env} is not set")
        return entry
    return replace(entry, token=value)


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        if keys[0] not in CONFIG_KEYS:
            continue  # other NARROWGATE_* variables (tokens, secrets) are not config keys
        target = raw
        for key in keys[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{name}: {key} is not a mapping in the config")
        target[keys[-1]] = env_value(value)


def env_value(value: str) -> Any:
    """JSON scalars and lists keep their type (`true`, `42`, `["a"]`); anything else is a string."""
    try:
        return json.loads(value)
    except ValueError:
        return value


UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like "90", "90s", "15m", "1h"; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        unit = UNITS.get(text[-1:]) if text else None
        seconds = float(text[:-1]) * unit if unit is not None else float(text)
    if not 0 < seconds < 366 * 86400:
        raise ValueError(f"a duration must be positive and under a year, got {value!r}")
    return seconds


def duration_s(value: Any, key: str) -> float:
    try:
        return parse_duration(value)
    except ValueError:
        raise ConfigError(f"{key} must be a duration (seconds, or like 90s, 15m, 1h), got {value!r}") from None


def webhook_url(value: Any, key: str) -> str | None:
    """An optional http(s) URL to POST signed webhooks to."""
    if value in (None, ""):
        return None
    text = str(value)
    if not text.startswith(("http://", "https://")):
        raise ConfigError(f"{key} must be an http(s) URL")
    return text


def check_keys(raw: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"unknown {where} key(s): {', '.join(unknown)}")


def settings_from_mapping(raw: Mapping[str, Any], base_dir: Path, *, resolve_secrets: bool = True) -> Settings:
    """Validate a parsed config; `resolve_secrets` as for load_settings (read from os.environ)."""
    settings = _settings(raw, base_dir)
    return with_secrets(settings) if resolve_secrets else settings


def _settings(raw: Mapping[str, Any], base_dir: Path) -> Settings:
    check_keys(raw, CONFIG_KEYS, "config")
    host, port = _parse_listen(str(raw.get("listen", "127.0.0.1:8080")))
    public_url = _optional_str(raw.get("public_url"))
    base_url = public_url or f"http://{_host_for_url(host)}:{port}"
    return Settings(
        listen_host=host,
        listen_port=port,
        catalog_dir=_path(raw.get("catalog", "tool_catalog"), base_dir),
        policies_dir=_path(raw.get("policies", "cedar"), base_dir),
        state=str(raw.get("state", DEFAULT_STATE)),
        public_url=public_url,
        allowed_origins=tuple(str(o) for o in raw.get("allowed_origins") or ()),
        forwarded_allow_ips=_forwarded_allow_ips(raw.get("forwarded_allow_ips")),
        auth=_auth(raw.get("auth") or {}),
        limits=_limits(raw.get("limits") or {}),
        admin=_admin(raw.get("admin") or {}),
        policy=_policy(raw.get("policy") or {}, base_dir),
        tokens=_tokens(raw.get("tokens") or {}),
        monitoring=_monitoring(raw.get("monitoring") or {}),
        monitoring_webhook_url=webhook_url((raw.get("monitoring") or {}).get("webhook_url"), "monitoring.webhook_url"),
        monitoring_webhook_secret_env=_optional_str((raw.get("monitoring") or {}).get("webhook_secret_env")),
        agents_file=_path(raw["agents_file"], base_dir) if raw.get("agents_file") else None,
        # Tokens are minted for the protected resource RFC 9728 advertises: this gateway's /mcp.
        identity=_identity(raw.get("identity") or {}, base_dir, f"{base_url}/mcp"),
        approvals=_approvals(raw.get("approvals")),
        discovery=_discovery(raw.get("discovery")),
    )


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"listen must be HOST:PORT, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"listen port out of range: {port}")
    return host.strip("[]") or "127.0.0.1", port


def _forwarded_allow_ips(value: Any) -> tuple[str, ...]:
    """Trusted proxies: a list (or comma-separated string) of IP addresses, CIDR networks, or "*"."""
    if value in (None, ""):
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError("forwarded_allow_ips must be a list of IP addresses or networks")
    trusted = []
    for item in items:
        text = str(item).strip()
        if text != "*":
            try:
                text = str(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ConfigError(f"forwarded_allow_ips: {item!r} is not an IP address or network") from None
        trusted.append(text)
    return ("*",) if "*" in trusted else tuple(trusted)


def _path(value: Any, base_dir: Path) -> Path:
    path = Path(str(value))
    return path if path.is_absolute() else (base_dir / path).resolve()


def _optional_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value).rstrip("/")


def _positive_float(value: Any, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} must be a number, got {value!r}") from exc
    if number <= 0:
        raise ConfigError(f"{key} must be positive, got {number}")
    return number


def _auth(raw: Any) -> AuthSettings:
    if not isinstance(raw, dict):
        raise ConfigError("auth must be a mapping")
    check_keys(raw, frozenset({"open_loopback", "static_tokens"}), "auth")
    tokens = []
    for index, entry in enumerate(raw.get("static_tokens") or ()):
        tokens.append(_static_token(entry, index))
    return AuthSettings(open_loopback=bool(raw.get("open_loopback", False)), static_tokens=tuple(tokens))


def _static_token(entry: Any, index: int) -> StaticToken:
    where = f"auth.static_tokens[{index}]"
    if not isinstance(entry, dict) or not entry.get("agent"):
        raise ConfigError(f"{where} needs an agent")
    token, env, digest = _secret(entry, where)
    return StaticToken(agent=str(entry["agent"]), token=token, token_sha256=digest, token_env=env)


def _limits(raw: Any) -> LimitSettings:
    if not isinstance(raw, dict):
        raise ConfigError("limits must be a mapping")
    check_keys(raw, frozenset({"max_body_bytes", "max_json_depth", "session_idle_s", "max_sessions_per_agent",
                               "max_sessions", "max_upstream_reply_bytes"}), "limits")
    defaults = LimitSettings()
    return LimitSettings(
        max_body_bytes=int(_positive_float(raw.get("max_body_bytes", defaults.max_body_bytes), "max_body_bytes")),
        max_json_depth=int(_positive_float(raw.get("max_json_depth", defaults.max_json_depth), "max_json_depth")),
        session_idle_s=_positive_float(raw.get("session_idle_s", defaults.session_idle_s), "session_idle_s"),
        max_sessions_per_agent=_whole_number(raw.get("max_sessions_per_agent", defaults.max_sessions_per_agent),
                                             "limits.max_sessions_per_agent"),
        max_sessions=_whole_number(raw.get("max_sessions", defaults.max_sessions), "limits.max_sessions"),
        max_upstream_reply_bytes=int(_positive_float(
            raw.get("max_upstream_reply_bytes", defaults.max_upstream_reply_bytes), "max_upstream_reply_bytes")),
    )


def _whole_number(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a whole number of at least 1, got {value!r}")
    return value


def _admin(raw: Any) -> AdminSettings:
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


def _identity(raw: Any, base_dir: Path, base_url: str) -> Any:
    from gateway.identity.settings import identity_settings_from_mapping

    if not isinstance(raw, dict):
        raise ConfigError("identity must be a mapping")
    return identity_settings_from_mapping(raw, base_dir, base_url)


def _policy(raw: Any, base_dir: Path) -> PolicySettings:
    if not isinstance(raw, dict):
        raise ConfigError("policy must be a mapping")
    check_keys(raw, frozenset({"agent_reasons", "shadow", "watch_interval_s", "working_hours"}), "policy")
    reasons = raw.get("agent_reasons", "annotation")
    if reasons not in ("annotation", "generic"):
        raise ConfigError("policy.agent_reasons must be 'annotation' or 'generic'")
    interval = raw.get("watch_interval_s", 2.0)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
        raise ConfigError("policy.watch_interval_s must be a number >= 0")
    hours = raw.get("working_hours") or {}
    if not isinstance(hours, dict):
        raise ConfigError("policy.working_hours must be a mapping")
    return PolicySettings(
        agent_reasons=reasons,
        shadow=_path(raw["shadow"], base_dir) if raw.get("shadow") else None,
        watch_interval_s=float(interval),
        working_hours=hours,
    )


def _tokens(raw: Any) -> TokenSettings:
    if not isinstance(raw, dict):
        raise ConfigError("tokens must be a mapping")
    check_keys(raw, frozenset({"upstream_ttl_s", "task_ttl_s"}), "tokens")
    upstream = _positive_float(raw.get("upstream_ttl_s", 60.0), "tokens.upstream_ttl_s")
    task = _positive_float(raw.get("task_ttl_s", 900.0), "tokens.task_ttl_s")
    if not 1 <= upstream <= 60:
        raise ConfigError("tokens.upstream_ttl_s must be between 1 and 60 seconds")
    if not 60 <= task <= 900:
        raise ConfigError("tokens.task_ttl_s must be between 60 and 900 seconds (key rotation overlaps assume it)")
    return TokenSettings(upstream_ttl_s=upstream, task_ttl_s=task)


def _approvals(raw: Any) -> Any:
    from gateway.approvals.settings import approval_settings

    return approval_settings(raw)


def _discovery(raw: Any) -> Any:
    from gateway.discovery.settings import discovery_settings

    return discovery_settings(raw)


def _monitoring(raw: Any) -> Any:
    from gateway.chain.settings import monitoring_settings_from_mapping

    if not isinstance(raw, dict):
        raise ConfigError("monitoring must be a mapping")
    return monitoring_settings_from_mapping({k: v for k, v in raw.items()
                                             if k not in ("webhook_url", "webhook_secret_env")})
