"""The people's side of the gateway: the admin API and the approvers' console, as routes."""

from __future__ import annotations

from typing import Protocol

from starlette.routing import BaseRoute

from gateway.admin.agents_api import AgentsApi
from gateway.admin.approvals_api import ApprovalsApi
from gateway.admin.auth import AdminAuthenticator
from gateway.admin.blast_api import BlastRadiusApi
from gateway.admin.catalog_api import CatalogApi
from gateway.admin.evidence_api import EvidenceApi
from gateway.admin.keys_api import KeysApi
from gateway.admin.policies_api import PoliciesApi
from gateway.admin.replay_api import ReplayApi
from gateway.admin.rightsize_api import RightsizeApi
from gateway.admin.secrets_api import SecretsApi
from gateway.admin.tasks_api import TasksApi
from gateway.approvals.service import ApprovalService
from gateway.audit import AuditLog
from gateway.config import Settings
from gateway.console.pages import Console
from gateway.credentials.rotation import SecretRotation
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.discovery.resources import ResourceReviews
from gateway.discovery.service import ToolReviews
from gateway.policy.engine import PolicyEngine
from gateway.policy.recorder import DecisionRecorder
from gateway.policy.reloader import PolicyReloader
from gateway.privilege.blast_radius import BlastRadiusService
from gateway.privilege.evidence.sources import EvidenceSources
from gateway.privilege.rightsize import RightsizeSources
from gateway.registry.service import Registry
from gateway.state.backends import StateBackends
from gateway.store.base import Store
from gateway.tasks.service import TaskService
from gateway.tasks.tokens import TaskTokenIssuer
from gateway.wiring.unused_share import UnusedShareGauge


class PeoplesParts(Protocol):
    """What the admin API and the console are built from: the Gateway's parts (gateway/app.py), read-only."""

    @property
    def settings(self) -> Settings: ...
    @property
    def admin_auth(self) -> AdminAuthenticator: ...
    @property
    def registry(self) -> Registry: ...
    @property
    def policy(self) -> PolicyEngine: ...
    @property
    def reloader(self) -> PolicyReloader: ...
    @property
    def tasks(self) -> TaskService: ...
    @property
    def task_tokens(self) -> TaskTokenIssuer: ...
    @property
    def upstream_auth(self) -> UpstreamAuth: ...
    @property
    def rotation(self) -> SecretRotation: ...
    @property
    def approvals(self) -> ApprovalService: ...
    @property
    def reviews(self) -> ToolReviews: ...
    @property
    def resource_reviews(self) -> ResourceReviews: ...
    @property
    def store(self) -> Store: ...
    @property
    def state(self) -> StateBackends: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def recorder(self) -> DecisionRecorder: ...
    @property
    def unused_share(self) -> UnusedShareGauge: ...  # and `.sources`: what measuring privilege reads


def admin_routes(parts: PeoplesParts) -> list[BaseRoute]:
    auth, registry, state = parts.admin_auth, parts.registry, parts.state
    rightsize = parts.unused_share.sources
    blast_radius = BlastRadiusService(rightsize.reach, registry, parts.settings)
    return [
        *AgentsApi(registry, auth).routes(),
        *PoliciesApi(parts.policy, parts.reloader, auth).routes(),
        *TasksApi(parts.tasks, parts.task_tokens, registry, auth).routes(),
        *KeysApi(parts.upstream_auth, auth).routes(),
        *SecretsApi(parts.rotation, auth).routes(),
        *ApprovalsApi(parts.approvals, auth, parts.settings.base_url).routes(),
        *CatalogApi(parts.reviews, auth, parts.resource_reviews).routes(),
        *BlastRadiusApi(blast_radius, auth).routes(),
        *ReplayApi(parts.policy, parts.recorder, parts.audit, parts.store, registry, auth).routes(),
        *RightsizeApi(rightsize, auth, parts.unused_share.refresh).routes(),
        *EvidenceApi(evidence_sources(parts, rightsize), auth).routes(),
        *Console(parts.approvals, registry, parts.tasks, parts.store, auth, parts.settings, parts.reviews,
                 parts.resource_reviews, sessions=state.console_sessions, throttle=state.login_failures,
                 blast_radius=blast_radius, rightsize=rightsize).routes(),
    ]


def evidence_sources(parts: PeoplesParts, rightsize: RightsizeSources) -> EvidenceSources:
    """What compliance evidence reads: the live parts, with the effective catalog as the tasks see it now."""
    tasks = parts.tasks
    return EvidenceSources(parts.settings, parts.registry, parts.store, parts.policy, parts.reviews,
                           lambda: tasks.catalog, parts.registry.clock, rightsize)
