"""A `postgresql://` store URL, parsed once: the pool knobs taken out, the password kept out of every name.

Knobs are query parameters (`?pool_max=20&command_timeout=5`); every other query parameter goes to
asyncpg unchanged (`sslmode`, `sslrootcert`, `application_name`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from gateway.store.base import UnsupportedStoreUrl

SCHEMES = ("postgresql", "postgres")
USAGE = "use postgresql://user:password@host:port/database"

DEFAULT_POOL_MIN = 1
DEFAULT_POOL_MAX = 10
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_COMMAND_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class PostgresUrl:
    """Where the store lives and how its pool behaves. `dsn` (with the password) stays out of repr."""

    dsn: str = field(repr=False)
    name: str  # scheme://host:port/database: safe for logs and errors
    secrets: tuple[str, ...] = field(repr=False)  # the password as written and as decoded
    pool_min: int = DEFAULT_POOL_MIN
    pool_max: int = DEFAULT_POOL_MAX
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S

    def scrub(self, text: str) -> str:
        """`text` with the password cut out, for messages built from a driver's errors."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def parse_postgres_url(url: str) -> PostgresUrl:
    """Parse `url`; UnsupportedStoreUrl (naming only scheme, host and database) when it is not usable."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname or ""
    except ValueError:
        raise UnsupportedStoreUrl(f"invalid postgres store URL (host or port unreadable); {USAGE}") from None
    scheme = parts.scheme.lower()
    database = parts.path.lstrip("/")
    name = f"{scheme}://{host}{'' if port is None else f':{port}'}/{database}"
    if scheme not in SCHEMES or not host or not database or "/" in database:
        raise UnsupportedStoreUrl(f"invalid postgres store URL {name}: it needs a host and a database; {USAGE}")
    knobs: dict[str, str] = {}
    passed: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _KNOBS:
            knobs[key] = value
        elif key == "password":  # libpq's spelling of a password in the query: passed on, but scrubbed
            knobs[key] = value
            passed.append((key, value))
        else:
            passed.append((key, value))
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(passed), ""))
    parsed = PostgresUrl(
        dsn, name, _secrets(parts.password, knobs.get("password")),
        pool_min=int(_knob(name, "pool_min", knobs.get("pool_min"), DEFAULT_POOL_MIN)),
        pool_max=int(_knob(name, "pool_max", knobs.get("pool_max"), DEFAULT_POOL_MAX)),
        connect_timeout_s=_knob(name, "connect_timeout", knobs.get("connect_timeout"), DEFAULT_CONNECT_TIMEOUT_S),
        command_timeout_s=_knob(name, "command_timeout", knobs.get("command_timeout"), DEFAULT_COMMAND_TIMEOUT_S),
    )
    if parsed.pool_max < max(parsed.pool_min, 1):
        raise UnsupportedStoreUrl(f"postgres store URL {name}: pool_max must be at least 1 and at least pool_min")
    return parsed


def _secrets(*passwords: str | None) -> tuple[str, ...]:
    found = {form for password in passwords if password for form in (password, unquote(password))}
    return tuple(sorted(found, key=len, reverse=True))  # longest first: no secret is left half-replaced


# the query parameters the store reads itself (asyncpg gets the others)
_KNOBS = frozenset({"pool_min", "pool_max", "connect_timeout", "command_timeout"})


def _knob(name: str, key: str, value: str | None, default: float) -> float:
    """A knob's value: whole connections for pool_*, seconds for the timeouts; refused clearly when unusable."""
    if value is None:
        return default
    try:
        number: int | float = int(value) if key.startswith("pool_") else float(value)
    except ValueError:
        number = -1
    smallest = 0 if key == "pool_min" else 1e-3
    if not (smallest <= number < math.inf):  # NaN fails too
        what = "a whole number of connections" if key.startswith("pool_") else "a positive number of seconds"
        raise UnsupportedStoreUrl(f"postgres store URL {name}: {key} must be {what}, got {value!r}")
    return number
