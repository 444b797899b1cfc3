"""What the decide stage does once instead of on every call gives what doing it every time gives.

A Decision is made by gateway.frozen's maker (a frozen dataclass without its per-field setattr calls), and Cedar's
answer text, read once, is found again by that text (gateway.policy.authorize.read_answer): Cedar still answers
every request, and what is read from its answer is what reading it afresh gives.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import cedarpy
import orjson
import pytest

from gateway.catalog import Catalog
from gateway.frozen import maker
from gateway.identity.authenticator import _new_principal
from gateway.identity.principal import Principal
from gateway.policy import RequestFacts, authorize
from gateway.policy.authorize import ANSWER_CHARS_KEPT, ANSWERS_KEPT, read_answer
from gateway.policy.engine import CedarRequest, Decision
from tests.test_policy_engine import WEDNESDAY, agent_principal, catalog, cedar_dir, engine_for

__all__ = ["catalog", "cedar_dir"]  # fixtures

FIELDS = ("step_up", "dec_1", ("p1", "p2"), "approval required", ("an error",), "v1", "pending", {"a": [1, 2]},
          "ops", 30.0, "rules", "digest", None)


def test_a_decision_made_quickly_is_a_decision() -> None:
    made = maker(Decision)(*FIELDS)
    plain = Decision(*FIELDS)
    assert type(made) is Decision and made == plain and repr(made) == repr(plain)
    assert [getattr(made, f.name) for f in dataclasses.fields(Decision)] == list(FIELDS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.outcome = "allow"  # type: ignore[misc]
    assert dataclasses.replace(made, outcome="deny") == dataclasses.replace(plain, outcome="deny")
    assert hash(maker(Decision)(*FIELDS[:7], None, *FIELDS[8:])) == hash(Decision(*FIELDS[:7], None, *FIELDS[8:]))


def test_only_frozen_slots_dataclasses_set_by_init_are_made_so() -> None:
    @dataclass(slots=True)
    class Settable:
        a: int

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")

    @dataclass(frozen=True, slots=True)
    class Derived:
        a: int
        b: int = dataclasses.field(init=False, default=0)

    @dataclass(frozen=True, slots=True)
    class OwnInit:  # a hand-written __init__ may check what the twin's would skip
        a: int

        def __init__(self, a: int) -> None:
            if a < 0:
                raise ValueError("negative")
            object.__setattr__(self, "a", a)

    @dataclass(frozen=True, slots=True)
    class OwnNew:
        a: int

        def __new__(cls, *args: object) -> OwnNew:
            return object.__new__(cls)

    @dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @dataclass(frozen=True, slots=True)
    class Sub(Base):  # a base's layout: not the twin's
        b: int

    @dataclass(frozen=True, slots=True)
    class KeywordOnly:  # the twin would take b by position, where the class refuses it
        a: int
        b: int = dataclasses.field(default=0, kw_only=True)

    for cls in (Settable, NoSlots, Checked, Derived, OwnInit, OwnNew, Sub, KeywordOnly, int):  # their own constructor
        assert maker(cls) is cls
    for frozen in (Decision, Principal, RequestFacts):  # the twin on this Python, for the three made per call
        assert maker(frozen) is not frozen


def test_a_decision_made_quickly_takes_what_its_constructor_takes() -> None:
    """The same arguments, defaults left out or given by name, give the same Decision."""
    short = FIELDS[:6]
    assert maker(Decision)(*short) == Decision(*short)
    assert maker(Decision)(*short, approvers="finance") == Decision(*short, approvers="finance")
    assert type(maker(Decision)(*short)) is Decision


def _texts(cedar_dir: Path, catalog: Catalog) -> list[str]:
    """Cedar's own answer texts for an allow, a deny and a request it cannot read (no metrics in that one)."""
    engine = engine_for(cedar_dir, catalog)
    seen: list[CedarRequest] = []
    facts = RequestFacts(now=WEDNESDAY, era="2026-07-28")
    engine.decide_tool(agent_principal(servers=("files",)), catalog.tools["files__read_file"], {"path": "/a"}, facts,
                       False, seen)
    engine.decide_tool(agent_principal(servers=("files",)), catalog.tools["files__wipe"], {}, facts, False, seen)
    bad = {**seen[0].cedar, "context": orjson.dumps({"x": {"__extn": {"fn": "nope", "arg": "1"}}}).decode()}
    return [text for request, entities in ((seen[0].cedar, seen[0].entities), (seen[1].cedar, seen[1].entities),
                                           (bad, seen[0].entities))
            for text in cedarpy._internal.is_authorized_batch([request], engine.bundle.policies, entities, None,
                                                              False)]


