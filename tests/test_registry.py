"""The agent registry: validation, lifecycle, identity resolution, agents file, persistence."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.registry.model import Agent, Lifecycle, LifecycleEvent
from gateway.registry.service import (
    AgentsFileError,
    Conflict,
    IdentityRefused,
    NotFound,
    Registry,
    RegistryError,
)
from gateway.store import Store, StoreError
from tests.support.state import T0, FakeClock

GITHUB = "https://token.actions.githubusercontent.com"



def oidc(subject: str = "repo:acme/app:ref:refs/heads/main", claims: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "oidc", "issuer": GITHUB, "subject": subject, "claims": claims or {}}


def spec(agent_id: str = "bot-a", **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": agent_id,
        "owner": "team-a",
        "purpose": "triage issues",
        "identities": [oidc(f"repo:acme/{agent_id}:ref:refs/heads/main")],
    }
    return {**base, **overrides}


def claims_for(agent_id: str) -> tuple[str, str, str]:
    return ("oidc", GITHUB, f"repo:acme/{agent_id}:ref:refs/heads/main")



@pytest.fixture
async def registry(store: Store, clock: FakeClock) -> Registry:
    return await Registry.open(store, clock=clock)


async def agent_in(registry: Registry, state: Lifecycle, agent_id: str = "bot-a") -> Agent:
    """An agent brought to `state` the legal way."""
    initial = Lifecycle.PENDING if state is Lifecycle.PENDING else Lifecycle.ACTIVE
    agent = await registry.create(spec(agent_id, state=initial.value), "alice", "set up")
    if state is Lifecycle.SUSPENDED:
        agent = await registry.suspend(agent_id, "alice", "set up")
    if state is Lifecycle.RETIRED:
        agent = await registry.retire(agent_id, "alice", "set up")
    assert agent.state is state
    return agent


# create and validation


async def test_create_defaults_and_persists(registry: Registry, store: Store, clock: FakeClock) -> None:
    agent = await registry.create(spec(expires_at="2030-01-01T00:00:00Z"), "alice", "new triage bot")
    assert agent.state is Lifecycle.PENDING
    assert agent.display_name == "bot-a"
    assert agent.created_at == agent.changed_at == T0
    assert agent.expires_at == 1_893_456_000.0
    assert await store.get_agent("bot-a") == agent
    assert registry.get("bot-a") == agent
    reopened = await Registry.open(store, clock=clock)
    assert reopened.agents() == [agent]


async def test_create_keeps_every_attribute(registry: Registry) -> None:
    agent = await registry.create(
        spec(
            display_name="Triage bot",
            state="active",
            expires_at=T0 + 3600,
            groups=["triage", "triage", "bots"],
            labels={"env": "prod"},
            entitlement={"tools": ["github__create_issue"], "servers": ["docs"]},
            identities=[
                oidc("repo:acme/app:ref:refs/heads/main", {"repository_id": 123, "ref": "refs/heads/main"}),
                {"kind": "spiffe", "issuer": "spiffe://example.org", "subject": "spiffe://example.org/ns/bots/sa/a"},
                {"kind": "static", "issuer": "narrowgate", "subject": "bot-a"},
            ],
        ),
        "alice",
        "new",
    )
    assert agent.display_name == "Triage bot"
    assert agent.state is Lifecycle.ACTIVE
    assert agent.expires_at == T0 + 3600
    assert agent.groups == ("triage", "bots")
    assert dict(agent.labels) == {"env": "prod"}
    assert agent.entitlement.tools == ("github__create_issue",)
    assert agent.entitlement.servers == ("docs",)
    assert [i.kind for i in agent.identities] == ["oidc", "spiffe", "static"]
    assert dict(agent.identities[0].claims) == {"repository_id": "123", "ref": "refs/heads/main"}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"id": "Bot"}, "id 'Bot' must be"),
        ({"id": "b"}, "id 'b' must be"),
        ({"id": "9bot"}, "id '9bot' must be"),
        ({"owner": ""}, "owner: is required"),
        ({"owner": None}, "owner: is required"),
        ({"purpose": "  "}, "purpose: is required"),
        ({"identities": []}, "at least one workload identity"),
        ({"identities": [{"kind": "saml", "issuer": "x", "subject": "y"}]}, "kind must be one of oidc, spiffe, static"),
        ({"identities": [oidc(), oidc()]}, "identities[1]: this identity is listed twice"),
        ({"identities": [{"kind": "spiffe", "issuer": "spiffe://example.org", "subject": "spiffe://other.org/a"}]},
         "identities[0].subject: a spiffe subject must be a SPIFFE ID under spiffe://example.org/"),
        ({"identities": [{"kind": "spiffe", "issuer": "spiffe://example.org", "subject": "spiffe://example.org/"}]},
         "a spiffe subject must be"),
        ({"identities": [{"kind": "spiffe", "issuer": "https://example.org", "subject": "spiffe://example.org/a"}]},
         "a spiffe issuer must be spiffe://<trust domain>"),
        ({"identities": [{"kind": "static", "issuer": "narrowgate", "subject": "someone-else"}]},
         "static identity's subject must be the agent id 'bot-a'"),
        ({"identities": [oidc(claims={"ref": ["a"]})]}, "a claim pin must map a claim name to a string or integer"),
        ({"identities": [{**oidc(), "audience": "x"}]}, "unknown field 'audience'"),
        ({"expires_at": T0 - 1}, "expires_at: is in the past"),
        ({"expires_at": "next tuesday"}, "expires_at: must be epoch seconds or an ISO-8601 time"),
        ({"state": "suspended"}, "initial state must be pending or active"),
        ({"entitlement": {"tools": "github__create_issue"}}, "entitlement.tools: must be a list of strings"),
        ({"entitlement": {"tool": []}}, "unknown field 'tool'"),
        ({"labels": {"env": 1}}, "label names and values must be strings"),
        ({"colour": "blue"}, "unknown field 'colour'"),
    ],
)
async def test_create_refuses_invalid_specs(registry: Registry, overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RegistryError) as caught:
        await registry.create(spec(**overrides), "alice", "new")
    assert fragment in caught.value.message
    assert registry.agents() == []


async def test_create_reports_every_problem_at_once(registry: Registry) -> None:
    with pytest.raises(RegistryError) as caught:
        await registry.create({"id": "X", "purpose": "p", "identities": []}, "alice", "new")
    paths = [p.path for p in caught.value.problems]
    assert paths == [("id",), ("owner",), ("identities",)]


async def test_create_refuses_existing_id_even_when_retired(registry: Registry) -> None:
    await agent_in(registry, Lifecycle.RETIRED)
    with pytest.raises(Conflict, match=r"already exists.*never reused"):
        await registry.create(spec(identities=[oidc("another")]), "alice", "again")


@pytest.mark.parametrize(("actor", "reason"), [("", "why"), ("alice", ""), ("  ", "why")])
async def test_changes_need_actor_and_reason(registry: Registry, actor: str, reason: str) -> None:
    with pytest.raises(RegistryError, match="required"):
        await registry.create(spec(), actor, reason)
    assert registry.agents() == []


async def test_unknown_agent_is_not_found(registry: Registry) -> None:
    assert registry.get("nobody") is None  # the request path asks without raising
    with pytest.raises(NotFound, match="no agent 'nobody'"):
        registry.require("nobody")
    with pytest.raises(NotFound):
        await registry.suspend("nobody", "alice", "x")
    with pytest.raises(NotFound):
        await registry.update("nobody", {"owner": "x"}, "alice", "x")
    with pytest.raises(NotFound):
        await registry.events("nobody")


# lifecycle

TRANSITION_TABLE = [
    (Lifecycle.PENDING, "activate", Lifecycle.ACTIVE),
    (Lifecycle.PENDING, "suspend", None),
    (Lifecycle.PENDING, "resume", None),
    (Lifecycle.PENDING, "retire", Lifecycle.RETIRED),
    (Lifecycle.ACTIVE, "activate", None),
    (Lifecycle.ACTIVE, "suspend", Lifecycle.SUSPENDED),
    (Lifecycle.ACTIVE, "resume", None),
    (Lifecycle.ACTIVE, "retire", Lifecycle.RETIRED),
    (Lifecycle.SUSPENDED, "activate", None),
    (Lifecycle.SUSPENDED, "suspend", None),
    (Lifecycle.SUSPENDED, "resume", Lifecycle.ACTIVE),
    (Lifecycle.SUSPENDED, "retire", Lifecycle.RETIRED),
    (Lifecycle.RETIRED, "activate", None),
    (Lifecycle.RETIRED, "suspend", None),
    (Lifecycle.RETIRED, "resume", None),
    (Lifecycle.RETIRED, "retire", None),
]


@pytest.mark.parametrize(("start", "verb", "end"), TRANSITION_TABLE)
async def test_lifecycle_transitions(
    registry: Registry, store: Store, clock: FakeClock, start: Lifecycle, verb: str, end: Lifecycle | None
) -> None:
    before = await agent_in(registry, start)
    events_before = await registry.events("bot-a")
    clock.now += 60
    action = getattr(registry, verb)
    if end is None:
        with pytest.raises(Conflict, match=f"cannot {verb} an? {start.value} agent"):
            await action("bot-a", "bob", "because")
        assert registry.get("bot-a") == before
        assert await store.get_agent("bot-a") == before
        assert await registry.events("bot-a") == events_before
        return
    after = await action("bot-a", "bob", "because")
    assert after.state is end
    assert after.changed_at == T0 + 60
    assert registry.get("bot-a") == after == await store.get_agent("bot-a")
    assert (await registry.events("bot-a"))[-1] == LifecycleEvent(
        "bot-a", start, end, "bob", "because", T0 + 60, action=verb
    )


async def test_retired_is_final_with_a_clear_message(registry: Registry) -> None:
    await agent_in(registry, Lifecycle.RETIRED)
    with pytest.raises(Conflict) as caught:
        await registry.resume("bot-a", "bob", "please")
    assert caught.value.message.startswith("cannot resume a retired agent")
    assert "final" in caught.value.message
    with pytest.raises(Conflict, match=r"retired.*cannot be updated"):
        await registry.update("bot-a", {"owner": "team-b"}, "bob", "new owner")
    assert registry.require("bot-a").owner == "team-a"


async def test_wrong_verb_gets_a_hint(registry: Registry) -> None:
    await agent_in(registry, Lifecycle.SUSPENDED)
    with pytest.raises(Conflict, match="use resume"):
        await registry.activate("bot-a", "bob", "x")


async def test_events_record_who_when_why_in_order(registry: Registry, clock: FakeClock) -> None:
    steps = [("create", None), ("activate", "carol"), ("update", "dave"), ("suspend", "erin"),
             ("resume", "frank"), ("retire", "grace")]
    await registry.create(spec(), "alice", "step create")
    for verb, actor in steps[1:]:
        clock.now += 10
        if verb == "update":
            await registry.update("bot-a", {"purpose": "triage and label"}, actor, f"step {verb}")
        else:
            await getattr(registry, verb)("bot-a", actor, f"step {verb}")
    events = await registry.events("bot-a")
    assert [(e.action, e.actor, e.reason, e.at) for e in events] == [
        (verb, actor or "alice", f"step {verb}", T0 + 10 * n) for n, (verb, actor) in enumerate(steps)
    ]
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, Lifecycle.PENDING),
        (Lifecycle.PENDING, Lifecycle.ACTIVE),
        (Lifecycle.ACTIVE, Lifecycle.ACTIVE),
        (Lifecycle.ACTIVE, Lifecycle.SUSPENDED),
        (Lifecycle.SUSPENDED, Lifecycle.ACTIVE),
        (Lifecycle.ACTIVE, Lifecycle.RETIRED),
    ]
    assert events[2].fields == ("purpose",)


# expiry


async def test_expired_agent_is_treated_as_retired(registry: Registry, clock: FakeClock) -> None:
    await registry.create(spec(state="active", expires_at=T0 + 100), "alice", "short-lived")
    assert registry.resolve(*claims_for("bot-a"), {}).id == "bot-a"
    clock.now = T0 + 100
    with pytest.raises(IdentityRefused, match=r"agent 'bot-a' is retired .expired at") as caught:
        registry.resolve(*claims_for("bot-a"), {})
    assert caught.value.agent_id == "bot-a"
    with pytest.raises(Conflict, match=r"cannot suspend agent 'bot-a': it is retired .expired"):
        await registry.suspend("bot-a", "bob", "x")
    with pytest.raises(Conflict, match="retired"):
        await registry.update("bot-a", {"expires_at": T0 + 10_000}, "bob", "extend")
    retired = await registry.retire("bot-a", "bob", "tidy up")  # makes the record say what resolve does
    assert retired.state is Lifecycle.RETIRED
    assert (await registry.events("bot-a"))[-1].from_state is Lifecycle.ACTIVE


# resolve


async def test_resolve_matches_claim_pins(registry: Registry) -> None:
    pins = {"repository_id": 123, "workflow_ref": "acme/app/.github/workflows/triage.yml@refs/heads/main"}
    await registry.create(spec(state="active", identities=[oidc("repo:acme/app", pins)]), "alice", "new")
    token_claims = {"repository_id": 123, "workflow_ref": pins["workflow_ref"], "aud": "narrowgate"}
    assert registry.resolve("oidc", GITHUB, "repo:acme/app", token_claims).id == "bot-a"
    assert registry.resolve("oidc", GITHUB, "repo:acme/app", {**token_claims, "repository_id": "123"}).id == "bot-a"


@pytest.mark.parametrize(
    "claims",
    [
        {"repository_id": 124, "ref": "refs/heads/main"},  # mismatch
        {"repository_id": "0123", "ref": "refs/heads/main"},  # exact string compare, no numeric coercion
        {"ref": "refs/heads/main"},  # missing claim
        {},
    ],
)
async def test_resolve_refuses_pin_mismatch(registry: Registry, claims: dict[str, Any]) -> None:
    pins = {"repository_id": 123, "ref": "refs/heads/main"}
    await registry.create(spec(state="active", identities=[oidc("repo:acme/app", pins)]), "alice", "new")
    with pytest.raises(IdentityRefused, match="no agent is bound to this identity") as caught:
        registry.resolve("oidc", GITHUB, "repo:acme/app", claims)
    assert caught.value.agent_id is None


@pytest.mark.parametrize(
    ("kind", "issuer", "subject"),
    [("oidc", GITHUB, "repo:acme/other"), ("oidc", "https://evil.example", "repo:acme/bot-a:ref:refs/heads/main"),
     ("spiffe", GITHUB, "repo:acme/bot-a:ref:refs/heads/main")],
)
async def test_resolve_refuses_unbound_identity(registry: Registry, kind: str, issuer: str, subject: str) -> None:
    await agent_in(registry, Lifecycle.ACTIVE)
    with pytest.raises(IdentityRefused, match="no agent is bound to this identity"):
        registry.resolve(kind, issuer, subject, {})


@pytest.mark.parametrize("state", [Lifecycle.PENDING, Lifecycle.SUSPENDED, Lifecycle.RETIRED])
async def test_resolve_refuses_non_active_agents(registry: Registry, state: Lifecycle) -> None:
    await agent_in(registry, state)
    with pytest.raises(IdentityRefused) as caught:
        registry.resolve(*claims_for("bot-a"), {})
    assert caught.value.reason == f"agent 'bot-a' is {state.value}"
    assert caught.value.agent_id == "bot-a"


async def test_suspension_takes_effect_on_the_next_resolve(registry: Registry) -> None:
    await agent_in(registry, Lifecycle.ACTIVE)
    assert registry.resolve(*claims_for("bot-a"), {}).state is Lifecycle.ACTIVE
    await registry.suspend("bot-a", "bob", "incident 42")
    with pytest.raises(IdentityRefused, match="suspended"):
        registry.resolve(*claims_for("bot-a"), {})
    await registry.resume("bot-a", "bob", "resolved")
    assert registry.resolve(*claims_for("bot-a"), {}).id == "bot-a"


# identity bindings


@pytest.mark.parametrize(
    ("pins_a", "pins_b"),
    [({}, {}), ({"ref": "main"}, {"ref": "main"}), ({}, {"ref": "main"}), ({"ref": "main"}, {"env": "prod"})],
)
async def test_overlapping_bindings_are_refused(
    registry: Registry, pins_a: dict[str, str], pins_b: dict[str, str]
) -> None:
    await registry.create(spec("bot-a", identities=[oidc("repo:acme/app", pins_a)]), "alice", "new")
    with pytest.raises(Conflict, match="already bound to agent 'bot-a'") as caught:
        await registry.create(spec("bot-b", identities=[oidc("repo:acme/app", pins_b)]), "alice", "new")
    assert caught.value.problems[0].path == ("identities", 0)
    assert registry.get("bot-b") is None


async def test_disjoint_pins_may_share_a_subject(registry: Registry) -> None:
    await registry.create(spec("bot-a", state="active", identities=[oidc("repo:acme/app", {"env": "prod"})]), "a", "r")
    await registry.create(spec("bot-b", state="active", identities=[oidc("repo:acme/app", {"env": "dev"})]), "a", "r")
    assert registry.resolve("oidc", GITHUB, "repo:acme/app", {"env": "prod"}).id == "bot-a"
    assert registry.resolve("oidc", GITHUB, "repo:acme/app", {"env": "dev"}).id == "bot-b"


async def test_update_refuses_an_identity_bound_elsewhere(registry: Registry) -> None:
    await agent_in(registry, Lifecycle.ACTIVE, "bot-a")
    before = await agent_in(registry, Lifecycle.ACTIVE, "bot-b")
    taken = oidc("repo:acme/bot-a:ref:refs/heads/main")
    with pytest.raises(Conflict, match="already bound to agent 'bot-a'"):
        await registry.update("bot-b", {"identities": [taken]}, "alice", "steal")
    assert registry.get("bot-b") == before
    assert registry.resolve(*claims_for("bot-a"), {}).id == "bot-a"


async def test_a_retired_agents_identity_can_be_bound_again(registry: Registry) -> None:
    await agent_in(registry, Lifecycle.RETIRED, "bot-old")
    await registry.create(spec("bot-new", state="active", identities=[oidc("repo:acme/bot-old:ref:refs/heads/main")]),
                          "alice", "replacement")
    assert registry.resolve(*claims_for("bot-old"), {}).id == "bot-new"


async def test_concurrent_creates_with_one_identity_admit_one(registry: Registry, store: Store) -> None:
    specs = [spec(f"bot-{n}", identities=[oidc("repo:acme/shared")]) for n in range(5)]
    results = await asyncio.gather(*(registry.create(s, "alice", "race") for s in specs), return_exceptions=True)
    assert sum(isinstance(r, Agent) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 4
    assert len(await store.list_agents()) == 1


# update


async def test_update_changes_attributes_and_index(registry: Registry, store: Store, clock: FakeClock) -> None:
    await agent_in(registry, Lifecycle.ACTIVE)
    clock.now += 5
    updated = await registry.update(
        "bot-a",
        {"owner": "team-b", "labels": {"tier": "1"}, "identities": [oidc("repo:acme/renamed")], "expires_at": None},
        "bob",
        "handover",
    )
    assert (updated.owner, dict(updated.labels), updated.changed_at) == ("team-b", {"tier": "1"}, T0 + 5)
    assert updated.purpose == "triage issues" and updated.state is Lifecycle.ACTIVE  # untouched
    assert await store.get_agent("bot-a") == updated
    assert registry.resolve("oidc", GITHUB, "repo:acme/renamed", {}).id == "bot-a"
    with pytest.raises(IdentityRefused, match="no agent is bound"):
        registry.resolve(*claims_for("bot-a"), {})
    last = (await registry.events("bot-a"))[-1]
    assert (last.action, last.actor, last.reason, last.fields) == ("update", "bob", "handover",
                                                                   ("owner", "identities", "labels"))


async def test_update_that_changes_nothing_records_nothing(registry: Registry, clock: FakeClock) -> None:
    before = await agent_in(registry, Lifecycle.ACTIVE)
    clock.now += 5
    assert await registry.update("bot-a", {"owner": "team-a"}, "bob", "noop") == before
    assert len(await registry.events("bot-a")) == 1


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"state": "active"}, "state cannot be changed by an update; use activate"),
        ({"id": "bot-z"}, "id cannot be changed"),
        ({"owner": ""}, "owner: is required"),
        ({"identities": []}, "at least one workload identity"),
        ({"expires_at": T0 - 1}, "is in the past"),
        ({"nickname": "x"}, "unknown field 'nickname'"),
    ],
)
async def test_update_refuses_invalid_changes(registry: Registry, changes: dict[str, Any], fragment: str) -> None:
    before = await agent_in(registry, Lifecycle.ACTIVE)
    with pytest.raises(RegistryError) as caught:
        await registry.update("bot-a", changes, "bob", "x")
    assert fragment in caught.value.message
    assert registry.get("bot-a") == before


# memory follows the store, never leads it


class FailingStore:
    """Delegates to a real store but fails every save, like a full disk."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    async def save_agent(self, agent: Agent, event: LifecycleEvent | None = None) -> None:
        raise StoreError("disk full")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_failed_write_leaves_memory_unchanged(store: Store, clock: FakeClock) -> None:
    registry = await Registry.open(store, clock=clock)
    await agent_in(registry, Lifecycle.ACTIVE)
    failing = await Registry.open(FailingStore(store), clock=clock)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        await failing.suspend("bot-a", "bob", "x")
    assert failing.resolve(*claims_for("bot-a"), {}).state is Lifecycle.ACTIVE
    with pytest.raises(StoreError):
        await failing.create(spec("bot-b"), "bob", "x")
    assert failing.get("bot-b") is None


