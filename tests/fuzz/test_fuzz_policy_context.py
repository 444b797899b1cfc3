"""Fuzzing the Cedar context builder: how arguments are canonicalized, typed from the tool's JSON
Schema (gateway/policy/typing_.py) and serialized for cedarpy (gateway/policy/engine.py).

Properties, with real cedarpy and the shipped policies plus three that read `context.input`:
- any arguments to any tool get a Decision, never an exception; an Allow has no evaluation errors
  and satisfies every forbid that reads the arguments (as canonicalized: what is forwarded);
  arguments that do not fit the tool's type are a deny with the gateway's own reason;
- any tool input schema an upstream may publish gives a Cedar type that the policy set still
  validates against (a reload never fails because of an upstream's schema), and values of that
  type serialize for Cedar or are refused with ArgumentMismatch, nothing else;
- any prompt name or resource URI gets a Decision.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.catalog import Catalog, load_catalog
from gateway.identity.principal import Principal
from gateway.policy import PolicyEngine
from gateway.policy.canonical import CanonicalizationError, canonicalize
from gateway.policy.engine import REASON_BAD_ARGUMENTS
from gateway.policy.typing_ import ArgumentMismatch, CedarType, input_type, to_cedar
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.strategies import JSON_VALUES, ODD_TEXT
from tests.test_policy_engine import REPO_CEDAR, agent_principal, facts

MANIFEST = """
id: fuzz
owner: fuzz@example.com
transport: {url: "http://127.0.0.1:9/mcp"}
tools:
  - {name: pay, risk: write}
  - {name: read, risk: read}
  - {name: free, risk: read}
"""
SCHEMAS: dict[str, Any] = {
    "fuzz__pay": {
        "type": "object",
        "properties": {
            "amount": {"type": "integer"},
            "fee": {"type": "number"},
            "memo": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "payee": {"type": "object", "properties": {"name": {"type": "string"}, "iban": {"type": "string"}},
                      "required": ["name"]},
        },
        "required": ["amount"],
    },
    "fuzz__read": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"],
                   "additionalProperties": False},
}
INPUT_POLICIES = """
@id("fuzz-pay-limit")
@reason("over the limit")
forbid (principal, action == Action::"fuzz__pay", resource) when { context.input.amount > 1000 };

@id("fuzz-fee-approval")
@step_up("hold")
forbid (principal, action == Action::"fuzz__pay", resource)
when { context.input has fee && context.input.fee.greaterThan(decimal("10.5")) };

