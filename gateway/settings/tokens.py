"""The `tokens:` section: lifetimes of per-call upstream tokens and of task tokens."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings.errors import ConfigError
from gateway.settings.fields import check_keys, positive_float


@dataclass(frozen=True, slots=True)
class TokenSettings:
    # Per-call upstream tokens: one tool, one upstream, this long (at most 60 s).
    upstream_ttl_s: float = 60.0
    # Task tokens: how long one stays usable, never past its task's deadline (at most 900 s).
    task_ttl_s: float = 900.0
    # Delegation hops allowed below a root task (token exchange with an actor token); 0 turns delegation off.
    max_delegation_depth: int = 2


def token_settings(raw: object) -> TokenSettings:
    if not isinstance(raw, dict):
        raise ConfigError("tokens must be a mapping")
    check_keys(raw, frozenset({"upstream_ttl_s", "task_ttl_s", "max_delegation_depth"}), "tokens")
    upstream = positive_float(raw.get("upstream_ttl_s", 60.0), "tokens.upstream_ttl_s")
    task = positive_float(raw.get("task_ttl_s", 900.0), "tokens.task_ttl_s")
    if not 1 <= upstream <= 60:
        raise ConfigError("tokens.upstream_ttl_s must be between 1 and 60 seconds")
    if not 60 <= task <= 900:
        raise ConfigError("tokens.task_ttl_s must be between 60 and 900 seconds (key rotation overlaps assume it)")
    depth = raw.get("max_delegation_depth", 2)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= 8:
        raise ConfigError(f"tokens.max_delegation_depth must be a whole number from 0 to 8, got {depth!r}")
    return TokenSettings(upstream_ttl_s=upstream, task_ttl_s=task, max_delegation_depth=depth)
