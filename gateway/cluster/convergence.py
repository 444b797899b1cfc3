"""Replicas converge: what changes on one replica is announced on the event bus, and every other
replica re-reads it from the shared store and reacts as the one where it happened did.

- an agent created, updated, suspended or retired (admin API, agents file, kill switch): `agent_changed`;
  the others re-read it, and a stopped agent loses its sessions, listen streams and tasks there too;
- a task started, or ended and written: `task_changed`; the others re-read it, and an ended task's
  upstream tokens are refused and its sessions closed there too;
- a policy reload attempted (SIGHUP, file watch, admin API): `policy_reloaded`; the others reload from
  their own policy directory (the same files);
- a person's review decision (tool or resource): `reviews_changed`; the others re-read the reviews,
  rebuild and tell their agents;
- the signing keys rotated: `keys_rotated`; the others re-read the keys.

Audit records are written once, by the replica where the change happened. Payloads name ids only.
Each notice carries this process's origin, so its own handlers skip what it published itself.
After a lost bus connection (`resync`), each topic re-reads everything.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from functools import partial
from typing import Any

from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.discovery.resources import ResourceReviews
from gateway.discovery.service import ToolReviews
from gateway.policy.engine import ReloadOutcome
from gateway.policy.reloader import PolicyReloader
from gateway.registry.service import Registry
from gateway.state.notices import (
    TOPIC_AGENT_CHANGED,
    TOPIC_KEYS_ROTATED,
    TOPIC_POLICY_RELOADED,
    TOPIC_REVIEWS_CHANGED,
    TOPIC_TASK_CHANGED,
    Notices,
)
from gateway.tasks.model import Task
from gateway.tasks.service import TaskService
from gateway.wiring.background import Background
from gateway.wiring.catalog_sync import CatalogSync
from gateway.wiring.lifecycle import LifecycleReactions
from gateway.wiring.list_changes import ListChanges

log = logging.getLogger("narrowgate")
REVIEW_KINDS = ("tools", "resources")


class Convergence:
    def __init__(self, notices: Notices, background: Background, registry: Registry, tasks: TaskService,
                 lifecycle: LifecycleReactions, reloader: PolicyReloader, catalog_sync: CatalogSync,
                 list_changes: ListChanges, upstream_auth: UpstreamAuth) -> None:
        self.notices = notices
        self.background = background
        self.registry = registry
        self.tasks = tasks
        self.lifecycle = lifecycle
        self.reloader = reloader
        self.catalog_sync = catalog_sync
        self.list_changes = list_changes
        self.upstream_auth = upstream_auth
        self.origin = uuid.uuid4().hex  # this process: its own notices are not applied twice

    def connect(self, reviews: Mapping[str, ToolReviews | ResourceReviews]) -> None:
        """Announce this replica's changes; apply the others'. `reviews`: "tools" and "resources"."""
        self.registry.on_change.append(lambda agent, _event: self.announce(TOPIC_AGENT_CHANGED, agent_id=agent.id))
        self.tasks.on_saved.append(self.task_saved)
        self.reloader.on_attempted_here.append(self.policy_reloaded)
        for kind, records in reviews.items():
            records.on_decided.append(partial(self.publish, TOPIC_REVIEWS_CHANGED, kind=kind))
        self.upstream_auth.on_keys_rotated.append(lambda: self.publish(TOPIC_KEYS_ROTATED))
        self.registry.on_refreshed.append(self.lifecycle.on_agent_refreshed)
        self.tasks.on_ended_elsewhere.append(self.lifecycle.end_task_grants)
        self.notices.subscribe(TOPIC_AGENT_CHANGED, self.agent_changed)
        self.notices.subscribe(TOPIC_TASK_CHANGED, self.task_changed)
        self.notices.subscribe(TOPIC_POLICY_RELOADED, self.policy_reload_elsewhere)
        self.notices.subscribe(TOPIC_REVIEWS_CHANGED, self.reviews_changed)
        self.notices.subscribe(TOPIC_KEYS_ROTATED, self.keys_rotated)

    # announcing

    async def publish(self, topic: str, **ids: str) -> None:
        await self.notices.publish(topic, {**ids, "origin": self.origin})

    def announce(self, topic: str, **ids: str) -> None:
        """From a synchronous observer: publish without holding up the change."""
        self.background.run(self.publish(topic, **ids))

    def task_saved(self, task: Task) -> None:
        self.announce(TOPIC_TASK_CHANGED, task_id=task.id)

    def policy_reloaded(self, outcome: ReloadOutcome) -> None:
        self.announce(TOPIC_POLICY_RELOADED)

    # applying

    def mine(self, notice: Mapping[str, Any]) -> bool:
        return notice.get("origin") == self.origin

    async def agent_changed(self, notice: Mapping[str, Any]) -> None:
        if not self.mine(notice):
            await self.registry.refresh(None if notice.get("resync") else str(notice["agent_id"]))

    async def task_changed(self, notice: Mapping[str, Any]) -> None:
        if not self.mine(notice):
            await self.tasks.refresh(None if notice.get("resync") else str(notice["task_id"]))

    async def policy_reload_elsewhere(self, notice: Mapping[str, Any]) -> None:
        if not self.mine(notice):
            await self.reloader.reload("another replica reloaded" if not notice.get("resync") else "resync",
                                       here=False)

    async def reviews_changed(self, notice: Mapping[str, Any]) -> None:
        if self.mine(notice):
            return
        kinds = REVIEW_KINDS if notice.get("resync") else (str(notice["kind"]),)
        for kind in kinds:
            if kind in REVIEW_KINDS:
                await self.catalog_sync.take_stored_reviews(kind)
        await self.list_changes.announce_list_changed({k for k in kinds if k in REVIEW_KINDS})

    async def keys_rotated(self, notice: Mapping[str, Any]) -> None:
        if not self.mine(notice) and self.upstream_auth.keyring is not None:
            await self.upstream_auth.keyring.reload()
            log.info("signing keys re-read from the store: %s is current", self.upstream_auth.keyring.current_kid)
