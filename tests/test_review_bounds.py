"""What an upstream can make the gateway keep by listing names: at most
discovery.max_pending_reviews_per_server undecided reviews per server, and undecided ones it stopped
listing are dropped from memory after discovery.forget_unlisted_after (real SQLite store and audit log,
a fake clock). The same through a real gateway and a real shifting upstream is in
test_review_bounds_e2e.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.audit import AuditLog
from gateway.discovery.service import ToolReviews
from gateway.discovery.webhook import review_webhook_payload
from gateway.policy.engine import PolicyEngine
from gateway.settings.discovery import discovery_settings
from gateway.settings.errors import ConfigError
from gateway.store import Store
from gateway.store.base import AuditQuery
from tests.support.state import FakeClock
from tests.test_policy_engine import REPO_CEDAR
from tests.test_tool_reviews import ADMIN, OWNER, catalog, tool

CAP = 5
WINDOW_S = 60.0


@pytest.fixture
async def bounded(store: Store, clock: FakeClock) -> AsyncIterator[ToolReviews]:
    audit = AuditLog(store, clock)
    await audit.open()
    service = ToolReviews(store, audit, clock, max_pending=CAP, forget_after_s=WINDOW_S)
    await service.open()
    yield service
    await audit.close()


async def catalog_actions(reviews: ToolReviews, store: Store) -> list[tuple[str, str]]:
    await reviews.audit.flush()
    return [(r["action"], r["detail"]["name"]) for r in await store.audit_records(AuditQuery(kind="catalog"))]


def names(count: int, prefix: str = "gen") -> list[dict[str, Any]]:
    return [tool(f"{prefix}_{i}") for i in range(count)]


async def test_new_names_over_the_cap_are_refused_recorded_once_and_never_exposed(
        bounded: ToolReviews, store: Store) -> None:
    cat = catalog()
    notices: list[dict[str, Any]] = []
    bounded.on_quarantined.append(lambda review: notices.append(review_webhook_payload(review, "https://gw")))
    listed = [tool("lookup"), *names(CAP + 3)]
    bounded.reconcile(cat, {"docs": listed})
    bounded.reconcile(cat, {"docs": listed})  # the next re-sync: nothing recorded twice
    queue = {r.name for r in bounded.list("quarantined")}
    assert queue == {f"gen_{i}" for i in range(CAP)}
    effective = bounded.effective(cat)
    assert {f"docs__gen_{i}" for i in range(CAP, CAP + 3)}.isdisjoint(effective.tools)
    assert "docs__lookup" in effective.tools  # the manifest's tools are never refused
    actions = await catalog_actions(bounded, store)
    assert [name for action, name in actions if action == "tool_refused"] == [f"gen_{i}" for i in range(CAP, CAP + 3)]
    assert [n["type"] for n in notices] == ["tool_quarantined"] * CAP + ["tool_review_cap_reached"]
    assert notices[-1]["upstream_name"] == f"gen_{CAP}" and notices[-1]["flags"] == ["review_cap_reached"]
    # A person's decision frees a place: the next re-sync admits one refused name, as quarantined.
    await bounded.reject(("docs", "gen_0"), OWNER, comment="no")
    bounded.reconcile(cat, {"docs": listed})
    assert bounded.get("docs", f"gen_{CAP}").status == "quarantined"
    assert len(bounded.list("quarantined")) == CAP


async def test_an_unlisted_undecided_review_is_forgotten_and_a_returning_name_is_quarantined_as_new(
        bounded: ToolReviews, store: Store, clock: FakeClock) -> None:
    cat = catalog()
    bounded.reconcile(cat, {"docs": [tool("lookup"), tool("gone"), tool("kept"), tool("refused_by_person")]})
    await bounded.approve(("docs", "kept"), ADMIN, risk="read")
    await bounded.reject(("docs", "refused_by_person"), ADMIN)
    bounded.reconcile(cat, {"docs": [tool("lookup")]})
    clock.now += WINDOW_S - 1
    assert not bounded.reconcile(cat, {"docs": [tool("lookup")]})
    assert bounded.get("docs", "gone").status == "quarantined"  # not yet
    clock.now += 1
    assert bounded.reconcile(cat, {"docs": [tool("lookup")]})  # changed: the effective catalog loses it
    assert {r.name for r in bounded.list()} == {"lookup", "kept", "refused_by_person"}
    assert "docs__gone" not in bounded.effective(cat).tools
    await bounded.save()
    assert {r.name for r in await store.load_tool_reviews()} >= {"gone"}  # the durable record stays
    # It comes back, even with the definition a person never saw approved: quarantined as new.
    clock.now += 5
    bounded.reconcile(cat, {"docs": [tool("lookup"), tool("gone")]})
    back = bounded.get("docs", "gone")
    assert (back.status, back.change, back.first_seen) == ("quarantined", "new", clock.now)
    assert ("tool_review_forgotten", "gone") in await catalog_actions(bounded, store)


async def test_the_tables_stay_bounded_however_many_names_an_upstream_invents(
        bounded: ToolReviews, clock: FakeClock) -> None:
    """The soak's shifting upstream: a window of 20 names sliding by one name per re-sync."""
    cat = catalog()
    for step in range(600):
        clock.now += 1
        listed = [tool("lookup"), *(tool(f"gen_{i}") for i in range(step, step + 20))]
        bounded.reconcile(cat, {"docs": listed})
        assert len(bounded.records) <= 1 + CAP
        assert len(bounded.effective(cat).tools) <= 1 + CAP
        assert len(bounded._analyses) <= len(listed)  # only what is listed now is remembered
        assert len(bounded._unlisted_since) <= CAP


