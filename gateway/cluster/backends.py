"""The state seams of a gateway in a cluster: the Redis implementation of every seam. A seam added later
without one would be enforced per process (a rate limit N times over, a revocation heard by one replica):
`shared_backends` refuses to build such a set, so the gateway refuses to start rather than weaken."""

from __future__ import annotations

from dataclasses import fields, replace

from gateway.catalog import Catalog
from gateway.cluster.approvals import RedisApprovalWaiters, RedisOpenApprovals
from gateway.cluster.chain import RedisChain
from gateway.cluster.connection import Cluster
from gateway.cluster.console import RedisConsoleSessions, RedisLoginFailures
from gateway.cluster.notices import RedisNotices
from gateway.cluster.revocations import RedisRevocationList
from gateway.cluster.sessions import RedisSessions
from gateway.config import Settings
from gateway.in_memory_state import in_memory_backends, monitoring_with_catalog_egress
from gateway.settings.errors import ConfigError
from gateway.state.backends import StateBackends

# Per process by design (docs/state.md): a miss only means verifying a token again.
PER_PROCESS_SEAMS = frozenset({"verified_tokens"})


def state_backends(settings: Settings, catalog: Catalog, cluster: Cluster | None) -> StateBackends:
    """This process's memory, or (in a cluster) Redis for every seam that must be shared."""
    return in_memory_backends(settings, catalog) if cluster is None else shared_backends(settings, catalog, cluster)


def shared_backends(settings: Settings, catalog: Catalog, cluster: Cluster) -> StateBackends:
    state = in_memory_backends(settings, catalog)
    notices, revocations = RedisNotices(cluster), RedisRevocationList(cluster)
    cluster.runners += [notices, revocations]  # their pub/sub readers run while the cluster is open
    state = replace(state, notices=notices, revocations=revocations)
    chain = RedisChain(cluster, monitoring_with_catalog_egress(settings, catalog))  # so a call's steps share scripts
    state = replace(state, rate_windows=chain, chain_signals=chain, call_budgets=chain)
    approvals, waiters = settings.approvals, RedisApprovalWaiters(cluster)
    cluster.runners.append(waiters)
    state = replace(state, open_approvals=RedisOpenApprovals(cluster), approval_waiters=waiters,
                    console_sessions=RedisConsoleSessions(cluster, approvals.console_session_ttl_s,
                                                          approvals.console_idle_s),
                    login_failures=RedisLoginFailures(cluster))
    limits = settings.limits
    sessions = RedisSessions(cluster, limits.session_idle_s, limits.max_sessions_per_agent, limits.max_sessions,
                             limits.max_sessions_per_client)
    cluster.runners.append(sessions)
    state = replace(state, agent_sessions=sessions)
    local = process_local_seams(state)
    if local:
        raise ConfigError(f"cluster.redis_url: no shared implementation of {', '.join(local)}; "
                          "refusing to serve a fleet that would enforce them per process")
    return state


def process_local_seams(state: StateBackends) -> list[str]:
    """Fields of `state` held only in this process (and not per process by design)."""
    return [f.name for f in fields(state)
            if f.name not in PER_PROCESS_SEAMS and not getattr(getattr(state, f.name), "shared", False)]
