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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gateway.json_values import JsonValue
from gateway.settings.approvals import ApprovalSettings, approval_settings
from gateway.settings.auth import AdminSettings, AdminToken, AuthSettings, StaticToken, admin_settings, auth_settings
from gateway.settings.cluster import ClusterSettings, cluster_settings, workers_setting
from gateway.settings.discovery import DiscoverySettings, discovery_settings
from gateway.settings.errors import ConfigError
from gateway.settings.fields import check_keys, resolve_path, webhook_url
from gateway.settings.identity import IdentitySettings, identity_settings_from_mapping, with_delegation_audience
from gateway.settings.limits import LimitSettings, limit_settings
from gateway.settings.monitoring import MonitoringSettings, monitoring_settings_from_mapping
from gateway.settings.network import host_for_url, is_loopback_host
from gateway.settings.policy import PolicySettings, policy_settings
from gateway.settings.tokens import TokenSettings, token_settings

ENV_PREFIX = "NARROWGATE_"
DEFAULT_STATE = "sqlite:///var/lib/narrowgate/state.db"
DEFAULT_AUDIENCE = "http://127.0.0.1:8080/mcp"  # the default `listen`'s /mcp
CONFIG_KEYS = frozenset({
    "listen", "catalog", "policies", "state", "public_url", "allowed_origins", "auth",
    "limits", "identity", "admin", "agents_file", "policy", "tokens", "monitoring", "approvals",
    "discovery", "forwarded_allow_ips", "cluster", "workers",
})


@dataclass(frozen=True, slots=True)
class Settings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    catalog_dir: Path = Path("tool_catalog")
    policies_dir: Path = Path("cedar")
    state: str = field(default=DEFAULT_STATE, repr=False)  # a PostgreSQL URL may carry a password
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
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    # Where chain-monitoring detections are POSTed (optional), and the env var holding the HMAC secret.
    monitoring_webhook_url: str | None = None
    monitoring_webhook_secret_env: str | None = None
    agents_file: Path | None = None
    approvals: ApprovalSettings = field(default_factory=ApprovalSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    # The audience is this gateway's /mcp URL; load_settings sets it from `listen` and `public_url`.
    identity: IdentitySettings = field(default_factory=lambda: IdentitySettings(audience=DEFAULT_AUDIENCE))
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    workers: int = 1  # processes serving one listen address; more than one needs cluster.redis_url

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{host_for_url(self.listen_host)}:{self.listen_port}"

    def is_loopback_bind(self) -> bool:
        return is_loopback_host(self.listen_host)


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


def env_value(value: str) -> JsonValue:
    """JSON scalars and lists keep their type (`true`, `42`, `["a"]`); anything else is a string."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def settings_from_mapping(raw: Mapping[str, Any], base_dir: Path, *, resolve_secrets: bool = True) -> Settings:
    """Validate a parsed config; `resolve_secrets` as for load_settings (read from os.environ)."""
    settings = _settings(raw, base_dir)
    return with_secrets(settings) if resolve_secrets else settings


def _settings(raw: Mapping[str, Any], base_dir: Path) -> Settings:
    check_keys(raw, CONFIG_KEYS, "config")
    host, port = _parse_listen(str(raw.get("listen", "127.0.0.1:8080")))
    public_url = _optional_str(raw.get("public_url"))
    base_url = public_url or f"http://{host_for_url(host)}:{port}"
    return Settings(
        listen_host=host,
        listen_port=port,
        catalog_dir=resolve_path(raw.get("catalog", "tool_catalog"), base_dir),
        policies_dir=resolve_path(raw.get("policies", "cedar"), base_dir),
        state=str(raw.get("state", DEFAULT_STATE)),
        public_url=public_url,
        allowed_origins=tuple(str(o) for o in raw.get("allowed_origins") or ()),
        forwarded_allow_ips=_forwarded_allow_ips(raw.get("forwarded_allow_ips")),
        auth=auth_settings(raw.get("auth") or {}),
        limits=limit_settings(raw.get("limits") or {}),
        admin=admin_settings(raw.get("admin") or {}),
        policy=policy_settings(raw.get("policy") or {}, base_dir),
        tokens=token_settings(raw.get("tokens") or {}),
        monitoring=_monitoring(raw.get("monitoring") or {}),
        monitoring_webhook_url=webhook_url((raw.get("monitoring") or {}).get("webhook_url"), "monitoring.webhook_url"),
        monitoring_webhook_secret_env=_optional_str((raw.get("monitoring") or {}).get("webhook_secret_env")),
        agents_file=resolve_path(raw["agents_file"], base_dir) if raw.get("agents_file") else None,
        # Tokens are minted for the protected resource RFC 9728 advertises: this gateway's /mcp.
        identity=with_delegation_audience(_identity(raw.get("identity") or {}, base_dir, f"{base_url}/mcp"), base_url),
        approvals=approval_settings(raw.get("approvals")),
        discovery=discovery_settings(raw.get("discovery")),
        cluster=cluster_settings(raw.get("cluster")),
        workers=workers_setting(raw.get("workers")),
    )


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"listen must be HOST:PORT, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"listen port out of range: {port}")
    return host.strip("[]") or "127.0.0.1", port


def _forwarded_allow_ips(value: object) -> tuple[str, ...]:
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


def _optional_str(value: object) -> str | None:
    return None if value in (None, "") else str(value).rstrip("/")


def _identity(raw: object, base_dir: Path, base_url: str) -> IdentitySettings:
    if not isinstance(raw, dict):
        raise ConfigError("identity must be a mapping")
    return identity_settings_from_mapping(raw, base_dir, base_url)


def _monitoring(raw: object) -> MonitoringSettings:
    if not isinstance(raw, dict):
        raise ConfigError("monitoring must be a mapping")
    return monitoring_settings_from_mapping({k: v for k, v in raw.items()
                                             if k not in ("webhook_url", "webhook_secret_env")})