async def test_cancelled_caller_does_not_split_disk_and_memory(store: Store, clock: FakeClock) -> None:
    registry = await Registry.open(store, clock=clock)
    await agent_in(registry, Lifecycle.ACTIVE)
    task = asyncio.ensure_future(registry.suspend("bot-a", "bob", "incident"))
    await asyncio.sleep(0)  # let it start the write
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):  # the shielded mutation finishes on its own
        if registry.require("bot-a").state is Lifecycle.SUSPENDED:
            break
        await asyncio.sleep(0.01)
    assert registry.require("bot-a").state is Lifecycle.SUSPENDED
    assert (await store.get_agent("bot-a")).state is Lifecycle.SUSPENDED  # type: ignore[union-attr]


# agents file

AGENTS_FILE = """\
agents:
  - id: triage-bot
    display_name: Triage bot
    owner: team-a
    purpose: triage issues
    identities:
      - kind: oidc
        issuer: https://token.actions.githubusercontent.com
        subject: repo:acme/app:ref:refs/heads/main
        claims: {repository_id: 123}
    groups: [triage]
    labels: {env: prod}
    entitlement: {tools: [github__create_issue], servers: [docs]}
  - id: deploy-bot
    owner: team-b
    purpose: deploys
    state: pending
    expires_at: 2030-01-01T00:00:00Z
    identities:
      - {kind: spiffe, issuer: "spiffe://example.org", subject: "spiffe://example.org/ns/ci/sa/deploy"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agents.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


async def test_agents_file_creates_agents(registry: Registry, tmp_path: Path) -> None:
    report = await registry.load_agents_file(write(tmp_path, AGENTS_FILE))
    assert report.created == ("triage-bot", "deploy-bot")
    triage, deploy = registry.require("triage-bot"), registry.require("deploy-bot")
    assert triage.state is Lifecycle.ACTIVE  # default for declared agents
    assert deploy.state is Lifecycle.PENDING  # as the file says
    assert deploy.expires_at == 1_893_456_000.0
    assert triage.entitlement.servers == ("docs",)
    assert registry.resolve("oidc", GITHUB, "repo:acme/app:ref:refs/heads/main", {"repository_id": 123}) == triage
    event = (await registry.events("triage-bot"))[0]
    assert (event.actor, event.action, event.to_state) == ("agents-file", "create", Lifecycle.ACTIVE)
    assert str(tmp_path / "agents.yaml") in event.reason


async def test_agents_file_updates_attributes_but_never_lifecycle(
    registry: Registry, store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    path = write(tmp_path, AGENTS_FILE)
    await registry.load_agents_file(path)
    await registry.suspend("triage-bot", "bob", "incident")
    clock.now += 10
    path.write_text(AGENTS_FILE.replace("owner: team-a", "owner: team-c").replace("state: pending", "state: active"))

    report = await registry.load_agents_file(path)
    assert report.updated == ("triage-bot",)
    assert report.unchanged == ("deploy-bot",)
    triage = registry.require("triage-bot")
    assert (triage.owner, triage.state, triage.changed_at) == ("team-c", Lifecycle.SUSPENDED, T0 + 10)
    assert registry.require("deploy-bot").state is Lifecycle.PENDING  # the file's state is only for creation
    assert (await Registry.open(store, clock=clock)).get("triage-bot") == triage
    last = (await registry.events("triage-bot"))[-1]
    assert (last.action, last.fields, last.from_state, last.to_state) == (
        "update", ("owner",), Lifecycle.SUSPENDED, Lifecycle.SUSPENDED)


async def test_agents_file_drops_attributes_removed_from_it(registry: Registry, tmp_path: Path) -> None:
    path = write(tmp_path, AGENTS_FILE)
    await registry.load_agents_file(path)
    path.write_text(AGENTS_FILE.replace("    labels: {env: prod}\n", ""))
    await registry.load_agents_file(path)
    assert dict(registry.require("triage-bot").labels) == {}


async def test_agents_file_reload_without_changes_records_nothing(registry: Registry, tmp_path: Path) -> None:
    path = write(tmp_path, AGENTS_FILE)
    await registry.load_agents_file(path)
    report = await registry.load_agents_file(path)
    assert report.created == report.updated == ()
    assert report.unchanged == ("triage-bot", "deploy-bot")
    assert len(await registry.events("triage-bot")) == 1


async def test_agents_file_never_resurrects_retired_agents(registry: Registry, tmp_path: Path) -> None:
    path = write(tmp_path, AGENTS_FILE)
    await registry.load_agents_file(path)
    retired = await registry.retire("triage-bot", "bob", "replaced")
    path.write_text(AGENTS_FILE.replace("owner: team-a", "owner: team-c"))
    report = await registry.load_agents_file(path)
    assert report.skipped_retired == ("triage-bot",)
    assert registry.get("triage-bot") == retired
    with pytest.raises(IdentityRefused, match="retired"):
        registry.resolve("oidc", GITHUB, "repo:acme/app:ref:refs/heads/main", {"repository_id": 123})


async def test_agents_file_skips_agents_expired_in_the_store(
    registry: Registry, tmp_path: Path, clock: FakeClock
) -> None:
    path = write(tmp_path, AGENTS_FILE)
    await registry.load_agents_file(path)
    clock.now = 1_893_456_000.0 + 1  # deploy-bot's expiry has passed; its old expiry stays in the file
    report = await registry.load_agents_file(path)
    assert report.skipped_retired == ("deploy-bot",)


async def test_agents_file_errors_name_file_and_line_and_apply_nothing(registry: Registry, tmp_path: Path) -> None:
    text = AGENTS_FILE.replace("    owner: team-b\n", "").replace(
        "subject: repo:acme/app:ref:refs/heads/main", "subject: ''"
    ) + "  - id: Bad_Id\n    owner: x\n    purpose: y\n    identities: [{kind: oidc, issuer: a, subject: b}]\n"
    path = write(tmp_path, text)
    with pytest.raises(AgentsFileError) as caught:
        await registry.load_agents_file(path)
    found = [(p.file, p.line) for p in caught.value.file_problems]
    assert found == [
        (str(path), line_of(text, "subject: ''")),
        (str(path), line_of(text, "- id: deploy-bot")),  # a missing key points at its entry
        (str(path), line_of(text, "Bad_Id")),
    ]
    messages = str(caught.value)
    assert "agents[0].identities[0].subject: is required" in messages
    assert "agents[1].owner: is required" in messages
    assert "id 'Bad_Id' must be" in messages
    assert registry.agents() == []  # all or nothing


async def test_agents_file_refuses_duplicates_and_conflicting_bindings(registry: Registry, tmp_path: Path) -> None:
    text = AGENTS_FILE + """\
  - id: triage-copy
    owner: team-a
    purpose: copy
    identities:
      - kind: oidc
        issuer: https://token.actions.githubusercontent.com
        subject: repo:acme/app:ref:refs/heads/main
  - id: deploy-bot
    owner: team-b
    purpose: twice
    identities: [{kind: static, issuer: narrowgate, subject: deploy-bot}]
