"""Fuzzing the manifest loader (gateway/catalog/loader.py and yaml_lines.py).

Properties: any text in a manifest file gives either a Catalog or a CatalogError listing problems
(each with the file, a line inside it and a message), never another exception and never unbounded
time; and a valid manifest round-trips: the Catalog says exactly what the YAML said.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.catalog import Catalog, CatalogError, load_catalog
from gateway.catalog.model import RISK_TIERS, HttpTransport, StdioTransport
from gateway.registry.agents_file import parse_agents_file
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.strategies import JSON_VALUES, ODD_TEXT

ENVIRON = {"HOME": "/home/tests", "PYTHON": "/usr/bin/python3"}
# Fragments that reach PyYAML's corners: explicit tags, anchors and aliases, complex keys, merges.
YAML_FRAGMENTS = st.sampled_from([
    "!!int abc", "!!float x", "!!timestamp 2026-13-45", "!!binary ###", "!!python/object:os.system x",
    "!!set {a, b}", "!!omap [a: 1]", "!!str", "&a [*a]", "&b x", "*b", "*undefined", "? [a, b]\n: 1",
    "? {a: 1}\n: 2", "<<: {a: 1}", "<<: *b", ".nan", ".inf", "-.inf", '"\\0"', "'\\0'", "~", "--- a\n--- b",
    "%YAML 1.1\n---", "{", "[", "'", '"', "\t", "\ufeff", "key: value", "- item",
])


@st.composite
def manifest_texts(draw: st.DrawFn) -> str:
    """Arbitrary text, YAML fragments, or a manifest-shaped mapping with fields replaced by odd values."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.text(max_size=200))
    if choice == 1:
        return "\n".join(draw(st.lists(st.one_of(YAML_FRAGMENTS, ODD_TEXT), max_size=6)))
    manifest: dict[str, Any] = draw(valid_manifests())
    for _ in range(draw(st.integers(1, 3))):
        tools = manifest.get("tools") if isinstance(manifest.get("tools"), list) else []
        nested = [v for v in (manifest.get("transport"), *tools) if isinstance(v, dict)]
        target = draw(st.sampled_from([manifest, *nested]))
        key = draw(st.one_of(st.sampled_from(sorted({*manifest, *target, "cwd", "env", "args", "headers",
                                                     "credentials", "protocol", "definition_sha256"})), ODD_TEXT))
        target[key] = draw(st.one_of(JSON_VALUES, YAML_FRAGMENTS))
    text = yaml.safe_dump(manifest, allow_unicode=True)
    if choice == 3:  # splice a fragment into an otherwise good document
        lines = text.splitlines()
        lines.insert(draw(st.integers(0, len(lines))), draw(YAML_FRAGMENTS))
        text = "\n".join(lines)
    return text


TOOL_NAMES = st.from_regex(r"\A[A-Za-z0-9_.\-]{1,20}\Z")
IDS = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z").filter(lambda i: i != "narrowgate")