async def test_a_restart_loads_only_the_newest_undecided_reviews_per_server(
        store: Store, clock: FakeClock) -> None:
    audit = AuditLog(store, clock)
    await audit.open()
    try:
        unbounded = ToolReviews(store, audit, clock, max_pending=10 * CAP)
        for i in range(3 * CAP):
            clock.now += 1
            unbounded.reconcile(catalog(), {"docs": [tool("lookup"), tool(f"gen_{i}")]})
        await unbounded.approve(("docs", "gen_0"), ADMIN, risk="read")
        await unbounded.save()
        reopened = ToolReviews(store, audit, clock, max_pending=CAP)
        await reopened.open()
        undecided = {r.name for r in reopened.list("quarantined")}
        assert undecided == {f"gen_{i}" for i in range(2 * CAP, 3 * CAP)}
        assert reopened.get("docs", "gen_0").status == "approved" and reopened.get("docs", "lookup")
    finally:
        await audit.close()


def test_the_bounds_are_configurable_and_checked() -> None:
    defaults = discovery_settings(None)
    assert (defaults.max_pending_reviews_per_server, defaults.forget_unlisted_after_s) == (500, 86_400.0)
    set_ = discovery_settings({"max_pending_reviews_per_server": 20, "forget_unlisted_after": "2h"})
    assert (set_.max_pending_reviews_per_server, set_.forget_unlisted_after_s) == (20, 7200.0)
    for bad in ({"max_pending_reviews_per_server": 0}, {"max_pending_reviews_per_server": "many"},
                {"forget_unlisted_after": "never"}):
        with pytest.raises(ConfigError, match="discovery"):
            discovery_settings(bad)


async def test_the_policy_engine_keeps_input_schemas_only_of_the_catalogs_tools(
        bounded: ToolReviews, clock: FakeClock) -> None:
    """A name forgotten by discovery leaves the policy engine too (its input schema was kept for good)."""
    cat = catalog()
    engine = PolicyEngine(REPO_CEDAR, cat)
    for step in range(3 * CAP):
        clock.now += WINDOW_S  # each name is forgotten at the next change after it is dropped
        listed = [tool("lookup"), tool(f"gen_{step}")]
        bounded.reconcile(cat, {"docs": listed})
        effective = bounded.effective(cat)
        assert engine.set_catalog(effective, {f"docs__{t['name']}": t["inputSchema"] for t in listed}).ok
        assert set(engine._known_schemas) <= set(effective.tools)
    # The name dropped at the last change waits for the next one; every earlier one is gone.
    assert set(bounded.effective(cat).tools) == {"docs__lookup", f"docs__gen_{3 * CAP - 2}", f"docs__gen_{3 * CAP - 1}"}