def test_an_answer_read_again_is_what_a_fresh_read_gives(cedar_dir: Path, catalog: Catalog) -> None:
    """Whatever the metrics say (cedarpy's timings differ call to call), the same text up to them is one answer,
    equal to cedarpy's own reading of the whole text; an answer with no metrics is read whole each time."""
    texts = _texts(cedar_dir, catalog)
    assert [",\"metrics\":" in t for t in texts] == [True, True, False]
    for text in texts:
        first = read_answer(text)
        retimed = text.replace('"authz_duration_micros":', '"authz_duration_micros":1')
        assert retimed != text or ",\"metrics\":" not in text  # (cedarpy still names its timing so)
        again = read_answer(retimed)
        whole = cedarpy.AuthzResult(orjson.loads(text))
        assert (again.decision, list(again.diagnostics.reasons), list(again.diagnostics.errors)) == (
            whole.decision, whole.diagnostics.reasons, whole.diagnostics.errors)
        assert (again is first) == (",\"metrics\":" in text)
    assert {read_answer(t).decision for t in texts} == {cedarpy.Decision.Allow, cedarpy.Decision.Deny,
                                                        cedarpy.Decision.NoDecision}


def test_answers_kept_are_bounded_and_unreadable_ones_never_kept() -> None:
    """Error texts can quote the agent's values: at most ANSWERS_KEPT texts are kept, none longer than
    ANSWER_CHARS_KEPT; an answer that cannot be read raises every time it comes."""
    for index in range(ANSWERS_KEPT + 50):
        text = f'{{"decision":"Deny","diagnostics":{{"reason":[],"errors":["e{index}"]}},"metrics":{{}}}}'
        assert read_answer(text).diagnostics.errors == (f"e{index}",)
        assert read_answer(text) is read_answer(text)  # kept (until the table is full and starts afresh)
        assert len(authorize._read) <= ANSWERS_KEPT
    long = '{"decision":"Deny","diagnostics":{"reason":[],"errors":["' + "x" * ANSWER_CHARS_KEPT + '"]},"metrics":{}}'
    assert read_answer(long) is not read_answer(long)
    unknown = '{"decision":"Maybe","diagnostics":{"reason":[],"errors":[]},"metrics":{}}'
    for _ in range(2):
        with pytest.raises(ValueError):
            read_answer(unknown)


def test_a_kept_answer_cannot_be_changed_and_an_odd_one_is_refused() -> None:
    """One Answer serves every call with its text: nothing can turn the next call's Deny into an Allow or add to
    its errors. Diagnostics Cedar never writes (not an object, not lists of texts) are refused, so the engine
    denies, rather than read letter by letter or failing with another error."""
    text = '{"decision":"Deny","diagnostics":{"reason":["policy3"],"errors":["e"]},"metrics":{}}'
    kept = read_answer(text)
    with pytest.raises(AttributeError):
        kept.decision = cedarpy.Decision.Allow  # type: ignore[misc]
    with pytest.raises(AttributeError):
        kept.diagnostics.errors.append("more")  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        kept.extra = 1  # type: ignore[attr-defined]
    again = read_answer(text.replace("{}}", '{"authz_duration_micros":7}}'))
    assert again is kept and again.decision is cedarpy.Decision.Deny and again.diagnostics.errors == ("e",)
    for diagnostics in ('"no"', '{"reason":"policy3","errors":[]}', '{"reason":[],"errors":[1]}',
                        '{"reason":[],"errors":{"a":1}}'):
        odd = '{"decision":"Allow","diagnostics":' + diagnostics + ',"metrics":{}}'
        for _ in range(2):
            with pytest.raises(ValueError):
                read_answer(odd)


def test_a_principal_made_quickly_is_a_principal() -> None:
    """The authenticator makes a JWT workload's or task token's Principal with gateway.frozen's maker."""
    claims = MappingProxyType({"sub": "a1"})
    made = _new_principal("a1", "oidc", claims, None, "task-1", None)
    assert type(made) is Principal and made == Principal("a1", "oidc", claims, None, "task-1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.agent_id = "a2"  # type: ignore[misc]
