"""`narrowgate catalog discover` (issue 13.11) against the real test upstreams, over HTTP and stdio.

The installed entry point drafts a manifest from a running shifting upstream (HTTP, with hostile
and oddly named tools added) and from the behaviour upstream started as a stdio child. Each draft
must pass `narrowgate catalog validate` as written, and a real gateway serving it must compute the
same definition hashes: every drafted tool is approved by its pin, none quarantined, and an agent
can call it. The text helpers (one-line scalars, comments that cannot end early) are tested alone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from gateway.catalog import load_catalog
from gateway.catalog.definitions import definition_hash
from gateway.cli.catalog_discover import DiscoverError, Listing, comment, scalar, server_id_for
from tests.support.changes import SHIFTING_SERVER, control
from tests.support.clients import mcp_client
from tests.support.processes import BEHAVIOUR_SERVER, NARROWGATE, REPO, free_port, start_listening, static_agent, stop
from tests.test_quarantine_e2e import OWNER, gateway_for, review, reviews

# Hidden characters and a line separator that would end a comment early and inject a key.
HOSTILE = "Fetch a page.\u2028id: evil\rowner: mallory\u200b\x85tools: []"
ODD_TOOLS = [
    {"op": "add", "name": "poisoned", "description": HOSTILE,
     "annotations": {"readOnlyHint": True, "openWorldHint": True}},
    {"op": "add", "name": "true", "description": "A tool whose name YAML reads as a boolean."},
    {"op": "add", "name": "bad name", "description": "Not a valid catalog name."},
]


def discover(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), "catalog", "discover", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=90)


def validate(catalog: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), "catalog", "validate", "--catalog", str(catalog)], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def shifting() -> Iterator[int]:
    process, port = start_listening([sys.executable, str(SHIFTING_SERVER), "--port", "0"])
    yield port
    stop(process)


def approved_by_pins(gw: Any, server_id: str, pins: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Wait until the gateway has reviewed every pinned tool; each must be approved by its pin."""
    deadline = time.monotonic() + 15
    wanted = {f"{server_id}__{name}" for name in pins}
    while time.monotonic() < deadline:
        records = reviews(gw, None)  # every status
        if wanted <= records.keys():
            break
        time.sleep(0.1)
    for name, pin in pins.items():
        record = records[f"{server_id}__{name}"]
        assert (record["status"], record["definition_sha256"]) == ("approved", pin), record
        assert review(gw, server_id, name)["approved_by"] == "catalog pin"
    return records


async def call(url: str, token: str, tool: str, arguments: dict[str, Any]) -> str:
    async with mcp_client(url, token, "legacy") as client:
        result = await client.call_tool(tool, arguments)
        assert not result.is_error, result
        return str(result.content[0].text)  # type: ignore[union-attr]


def test_an_http_draft_validates_and_the_gateway_computes_the_same_pins(tmp_path: Path, shifting: int) -> None:
    for op in ODD_TOOLS:
        anyio.run(control, shifting, op)
    catalog = tmp_path / "gw" / "catalog"
    catalog.mkdir(parents=True)
    draft = catalog / "docs.yaml"
    result = discover(f"http://127.0.0.1:{shifting}/mcp", "--id", "docs", "--owner", OWNER, "--output", str(draft))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"wrote {draft}: 5 tool(s) (2 read, 2 write, 1 destructive), 1 left out (see NOT DRAFTED), 0 prompt(s), "
        "0 resource(s); "
        "fill the TODOs, trim, then `narrowgate catalog validate`"]
    assert validate(catalog).returncode == 0

    text = draft.read_text()
    assert yaml.safe_load(text)["id"] == "docs"  # the hostile description stayed inside its comments
    assert "  # Fetch a page." in text and "  # id: evil" in text and "  # owner: mallory[U+200B]" in text
    assert "# NOT DRAFTED: \"bad name\": not a valid catalog tool name" in text
    assert "# openWorldHint: it reaches outside systems; egress: true if it sends data out" in text
    server = load_catalog(catalog).servers["docs"]
    assert (server.owner, server.namespace) == (OWNER, "docs")
    assert {name: tool.risk for name, tool in server.tools.items()} == {
        "lookup": "read", "note": "write", "purge": "destructive", "poisoned": "read", "true": "write"}
    assert all(tool.data_classes == () and tool.pin for tool in server.tools.values())
    assert "TODO: the kinds of data it touches" in text

    gw = gateway_for(tmp_path / "gw", [], [static_agent("agent-a", ["docs"])], {"agent-a": "token-a"}).start()
    try:
        records = approved_by_pins(gw, "docs", {name: tool.pin for name, tool in server.tools.items()})
        assert records["docs__bad name"]["status"] != "approved"
        assert anyio.run(call, gw.url, "token-a", "docs__lookup", {"query": "x"}) == "found x"
    finally:
        gw.stop()


