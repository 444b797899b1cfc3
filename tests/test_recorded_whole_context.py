"""The decision recorder's document holds the whole context serialized from its parts (PolicyEngine.recorded_json,
ContextBuilder.whole_json), not built as a dict first: the bytes must be those orjson gives of the context
recorded_input builds, for every kind of request facts (task or none, person or none, chain or none, approved or
not, with and without a tool input), so what replay reads is unchanged."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.catalog.model import Catalog
from gateway.identity.user import UserIdentity
from gateway.policy.context import ContextBuilder, RequestFacts
from gateway.policy.engine import CedarRequest, PolicyEngine
from gateway.policy.hours import WorkingHours
from gateway.policy.recorded import InputCipher
from gateway.policy.recorder import DecisionRecorder, Noted
from gateway.tasks.gate import chain_facts
from tests.support.processes import cedar_copy
from tests.test_policy_engine import WEDNESDAY, agent_principal, engine_for, write_catalog

WHO = agent_principal(servers=("files", "payments"), groups=("eng",))
TASK = {"id": "t-1", "purpose": "Cafe\u0301 report", "tools": ["payments__pay", "files__read_file"],
        **chain_facts([("root-agent", "o@example.com"), ("a1", "p@example.com")])}
CHAIN = {"data_classes": ["financial"], "sensitive_read": True,
         "tools": ["payments__pay", "files__read_file", "payments__pay", "files__read_file"],
         "previous_tool": "files__read_file", "calls_last_minute": 4, "writes_last_minute": 2,
         "denials_last_minute": 0, "agent": {"data_classes": [], "sensitive_read": False, "calls_last_minute": 9,
                                             "writes_last_minute": 1, "denials_last_minute": 3}}
PERSON = UserIdentity("alice", "https://login.example.com", "a@example.com", True, ("ops", "eng", "ops"),
                      "client-1", 1_700_000_000, "mfa", ("pwd", "otp"))
FACTS = [
    RequestFacts(now=WEDNESDAY, era="2025-11-25", client="bench"),
    RequestFacts(now=WEDNESDAY + 0.5, era="2026-07-28", client="Cli\u0065\u0301nt", working_hours=False,
                 task=TASK, chain=CHAIN, user=PERSON),
    RequestFacts(now=WEDNESDAY + 7200, era="2025-11-25", chain={}),  # empty signals: no chain, as build() has it
    RequestFacts(now=WEDNESDAY, era="2025-11-25", chain={"calls_last_minute": 1}),  # signals without tools
]
CALLS: list[tuple[str, dict[str, Any] | None]] = [
    ("payments__pay", {"amount": 12, "payee": {"name": "ACME", "region": "de"}, "memo": "x \"y\" \u00e9"}),
    ("files__read_file", {"path": "/data/public/a.txt"}),
    ("payments__get_balance", None),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> tuple[PolicyEngine, Catalog]:
    tmp = tmp_path_factory.mktemp("whole-context")
    catalog = write_catalog(tmp / "catalog")
    return engine_for(cedar_copy(tmp / "cedar"), catalog), catalog


def requests(engine: PolicyEngine, catalog: Catalog) -> list[CedarRequest]:
    seen: list[CedarRequest] = []
    for facts in FACTS:
        for name, arguments in CALLS:
            for approved in (False, True):
                engine.decide_tool(WHO, catalog.tools[name], arguments, facts, approved, seen=seen)
        engine.decide_resource(WHO, "files", "file:///data/public/../a.txt", facts, seen=seen)
        engine.decide_prompt(WHO, "payments", "summary", facts, seen=seen)
    return seen


def test_the_serialized_whole_context_is_the_built_one_byte_for_byte(engine: tuple[PolicyEngine, Catalog]) -> None:
    policies, catalog = engine
    seen = requests(policies, catalog)
    assert len(seen) == len(FACTS) * (len(CALLS) * 2 + 2)
    for request in seen:
        built = policies.recorded_input(request)
        serialized = policies.recorded_json(request)
        assert orjson.dumps(serialized) == orjson.dumps(built)
        assert orjson.loads(orjson.dumps(serialized["context"])) == built["context"]
        assert set(built["context"]) >= {"request", "approval", "task", "chain", "user"}  # the whole context


def test_the_recorder_seals_what_recorded_input_holds_and_replay_decides_it_alike(
        engine: tuple[PolicyEngine, Catalog]) -> None:
    policies, catalog = engine
    key = bytes(range(32))
    recorder = DecisionRecorder(None, policies, 3600.0)  # type: ignore[arg-type]  # the store is not used here
    recorder.cipher = InputCipher(key)
    seen = requests(policies, catalog)
    live = [policies.redecide(policies.recorded_input(request)) for request in seen]
    batch = [Noted(WHO, decision, request.kind, request.target, WEDNESDAY, request, ())
             for decision, request in zip(live, seen, strict=True)]
    rows = recorder._rows(batch)
    for request, decision, row in zip(seen, live, rows, strict=True):
        opened = recorder.cipher.open(row.decision_id, row.payload)
        built = policies.recorded_input(request)
        assert {name: opened[name] for name in built} == built
        again = policies.redecide(opened)
        assert (again.outcome, again.policy_ids, again.reason) == (decision.outcome, decision.policy_ids,
                                                                   decision.reason)


def test_serializing_an_earlier_calls_context_leaves_the_live_request_facts_kept() -> None:
    """The recorder serializes contexts of calls made earlier (another second) on the loop, between live calls:
    that must not push the live calls' shared request facts out, nor give it other bytes than they have."""
    builder = ContextBuilder(WorkingHours())
    live, earlier = RequestFacts(now=WEDNESDAY + 3, era="2025-11-25", client="bench"), FACTS[0]
    shared = builder.request_facts(live)
    whole = builder.whole_json(earlier, False)
    assert builder.request_facts(live) is shared
    assert orjson.loads(whole)["request"] == builder.request_facts(earlier) == {**shared, "time": int(WEDNESDAY)}