@id("fuzz-secret-paths")
forbid (principal, action == Action::"fuzz__read", resource) when { context.input.path like "/secret/*" };
"""
LIMIT, FEE_LIMIT = 1000, Decimal("10.5")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[PolicyEngine, Catalog, Principal]:
    root = tmp_path_factory.mktemp("policy-fuzz")
    (root / "catalog").mkdir()
    (root / "catalog" / "fuzz.yaml").write_text(MANIFEST)
    catalog = load_catalog(root / "catalog")
    cedar = root / "cedar"
    shutil.copytree(REPO_CEDAR, cedar, ignore=shutil.ignore_patterns("tests", "README.md"))
    (cedar / "policies" / "90-fuzz.cedar").write_text(INPUT_POLICIES)
    engine = PolicyEngine(cedar, catalog, tool_schemas=SCHEMAS)
    return engine, catalog, agent_principal(servers=("fuzz",))


NUMBERS = st.one_of(st.integers(), st.integers(-5, 2000), st.floats(allow_nan=False, allow_infinity=False),
                    st.decimals(min_value=-100, max_value=100, places=6).map(float))
PATHS = st.one_of(
    ODD_TEXT,
    st.lists(st.sampled_from(["secret", "public", "..", ".", "", "%2e%2e", "x", "Secret", "secret\u0301"]),
             max_size=5).map(lambda parts: "/" + "/".join(parts)),
    st.sampled_from(["/secret/x", "/public/../secret/x", "//secret/x", "/./secret/x", "file:///secret/x",
                     "/secret", "secret/x", "/public/%2e%2e/secret/x"]),
)


@st.composite
def pay_arguments(draw: st.DrawFn) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for key, value in (("amount", NUMBERS), ("fee", NUMBERS), ("memo", st.none() | ODD_TEXT),
                       ("tags", st.lists(ODD_TEXT, max_size=3)),
                       ("payee", st.fixed_dictionaries({"name": ODD_TEXT}, optional={"iban": ODD_TEXT}))):
        if draw(st.integers(0, 4)):
            arguments[key] = draw(value if draw(st.integers(0, 5)) else JSON_VALUES)
    return {**draw(st.dictionaries(ODD_TEXT, JSON_VALUES, max_size=2)), **arguments}


@st.composite
def read_arguments(draw: st.DrawFn) -> dict[str, Any]:
    arguments = {"path": draw(PATHS if draw(st.integers(0, 5)) else JSON_VALUES)}
    if draw(st.integers(0, 5)) == 0:
        arguments[draw(ODD_TEXT)] = draw(JSON_VALUES)
    return arguments


@fuzz_settings(120)
@given(st.one_of(st.tuples(st.just("fuzz__pay"), pay_arguments()), st.tuples(st.just("fuzz__read"), read_arguments()),
                 st.tuples(st.sampled_from(["fuzz__pay", "fuzz__read", "fuzz__free"]),
                           st.one_of(st.none(), st.dictionaries(ODD_TEXT, JSON_VALUES, max_size=4)))))
@example(("fuzz__pay", {"amount": 2**64}))
@example(("fuzz__pay", {"amount": 1000.0, "fee": 10.50001}))
@example(("fuzz__read", {"path": "/public/../secret/x"}))
@example(("fuzz__read", {"path": "http://[::1/secret/x"}))  # not a URL urlsplit can read
def test_any_arguments_get_a_decision_that_respects_the_input_policies(
    world: tuple[PolicyEngine, Catalog, Principal], case: tuple[str, dict[str, Any] | None],
) -> None:
    engine, catalog, who = world
    tool, arguments = case
    decision = engine.decide_tool(who, catalog.tools[tool], arguments, facts())
    assert decision.outcome in ("allow", "deny", "step_up")
    assert (decision.args_digest is None) == (decision.canonical_arguments is None)
    if decision.reason == REASON_BAD_ARGUMENTS:
        assert decision.outcome == "deny" and decision.errors and decision.canonical_arguments is None
    if decision.outcome == "deny":
        return
    assert decision.errors == ()
    judged = decision.canonical_arguments
    assert isinstance(judged, dict)
    if tool == "fuzz__pay":
        assert isinstance(judged["amount"], int) and judged["amount"] <= LIMIT
        over_fee = "fee" in judged and Decimal(repr(judged["fee"])) > FEE_LIMIT
        assert decision.outcome == ("step_up" if over_fee else "allow"), (judged, decision)
    elif tool == "fuzz__read":
        assert isinstance(judged["path"], str) and not judged["path"].startswith("/secret/")
        assert set(judged) == {"path"}  # additionalProperties: false
    # The same input decides the same way (no hidden state in the builder).
    again = engine.decide_tool(who, catalog.tools[tool], arguments, facts())
    assert (again.outcome, again.canonical_arguments, again.args_digest) == (
        decision.outcome, decision.canonical_arguments, decision.args_digest)


# Schemas an upstream may publish -------------------------------------------------------------------

SCHEMA_KEYS = st.one_of(st.text(max_size=6), ODD_TEXT, st.sampled_from(["type", "properties", "items", "required"]))


def json_schemas() -> st.SearchStrategy[Any]:
    leaf = st.one_of(
        st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "boolean", "number", "null", "object",
                                                        "array", "bogus"])}),
        st.fixed_dictionaries({"type": st.lists(st.sampled_from(["string", "integer", "null", "number"]),
                                                max_size=3)}),
        st.fixed_dictionaries({"enum": st.lists(st.one_of(st.text(max_size=4), JSON_VALUES), max_size=3)}),
        JSON_VALUES,
    )

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.fixed_dictionaries({"type": st.just("object"),
                                   "properties": st.dictionaries(SCHEMA_KEYS, children, max_size=4)},
                                  optional={"required": st.one_of(st.lists(SCHEMA_KEYS, max_size=3), JSON_VALUES),
                                            "additionalProperties": st.booleans()}),
            st.fixed_dictionaries({"type": st.just("array"), "items": children}),
            st.fixed_dictionaries({"anyOf": st.lists(children, max_size=2)}),
        )
    return st.recursive(leaf, extend, max_leaves=12)


def value_of(typed: CedarType, draw: st.DrawFn) -> Any:
    """A value that fits `typed` (mostly), so to_cedar is exercised past its first refusal."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    if typed.kind == "String":
        return draw(ODD_TEXT)
    if typed.kind == "Long":
        return draw(st.integers(-(2**64), 2**64))
    if typed.kind == "Bool":
        return draw(st.booleans())
    if typed.kind == "decimal":
        return draw(NUMBERS)
    if typed.kind == "Set":
        assert typed.element is not None
        return [value_of(typed.element, draw) for _ in range(draw(st.integers(0, 2)))]
    return {name: value_of(sub, draw) for name, sub, required in typed.attrs if required or draw(st.booleans())}


