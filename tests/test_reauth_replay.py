"""What-if replay of re-authentication step-ups (RFC 9470), on a real engine and real Cedar: a recorded
decision carries its person in context.user, so replaying it with the same policies gives the same answer
(a step-up stays a step-up; no person, or a provider without auth_time, stays the same deny)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.catalog.model import Catalog
from gateway.identity.principal import Principal
from gateway.identity.user import UserIdentity
from gateway.policy.context import RequestFacts
from gateway.policy.engine import CedarRequest, PolicyEngine
from gateway.policy.reauth import NO_AUTH_TIME, NO_PERSON
from tests.support.processes import cedar_copy
from tests.test_policy_engine import WEDNESDAY, agent_principal, engine_for, write_catalog

REAUTH_POLICY = """
@id("balance-needs-recent-mfa")
@step_up("reauth")
@acr_values("mfa")
@max_age("300")
@reason("balances need a multi-factor sign-in within the last 5 minutes")
forbid (principal, action == Action::"payments__get_balance", resource)
unless { context.user.acr == "mfa" && context.request.time - context.user.auth_time <= 300 };
"""


@pytest.fixture
def engine(tmp_path: Path) -> tuple[PolicyEngine, Catalog]:
    cedar_dir = cedar_copy(tmp_path / "cedar", **{"70-reauth": REAUTH_POLICY})
    catalog = write_catalog(tmp_path / "catalog")
    return engine_for(cedar_dir, catalog), catalog


def person(auth_time: int | None) -> UserIdentity:
    return UserIdentity("alice", "https://login.example.com", "", False, (), "client-1", auth_time, "pwd", ("pwd",))


def decided_and_replayed(engine: PolicyEngine, catalog: Catalog, who: Principal,
                         user: UserIdentity | None) -> tuple[tuple[str, str], tuple[str, str]]:
    """(outcome, reason) live, then replayed from what the recorder would store."""
    seen: list[CedarRequest] = []
    facts = RequestFacts(now=WEDNESDAY, era="2026-07-28", client="pytest", user=user)
    live = engine.decide_tool(who, catalog.tools["payments__get_balance"], {}, facts, seen=seen)
    replayed = engine.redecide(engine.recorded_input(seen[-1]))
    return (live.outcome, live.reason), (replayed.outcome, replayed.reason)


def test_a_recorded_reauth_step_up_replays_as_a_step_up(engine: tuple[PolicyEngine, Catalog]) -> None:
    policies, catalog = engine
    signed_in_long_ago = person(int(WEDNESDAY) - 3600)
    who = dataclasses.replace(agent_principal(servers=("payments",), auth_method="client"), user=signed_in_long_ago)
    live, replayed = decided_and_replayed(policies, catalog, who, signed_in_long_ago)
    assert live == ("step_up", "balances need a multi-factor sign-in within the last 5 minutes")
    assert replayed == live  # before: a plain deny ("no person"), the facts were not there to read


def test_no_person_and_no_auth_time_replay_as_the_same_denies(engine: tuple[PolicyEngine, Catalog]) -> None:
    policies, catalog = engine
    workload = agent_principal(servers=("payments",))
    live, replayed = decided_and_replayed(policies, catalog, workload, None)
    assert live == replayed == ("deny", NO_PERSON)
    unknown = person(None)  # the provider sends no auth_time: context.user.auth_time is 0
    who = dataclasses.replace(agent_principal(servers=("payments",), auth_method="client"), user=unknown)
    live, replayed = decided_and_replayed(policies, catalog, who, unknown)
    assert live == replayed == ("deny", NO_AUTH_TIME)