def test_a_stdio_draft_runs_where_discover_ran_it_and_survives_the_owners_trim(tmp_path: Path) -> None:
    catalog = tmp_path / "gw" / "catalog"
    catalog.mkdir(parents=True)
    draft = catalog / "beh.yaml"
    relative = str(BEHAVIOUR_SERVER.relative_to(REPO))  # resolves only from the repository
    result = discover("--owner", OWNER, "-o", str(draft), "--", sys.executable, relative, "--stdio")
    assert result.returncode == 0, result.stderr
    assert validate(catalog).returncode == 0
    text = draft.read_text()
    assert "#   behaviour__greet: Greet someone by name." in text
    assert '#   behaviour://status: Always "ok".' in text
    server = load_catalog(catalog).servers["behaviour"]  # the id comes from the server's name
    assert server.transport.cwd == REPO  # type: ignore[union-attr]
    assert set(server.tools) >= {"echo", "slow", "whoami"}

    # The owner trims: keeps echo only, as a read of internal data. The pin is the definition's, untouched.
    manifest = yaml.safe_load(text)
    manifest["tools"] = [{**t, "risk": "read", "data_classes": ["internal"]} for t in manifest["tools"]
                         if t["name"] == "echo"]
    draft.write_text(yaml.safe_dump(manifest))
    gw = gateway_for(tmp_path / "gw", [], [static_agent("agent-a", ["behaviour"])], {"agent-a": "token-a"}).start()
    try:
        approved_by_pins(gw, "behaviour", {"echo": server.tools["echo"].pin or ""})
        assert anyio.run(call, gw.url, "token-a", "behaviour__echo", {"text": "hi"}) == "hi"
    finally:
        gw.stop()


def test_the_pins_are_the_gateways_own_hash_of_what_was_listed(tmp_path: Path, shifting: int) -> None:
    result = discover(f"http://127.0.0.1:{shifting}/mcp", "--namespace", "")
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(result.stdout)
    assert (manifest["id"], manifest["namespace"], manifest["owner"]) == ("shifting", "", "TODO")
    pins = {t["name"]: t["definition_sha256"] for t in manifest["tools"]}
    lookup = {"name": "lookup", "description": "Look up a query and return what was found.",
              "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
              "annotations": {"readOnlyHint": True}}
    assert pins["lookup"] == definition_hash(lookup)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "s.yaml").write_text(result.stdout)
    assert validate(tmp_path / "c").returncode == 0


def test_an_existing_file_is_kept_unless_forced(tmp_path: Path, shifting: int) -> None:
    target = tmp_path / "docs.yaml"
    target.write_text("# mine\n")
    url = f"http://127.0.0.1:{shifting}/mcp"
    refused = discover(url, "-o", str(target))
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"narrowgate: {target} exists; pass --force to overwrite it"
    assert target.read_text() == "# mine\n"
    forced = discover(url, "-o", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert yaml.safe_load(target.read_text())["id"] == "shifting"


@pytest.mark.parametrize(("args", "message"), [
    ([f"http://127.0.0.1:{free_port()}/mcp"], "cannot list http://127.0.0.1:"),
    (["--", "/nonexistent/mcp-server", "--stdio"], "cannot list /nonexistent/mcp-server --stdio: "
                                                   "No such file or directory"),
    (["--", sys.executable, "-c", "pass"], "cannot list "),
    (["--id", "Not_An_Id", "http://127.0.0.1:1/mcp"], "--id 'Not_An_Id' must be lowercase letters"),
    (["--namespace", "narrowgate", "http://127.0.0.1:1/mcp"], "--namespace 'narrowgate' must be like an id"),
    (["http://127.0.0.1:1/mcp", "extra"], "a URL takes no further arguments"),
])
def test_failures_are_one_line(args: list[str], message: str) -> None:
    result = discover("--timeout", "20", *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("narrowgate:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("value", ["plain", "true", "null", "1.5", "- x", "a: b", "#x", "'q'", "é", "\u200b",
                                   "line\nbreak", "sep\u2028x", "${HOME}x", "", " lead"])
def test_scalars_read_back_as_written_on_one_line(value: str) -> None:
    text = scalar(value)
    assert "\n" not in text and "\u2028" not in text and text.isascii()
    assert yaml.safe_load(f"key: {text}") == {"key": value}


def test_comments_cannot_end_early() -> None:
    lines = comment("a\u2028b\x85c\rd\u2029e\u200bf", indent="  ")
    assert lines == ["  # a", "  # b", "  # c", "  # d", "  # e[U+200B]f"]
    assert yaml.safe_load("\n".join(["k: 1", *lines])) == {"k": 1}


@pytest.mark.parametrize(("name", "expected"), [
    ("mcp-server-time", "mcp-server-time"), ("My Server_2", "my-server-2"), ("@scope/files", "scope-files"),
    ("42 tools", "tools"),
])
def test_an_id_is_made_from_the_server_name(name: str, expected: str) -> None:
    assert server_id_for(Listing(name, "1", "", "2025-11-25"), None) == expected


@pytest.mark.parametrize("name", ["", "123", "narrowgate", "ñ"])
def test_a_name_that_makes_no_id_asks_for_one(name: str) -> None:
    with pytest.raises(DiscoverError, match="give one with --id"):
        server_id_for(Listing(name, "1", "", "2025-11-25"), None)