"""
    path = write(tmp_path, text)
    with pytest.raises(AgentsFileError) as caught:
        await registry.load_agents_file(path)
    problems = caught.value.file_problems
    lines = text.splitlines()
    copy_identity = lines.index("  - id: triage-copy") + 5  # its `- kind: oidc` item
    second_deploy = len(lines) - 3
    # Both sides of a clash are reported: the file cannot say which entry is the mistake.
    assert [p.line for p in problems] == [line_of(text, "- kind: oidc"), copy_identity, second_deploy]
    assert "agent 'triage-bot': identities[0]: oidc identity" in problems[0].message
    assert "already bound to agent 'triage-copy'" in problems[0].message
    assert "agent 'triage-copy': identities[0]: oidc identity" in problems[1].message
    assert "already bound to agent 'triage-bot'" in problems[1].message
    assert f"declared twice (first at line {line_of(text, '- id: deploy-bot')})" in problems[2].message
    assert registry.agents() == []


async def test_agents_file_conflict_with_an_existing_agent(registry: Registry, tmp_path: Path) -> None:
    await registry.create(spec("api-bot", identities=[oidc("repo:acme/app:ref:refs/heads/main")]), "alice", "api")
    with pytest.raises(AgentsFileError, match="already bound to agent 'api-bot'"):
        await registry.load_agents_file(write(tmp_path, AGENTS_FILE))
    assert [a.id for a in registry.agents()] == ["api-bot"]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("agents:\n  - id: a-b\n    owner: [unclosed\n", 4, "invalid YAML"),
        ("agent:\n  - id: x\n", 2, "unknown key 'agent'"),  # the line of the key's value
        ("agents: {id: x}\n", 1, "must be a mapping with an `agents` list"),
        ("agents:\n  - just-a-string\n", 2, "an agent must be a mapping"),
    ],
)
async def test_agents_file_structure_errors(
    registry: Registry, tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    with pytest.raises(AgentsFileError) as caught:
        await registry.load_agents_file(write(tmp_path, text))
    assert caught.value.file_problems[0].line == line
    assert fragment in caught.value.file_problems[0].message


async def test_agents_file_past_expiry_for_a_new_agent(registry: Registry, tmp_path: Path) -> None:
    text = AGENTS_FILE.replace("2030-01-01T00:00:00Z", "2020-01-01T00:00:00Z")
    with pytest.raises(AgentsFileError) as caught:
        await registry.load_agents_file(write(tmp_path, text))
    assert caught.value.file_problems[0].line == line_of(text, "expires_at")
    assert "in the past" in caught.value.file_problems[0].message


async def test_missing_and_empty_agents_files(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(AgentsFileError, match="cannot read agents file"):
        await registry.load_agents_file(tmp_path / "nope.yaml")
    report = await registry.load_agents_file(write(tmp_path, ""))
    assert report.created == report.updated == report.unchanged == report.skipped_retired == ()


async def test_bound_agent_id_ignores_pins_and_state(registry: Registry) -> None:
    await registry.create(spec("bot-a", identities=[oidc("repo:acme/app", {"env": "prod"})]), "alice", "new")
    assert registry.bound_agent_id("oidc", GITHUB, "repo:acme/app") == "bot-a"  # pending, pins unchecked
    await registry.retire("bot-a", "alice", "gone")
    assert registry.bound_agent_id("oidc", GITHUB, "repo:acme/app") == "bot-a"  # still an agent's credential
    await registry.create(spec("bot-b", identities=[oidc("repo:acme/app")]), "alice", "successor")
    assert registry.bound_agent_id("oidc", GITHUB, "repo:acme/app") == "bot-b"  # the live one first
    assert registry.bound_agent_id("oidc", GITHUB, "repo:acme/other") is None


async def test_reload_picks_up_what_another_writer_stored(store: Store, clock: FakeClock) -> None:
    mine = Registry(store, [], clock)  # how the app builds it before the store is migrated
    other = await Registry.open(store, clock=clock)
    await agent_in(other, Lifecycle.ACTIVE)
    assert mine.get("bot-a") is None
    await mine.reload()
    assert mine.resolve(*claims_for("bot-a"), {}).id == "bot-a"
    await other.suspend("bot-a", "bob", "incident")
    await mine.reload()
    with pytest.raises(IdentityRefused, match="suspended"):
        mine.resolve(*claims_for("bot-a"), {})


def test_pins_reach_nested_claims_by_slash_path() -> None:
    from types import MappingProxyType

    from gateway.registry.model import WorkloadIdentity
    from gateway.registry.service import pins_match

    identity = WorkloadIdentity(
        "oidc", "https://k8s.example", "system:serviceaccount:payments:reconciler",
        MappingProxyType({"kubernetes.io/namespace": "payments", "kubernetes.io/serviceaccount/name": "reconciler"}),
    )
    real_token_claims = {"kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "reconciler"}}}
    assert pins_match(identity, real_token_claims)
    other_namespace = {"kubernetes.io": {"namespace": "billing", "serviceaccount": {"name": "reconciler"}}}
    assert not pins_match(identity, other_namespace)
    assert not pins_match(identity, {"kubernetes.io": {"namespace": {"nested": "payments"}}})
    assert not pins_match(identity, {})