@fuzz_settings(25, share=0.02)
@given(st.one_of(json_schemas(), st.fixed_dictionaries({"type": st.just("object"),
                                                        "properties": st.dictionaries(SCHEMA_KEYS, json_schemas(),
                                                                                      min_size=1, max_size=5)})),
       st.data())
def test_any_published_schema_keeps_the_policies_valid_and_types_its_values(
    world: tuple[PolicyEngine, Catalog, Principal], schema: Any, data: st.DataObject,
) -> None:
    engine, catalog, who = world
    typed = input_type(schema if isinstance(schema, dict) else None)
    assert typed.kind == "Record"
    drawn = value_of(typed, data.draw)
    arguments = drawn if isinstance(drawn, dict) else None
    try:
        serialized = to_cedar(canonicalize(arguments, schema if isinstance(schema, dict) else None), typed)
    except (ArgumentMismatch, CanonicalizationError):
        serialized = None
    if serialized is not None:
        assert set(serialized) <= {name for name, _, _ in typed.attrs}
    outcome = engine.set_catalog(catalog, {**SCHEMAS, "fuzz__free": schema})
    try:
        assert outcome.ok, outcome.problems
        decision = engine.decide_tool(who, catalog.tools["fuzz__free"], arguments, facts())
        # Nothing reads fuzz__free's input: it is allowed exactly when its arguments fit the type.
        assert decision.outcome in ("allow", "deny")
        assert (decision.outcome == "allow") == (serialized is not None), (decision, serialized)
    finally:
        engine.set_catalog(catalog, {**SCHEMAS, "fuzz__free": None})


@fuzz_settings(150)
@given(st.sampled_from(["fuzz", "elsewhere"]), st.one_of(ODD_TEXT, PATHS, st.text()))
@example("fuzz", "http://[::1/x")
@example("fuzz", "file:///data/../../etc/passwd")
def test_any_prompt_name_or_resource_uri_gets_a_decision(
    world: tuple[PolicyEngine, Catalog, Principal], server_id: str, name: str,
) -> None:
    engine, _, who = world
    for decision in (engine.decide_prompt(who, server_id, name, facts()),
                     engine.decide_resource(who, server_id, name, facts())):
        assert decision.outcome in ("allow", "deny", "step_up")
        if server_id != "fuzz":
            assert decision.outcome == "deny"


# Regressions found by the fuzzer ------------------------------------------------------------------


def test_a_schema_type_or_required_entry_that_is_not_a_name_is_ignored_not_a_type_error() -> None:
    """Found by the fuzzer: `"type": [["x"]]` or `"required": [[1]]` in an upstream's schema raised
    TypeError while typing it, which stopped every catalog reload carrying that tool."""
    schema = {"type": "object", "required": [["a"], "b"],
              "properties": {"a": {"type": [["x"]]}, "b": {"type": "string"}}}
    assert input_type(schema).render() == '{"b": String}'


def test_an_input_schema_that_is_not_an_object_types_nothing(world: tuple[PolicyEngine, Catalog, Principal]) -> None:
    """Found by the fuzzer: an inputSchema that is a list or a number raised while deciding the call."""
    engine, catalog, who = world
    for published in ([1], 7, "schema", True):
        assert engine.set_catalog(catalog, {**SCHEMAS, "fuzz__free": published}).ok
        try:
            decision = engine.decide_tool(who, catalog.tools["fuzz__free"], {"a": 1}, facts())
            assert decision.outcome == "allow" and decision.canonical_arguments == {"a": 1}
        finally:
            engine.set_catalog(catalog, {**SCHEMAS, "fuzz__free": None})


def test_a_url_that_urlsplit_cannot_read_is_denied_not_raised(world: tuple[PolicyEngine, Catalog, Principal]) -> None:
    """Found by the fuzzer: an unclosed "[" in a URL's host made urlsplit raise ValueError out of the
    decision, as a tool argument and as a resource URI."""
    engine, catalog, who = world
    tool = engine.decide_tool(who, catalog.tools["fuzz__read"], {"path": "http://[::1/secret/x"}, facts())
    assert tool.outcome == "deny" and tool.errors and tool.canonical_arguments is None
    resource = engine.decide_resource(who, "fuzz", "http://[::1/x", facts())
    assert resource.outcome == "deny" and resource.errors