@st.composite
def valid_manifests(draw: st.DrawFn) -> dict[str, Any]:
    server_id = draw(IDS)
    if draw(st.booleans()):
        transport: dict[str, Any] = {"url": f"http://127.0.0.1:{draw(st.integers(1, 65535))}/mcp",
                                     "protocol": draw(st.sampled_from(["auto", "2025-11-25", "2026-07-28"]))}
    else:
        transport = {"command": "${PYTHON}", "args": draw(st.lists(st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00$"), max_size=10), max_size=3))}
    tools = [{"name": name, "risk": draw(st.sampled_from(RISK_TIERS)),
              "data_classes": draw(st.lists(st.sampled_from(["public", "internal", "pii", "financial"]),
                                            max_size=2, unique=True)),
              "egress": draw(st.booleans())}
             for name in draw(st.lists(TOOL_NAMES, max_size=5, unique=True))]
    return {"id": server_id, "owner": draw(st.emails()), "description": draw(ODD_TEXT.filter(str.strip)),
            "transport": transport, "timeout_s": draw(st.floats(min_value=0.001, max_value=3600)), "tools": tools}


def load(directory: Path, text: str) -> Catalog | CatalogError:
    (directory / "fuzz.yaml").write_text(text, encoding="utf-8")
    try:
        return load_catalog(directory, ENVIRON)
    except CatalogError as exc:
        return exc


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    return tmp_path


@fuzz_settings(100)
@given(manifest_texts())
@example("? [a, b]\n: 1\n")  # a key that is a list
@example("&a [*a]\n")  # an alias inside itself
@example("id: !!int abc\n")  # a tag the value does not fit
@example("id: !!timestamp abc\n")
@example('id: x\nowner: o\ntransport: {command: c, cwd: "\\0"}\ntools: []\n')
@example('id: x\nowner: o\ntransport: {url: "http://a"}\ntimeout_s: .nan\ntools: []\n')
def test_any_manifest_text_loads_or_lists_its_problems(catalog_dir: Path, text: str) -> None:
    started = time.monotonic()
    outcome = load(catalog_dir, text)
    assert time.monotonic() - started < 30
    if isinstance(outcome, CatalogError):
        assert outcome.problems
        line_count = max(1, text.count("\n") + 1)
        for problem in outcome.problems:
            assert Path(problem.file).parent == catalog_dir
            assert 1 <= problem.line <= line_count + 1, (problem, text)
            assert problem.message
        return
    for server in outcome.servers.values():
        assert 0 < server.timeout_s < float("inf")
        if isinstance(server.transport, StdioTransport):
            texts = [server.transport.command, *server.transport.args, *server.transport.env.values()]
            assert not any("\0" in t for t in texts)


@fuzz_settings(40)
@given(valid_manifests())
def test_a_valid_manifest_round_trips(catalog_dir: Path, generated: dict[str, Any]) -> None:
    text = yaml.safe_dump(generated, allow_unicode=True)
    # What the YAML says is what PyYAML reads back ("\x85" is a YAML line break, so dumping it is lossy).
    manifest = yaml.safe_load(text)
    outcome = load(catalog_dir, text)
    assert isinstance(outcome, Catalog), outcome
    server = outcome.servers[manifest["id"]]
    assert (server.owner, server.description, server.timeout_s) == (
        manifest["owner"].strip(), manifest["description"], manifest["timeout_s"])
    transport = manifest["transport"]
    if "url" in transport:
        assert isinstance(server.transport, HttpTransport)
        assert (server.transport.url, server.transport.protocol) == (transport["url"], transport["protocol"])
    else:
        assert isinstance(server.transport, StdioTransport)
        assert server.transport.command == ENVIRON["PYTHON"] and list(server.transport.args) == transport["args"]
    assert set(outcome.tools) == {f"{manifest['id']}__{t['name']}" for t in manifest["tools"]}
    for tool in manifest["tools"]:
        entry = server.tools[tool["name"]]
        assert (entry.risk, list(entry.data_classes), entry.egress) == (tool["risk"], tool["data_classes"],
                                                                        tool["egress"])


@fuzz_settings(40)
@given(manifest_texts())
def test_any_agents_file_text_parses_or_lists_its_problems(text: str) -> None:
    """The agents file shares the lined YAML reader: it too ends in problems, never an exception."""
    parsed = parse_agents_file(text, "agents.yaml", now=0.0)
    for problem in parsed.problems:
        assert problem.line >= 1 and problem.message


# Regressions found by the fuzzer ------------------------------------------------------------------


def problems_of(directory: Path, text: str) -> list[str]:
    outcome = load(directory, text)
    assert isinstance(outcome, CatalogError), outcome
    return [p.message for p in outcome.problems]


def test_a_mapping_key_that_is_a_list_is_a_problem_not_a_type_error(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "? [a, b]\n: 1\n") == [
        "invalid YAML: a mapping key must be a plain value, not a list or a mapping"]


def test_an_alias_inside_itself_is_a_problem_not_a_recursion_error(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "&a [*a]\n") == ["invalid YAML: the document is nested deeper than 64 levels"]


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    started = time.monotonic()
    messages = problems_of(tmp_path, "\n".join(levels) + "\n")
    assert time.monotonic() - started < 10
    assert messages == ["invalid YAML: the document holds more than 100000 values (aliases count each time)"]


def test_a_value_that_does_not_fit_its_explicit_tag_is_a_problem(tmp_path: Path) -> None:
    for text in ("id: !!int abc\n", "id: !!timestamp abc\n", "id: !!float x\n"):
        (message,) = problems_of(tmp_path, text)
        assert message.startswith("invalid YAML: value does not fit its tag"), message


def test_an_explicit_tag_on_an_empty_value_is_a_problem(tmp_path: Path) -> None:
    """Found by atheris (tests/fuzz/atheris_targets.py): an empty `!!int` made PyYAML raise IndexError."""
    for text in ("{!!int }\n", "id: !!int\n", "id: !!float\n"):
        (message,) = problems_of(tmp_path, text)
        assert message.startswith("invalid YAML: value does not fit its tag"), message


def test_nul_in_a_command_path_or_environment_value_is_a_problem(tmp_path: Path) -> None:
    base = "id: x\nowner: o\ntools: []\ntransport: {command: c, "
    for field, value in (("cwd", '"a\\0b"'), ("args", '["\\0"]'), ("env", '{A: "\\0"}')):
        messages = problems_of(tmp_path, base + f"{field}: {value}}}\n")
        assert any("must not contain a NUL character" in m for m in messages), messages


def test_a_timeout_that_is_not_a_finite_number_is_a_problem(tmp_path: Path) -> None:
    base = 'id: x\nowner: o\ntools: []\ntransport: {url: "http://127.0.0.1:9/mcp"}\n'
    for value in (".nan", ".inf"):
        messages = problems_of(tmp_path, base + f"timeout_s: {value}\n")
        assert any(m.startswith("timeout_s must be a positive number") for m in messages), messages


def test_nesting_past_the_limit_is_a_problem(tmp_path: Path) -> None:
    messages = problems_of(tmp_path, "[" * 1000 + "]" * 1000 + "\n")
    assert messages == ["cannot read manifest: the document is nested deeper than 64 levels"]
