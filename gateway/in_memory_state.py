"""The state seams' in-memory implementations, configured from the settings: one gateway process."""

from __future__ import annotations

from dataclasses import replace

from gateway.catalog import Catalog
from gateway.chain.tracker import ChainTracker
from gateway.config import Settings
from gateway.console.sessions import LoginThrottle, SessionStore
from gateway.credentials.revocations import Revocations
from gateway.identity.verifier import DEFAULT_CACHE_SIZE, VerifiedTokenCache
from gateway.settings.monitoring import MonitoringSettings
from gateway.state.backends import StateBackends
from gateway.transport.sessions import SessionRegistry


def monitoring_with_catalog_egress(settings: Settings, catalog: Catalog) -> MonitoringSettings:
    """The catalog's `egress: true` tools count as egress, besides the config's."""
    monitoring = settings.monitoring
    egress = {*monitoring.egress_tools, *(t.exposed_name for t in catalog.tools.values() if t.egress)}
    return replace(monitoring, egress_tools=tuple(sorted(egress)))


def in_memory_backends(settings: Settings, catalog: Catalog) -> StateBackends:
    limits, approvals = settings.limits, settings.approvals
    chain = ChainTracker(monitoring_with_catalog_egress(settings, catalog))
    return StateBackends(
        agent_sessions=SessionRegistry(limits.session_idle_s, limits.max_sessions_per_agent, limits.max_sessions,
                                       max_per_client=limits.max_sessions_per_client),
        rate_windows=chain,  # one tracker holds both: they share its per-agent records
        chain_signals=chain,
        revocations=Revocations(),
        console_sessions=SessionStore(approvals.console_session_ttl_s, approvals.console_idle_s),
        login_failures=LoginThrottle(),
        verified_tokens=VerifiedTokenCache(DEFAULT_CACHE_SIZE),
    )
