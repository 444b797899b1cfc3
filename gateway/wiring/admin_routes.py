"""The people's side of the gateway: the admin API and the approvers' console, as routes."""

from __future__ import annotations

from starlette.routing import BaseRoute

from gateway.admin.agents_api import AgentsApi
from gateway.admin.policies_api import PoliciesApi
from gateway.approvals.service import ApprovalService
from gateway.config import Settings
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.discovery.resources import ResourceReviews
from gateway.discovery.service import ToolReviews
from gateway.privilege.evidence.sources import EvidenceSources
from gateway.state.backends import StateBackends
from gateway.store.base import Store
from gateway.tasks.service import TaskService
from gateway.tasks.tokens import TaskTokenIssuer


def admin_routes(settings: Settings, agents_api: AgentsApi, policies_api: PoliciesApi, tasks: TaskService,
                 task_tokens: TaskTokenIssuer, upstream_auth: UpstreamAuth, approvals: ApprovalService,
                 reviews: ToolReviews, resource_reviews: ResourceReviews, store: Store,
                 state: StateBackends) -> list[BaseRoute]:
    from gateway.admin.approvals_api import ApprovalsApi
    from gateway.admin.catalog_api import CatalogApi
    from gateway.admin.evidence_api import EvidenceApi
    from gateway.admin.keys_api import KeysApi
    from gateway.admin.tasks_api import TasksApi
    from gateway.console.pages import Console

    admin_auth, registry = agents_api.auth, agents_api.registry
    tasks_api = TasksApi(tasks, task_tokens, registry, admin_auth)
    keys_api = KeysApi(upstream_auth, admin_auth)
    evidence = EvidenceSources(settings, registry, store, policies_api.engine, reviews, lambda: tasks.catalog,
                               registry.clock)
    return [
        *agents_api.routes(),
        *policies_api.routes(),
        *tasks_api.routes(),
        *keys_api.routes(),
        *ApprovalsApi(approvals, admin_auth, settings.base_url).routes(),
        *CatalogApi(reviews, admin_auth, resource_reviews).routes(),
        *EvidenceApi(evidence, admin_auth).routes(),
        *Console(approvals, registry, tasks, store, admin_auth, settings, reviews, resource_reviews,
                 sessions=state.console_sessions, throttle=state.login_failures).routes(),
    ]
