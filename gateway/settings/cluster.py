"""The `cluster:` section and `workers`: where replicas share state, and how many processes serve."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from gateway.settings.errors import ConfigError
from gateway.settings.fields import check_keys

REDIS_SCHEMES = ("redis", "rediss", "unix")  # Valkey speaks the same protocol and takes the same URLs
KEY_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # no ':' (the separator): one prefix never starts another's key space
REPLICA_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_WORKERS = 64


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    # Shared ephemeral state and the event bus between workers and replicas; None: this process only.
    # May carry a password: never logged (see `redis_location`).
    redis_url: str | None = field(default=None, repr=False)
    # Namespaces every key and channel, so two deployments can share one Redis.
    key_prefix: str = "narrowgate"
    # This replica's name in /healthz, logs and audit records; None: host name and process id.
    replica_id: str | None = None

    @property
    def shared(self) -> bool:
        return self.redis_url is not None

    def redis_location(self) -> str:
        """The Redis URL without credentials: what logs and errors may show."""
        if self.redis_url is None:
            return "(none)"
        parts = urlsplit(self.redis_url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def cluster_settings(raw: object) -> ClusterSettings:
    if raw is None:
        return ClusterSettings()
    if not isinstance(raw, dict):
        raise ConfigError("cluster must be a mapping")
    check_keys(raw, frozenset({"redis_url", "key_prefix", "replica_id"}), "cluster")
    prefix = str(raw.get("key_prefix") or "narrowgate")
    if not KEY_PREFIX.fullmatch(prefix):
        raise ConfigError("cluster.key_prefix must be 1-64 characters of letters, digits, '_', '.' or '-'")
    replica = raw.get("replica_id")
    if replica is not None and not REPLICA_ID.fullmatch(str(replica)):
        raise ConfigError("cluster.replica_id must be 1-64 characters of letters, digits, '_', '.', ':' or '-'")
    return ClusterSettings(redis_url=_redis_url(raw.get("redis_url")), key_prefix=prefix,
                           replica_id=None if replica is None else str(replica))


def _redis_url(value: object) -> str | None:
    if value in (None, ""):
        return None
    text = str(value)
    scheme = text.partition("://")[0].lower()
    if "://" not in text or scheme not in REDIS_SCHEMES:
        # Only the scheme is named: the URL may carry a password.
        raise ConfigError(f"cluster.redis_url must be a redis://, rediss:// or unix:// URL, got scheme {scheme!r}")
    try:
        urlsplit(text).port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError("cluster.redis_url has an invalid port") from None
    return text


def workers_setting(value: object) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise ConfigError(f"workers must be a whole number from 1 to {MAX_WORKERS}, got {value!r}")
    return value


def workers_problem(workers: int, cluster: ClusterSettings, state: str) -> str | None:
    """Why `workers` processes cannot serve with this `cluster` section and store, if they cannot (one line)."""
    if workers > 1 and not cluster.shared:
        return (f"{workers} workers need cluster.redis_url: without Redis each worker would keep its own "
                "sessions, rate limits, revocations and approvals (set cluster.redis_url, or workers: 1)")
    if workers > 1 and state.endswith(":memory:"):
        return f"{workers} workers need a store they share: {state} is private to each process"
    return None


def worker_cluster(cluster: ClusterSettings, number: int) -> ClusterSettings:
    """Worker `number`'s cluster settings: a configured replica id gets the worker's number, since
    every worker is a replica of its own; without one each worker's default (host-pid) differs anyway."""
    if cluster.replica_id is None:
        return cluster
    return replace(cluster, replica_id=f"{cluster.replica_id}-w{number}")
