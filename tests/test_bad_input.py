"""Hostile and broken input at the agent-facing endpoint: raw HTTP, exact statuses and JSON-RPC codes.

Every case ends by checking that the gateway still serves a fresh session, so a bad request can
never take the endpoint down with it. The CLI cases check that a broken catalog is refused loudly,
with file:line for every problem.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from tests.conftest import TOKEN
from tests.support.processes import NARROWGATE, Gateway, behaviour_manifest, stdio_behaviour_transport

LEGACY = "2025-11-25"
MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"
TOKEN_B = "token-agent-b"
SMALL_BODY_LIMIT = 2048


# Helpers ---------------------------------------------------------------------------------------


def headers(token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    out = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if token is not None:
        out["Authorization"] = f"Bearer {token}"
    out.update(extra)
    return out


def rpc(method: str, params: dict[str, Any] | None = None, request_id: int | None = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = params
    if request_id is not None:
        body["id"] = request_id
    return body


def modern_params(params: dict[str, Any] | None = None, version: str = MODERN) -> dict[str, Any]:
    meta = {PROTOCOL_VERSION_META_KEY: version, CLIENT_CAPABILITIES_META_KEY: {},
            CLIENT_INFO_META_KEY: {"name": "bad-input-tests", "version": "0"}}
    return {**(params or {}), "_meta": meta}


def modern_headers(method: str, version: str = MODERN, name: str | None = None, **extra: str) -> dict[str, str]:
    out = headers(**{"MCP-Protocol-Version": version, "Mcp-Method": method}, **extra)
    if name is not None:
        out["Mcp-Name"] = name
    return out


def open_session(gw: Gateway, token: str = TOKEN) -> str:
    """A 2025-11-25 session, initialized; returns its id."""
    init = rpc("initialize", {"protocolVersion": LEGACY, "capabilities": {},
                              "clientInfo": {"name": "bad-input-tests", "version": "0"}})
    response = httpx2.post(gw.url, json=init, headers=headers(token))
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    done = httpx2.post(gw.url, json=rpc("notifications/initialized", request_id=None),
                       headers=headers(token, **{"Mcp-Session-Id": session_id, "MCP-Protocol-Version": LEGACY}))
    assert done.status_code == 202
    return session_id


def session_headers(session_id: str, token: str = TOKEN) -> dict[str, str]:
    return headers(token, **{"Mcp-Session-Id": session_id, "MCP-Protocol-Version": LEGACY})


def tool_names(gw: Gateway, token: str = TOKEN) -> list[str]:
    """tools/list through a fresh session: the gateway still serves."""
    session_id = open_session(gw, token)
    response = httpx2.post(gw.url, json=rpc("tools/list", {}, 2), headers=session_headers(session_id, token))
    assert response.status_code == 200, response.text
    return [tool["name"] for tool in response.json()["result"]["tools"]]


def assert_rpc_error(response: httpx2.Response, status: int, code: int, request_id: Any = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    assert body["id"] == request_id
    assert body["error"]["code"] == code, body
    assert "result" not in body
    error: dict[str, Any] = body["error"]
    return error


# Fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def serving(gateway: Gateway) -> Iterator[Gateway]:
    """The shared gateway; after the test, it must still serve a fresh session."""
    yield gateway
    assert "behav__echo" in tool_names(gateway)


@pytest.fixture(scope="module")
def strict_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Two agents, and a small body limit."""
    manifest = behaviour_manifest("local", stdio_behaviour_transport(), tools=("echo",))
    gw = Gateway(tmp_path_factory.mktemp("strict-gateway"), [manifest],
                 tokens={"agent-a": TOKEN, "agent-b": TOKEN_B},
                 extra_config={"limits": {"max_body_bytes": SMALL_BODY_LIMIT}}).start()
    yield gw
    gw.stop()


@pytest.fixture
def strict(strict_gateway: Gateway) -> Iterator[Gateway]:
    yield strict_gateway
    assert tool_names(strict_gateway) == ["local__echo"]
    assert tool_names(strict_gateway, TOKEN_B) == ["local__echo"]


# Body shape ------------------------------------------------------------------------------------


def test_malformed_json_is_a_parse_error(serving: Gateway) -> None:
    response = httpx2.post(serving.url, content=b'{"jsonrpc": "2.0", "id": 1, "method": ', headers=headers())
    assert_rpc_error(response, 400, -32700)


@pytest.mark.parametrize("body", [b"42", b'"tools/list"', b"null", b"true"])
def test_non_object_body_is_an_invalid_request(serving: Gateway, body: bytes) -> None:
    response = httpx2.post(serving.url, content=body, headers=headers())
    assert_rpc_error(response, 400, -32600)


def test_batch_is_refused(serving: Gateway) -> None:
    batch = [rpc("tools/list", {}, 1), rpc("tools/list", {}, 2)]
    response = httpx2.post(serving.url, json=batch, headers=headers())
    error = assert_rpc_error(response, 400, -32600)
    assert "batch" in error["message"].lower()


@pytest.mark.parametrize("levels", [100, 2000])
def test_nesting_deeper_than_the_limit_is_refused(serving: Gateway, levels: int) -> None:
    """Valid JSON nested past limits.max_json_depth (64) is an invalid request, however deep it goes."""
    session_id = open_session(serving)
    prefix = b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "behav__echo", "arguments": '
    body = prefix + b'{"d": ' * levels + b'"bottom"' + b"}" * levels + b"}}"
    response = httpx2.post(serving.url, content=body, headers=session_headers(session_id))
    error = assert_rpc_error(response, 400, -32600)
    assert "nested" in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"jsonrpc": "1.0", "id": 1, "method": "tools/list"},
        {"id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": True, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 1.5, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 1, "method": 7},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [1, 2]},
        {"jsonrpc": "2.0", "id": 1},
    ],
)
def test_malformed_envelope_is_an_invalid_request(serving: Gateway, body: dict[str, Any]) -> None:
    session_id = open_session(serving)
    response = httpx2.post(serving.url, json=body, headers=session_headers(session_id))
    assert_rpc_error(response, 400, -32600)


def test_body_over_the_limit_is_413(strict: Gateway) -> None:
    session_id = open_session(strict)
    body = rpc("tools/call", {"name": "local__echo", "arguments": {"text": "x" * (SMALL_BODY_LIMIT * 2)}}, 3)
    response = httpx2.post(strict.url, json=body, headers=session_headers(session_id))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == -32600
    # Just under the limit still goes through.
    body = rpc("tools/call", {"name": "local__echo", "arguments": {"text": "y" * 100}}, 4)
    response = httpx2.post(strict.url, json=body, headers=session_headers(session_id))
    assert response.status_code == 200
    assert response.json()["result"]["content"][0]["text"] == "y" * 100


def test_body_over_the_limit_without_content_length_is_413(strict: Gateway) -> None:
    """A chunked body has no Content-Length to check up front; the read itself must stop."""
    session_id = open_session(strict)
    payload = json.dumps(rpc("tools/call", {"name": "local__echo", "arguments": {"text": "z" * 8000}}, 5)).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 1000):
            yield payload[start:start + 1000]

    response = httpx2.post(strict.url, content=chunks(), headers=session_headers(session_id))
    assert response.status_code == 413


# Methods ---------------------------------------------------------------------------------------


def test_unknown_method_legacy_era(serving: Gateway) -> None:
    session_id = open_session(serving)
    response = httpx2.post(serving.url, json=rpc("tools/frobnicate", {}, 9), headers=session_headers(session_id))
    error = assert_rpc_error(response, 200, -32601, 9)
    assert "tools/frobnicate" in error["message"]


def test_unknown_method_modern_era_is_404(serving: Gateway) -> None:
    response = httpx2.post(serving.url, json=rpc("tools/frobnicate", modern_params(), 9),
                           headers=modern_headers("tools/frobnicate"))
    assert_rpc_error(response, 404, -32601, 9)


def test_legacy_only_method_in_modern_era_is_404(serving: Gateway) -> None:
    response = httpx2.post(serving.url, json=rpc("ping", modern_params(), 10), headers=modern_headers("ping"))
    assert_rpc_error(response, 404, -32601, 10)


# Sessions (2025-11-25) -------------------------------------------------------------------------


def test_missing_session_id_is_400(serving: Gateway) -> None:
    response = httpx2.post(serving.url, json=rpc("tools/list", {}, 11),
                           headers=headers(**{"MCP-Protocol-Version": LEGACY}))
    error = assert_rpc_error(response, 400, -32600, 11)
    assert "Mcp-Session-Id" in error["message"]


def test_unknown_session_id_is_404(serving: Gateway) -> None:
    response = httpx2.post(serving.url, json=rpc("tools/list", {}, 12),
                           headers=session_headers("no-such-session-0123456789"))
    assert_rpc_error(response, 404, -32600, 12)


def test_session_of_another_agent_is_404(strict: Gateway) -> None:
    session_a = open_session(strict, TOKEN)
    stolen = httpx2.post(strict.url, json=rpc("tools/list", {}, 13), headers=session_headers(session_a, TOKEN_B))
    assert_rpc_error(stolen, 404, -32600, 13)
    # Nor may the other agent close it ...
    delete = httpx2.delete(strict.url, headers=session_headers(session_a, TOKEN_B))
    assert delete.status_code == 404
    # ... and its owner still can use it.
    own = httpx2.post(strict.url, json=rpc("tools/list", {}, 14), headers=session_headers(session_a, TOKEN))
    assert own.status_code == 200
    assert [t["name"] for t in own.json()["result"]["tools"]] == ["local__echo"]


def test_deleted_session_cannot_be_reused(serving: Gateway) -> None:
    session_id = open_session(serving)
    assert httpx2.delete(serving.url, headers=session_headers(session_id)).status_code == 200
    response = httpx2.post(serving.url, json=rpc("tools/list", {}, 15), headers=session_headers(session_id))
    assert_rpc_error(response, 404, -32600, 15)
    assert httpx2.delete(serving.url, headers=session_headers(session_id)).status_code == 404


@pytest.mark.parametrize("request_id", [[1], {"id": 1}])
def test_cancelling_an_unhashable_request_id_is_ignored(serving: Gateway, request_id: object) -> None:
    """notifications/cancelled names a request by a JSON value, which may be one no request can have."""
    session_id = open_session(serving)
    cancel = rpc("notifications/cancelled", {"requestId": request_id}, request_id=None)
    assert httpx2.post(serving.url, json=cancel, headers=session_headers(session_id)).status_code == 202
    listed = httpx2.post(serving.url, json=rpc("tools/list", {}, 16), headers=session_headers(session_id))
    assert listed.status_code == 200, listed.text


# Modern-era envelope and mirrored headers (2026-07-28) -----------------------------------------


def test_modern_request_that_is_well_formed_works(serving: Gateway) -> None:
    """The baseline the mismatch cases below deviate from."""
    body = rpc("tools/call", modern_params({"name": "behav__echo", "arguments": {"text": "hi"}}), 20)
    response = httpx2.post(serving.url, json=body, headers=modern_headers("tools/call", name="behav__echo"))
    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"][0]["text"] == "hi"


@pytest.mark.parametrize(
    ("header_overrides", "what"),
    [
        ({"Mcp-Method": "tools/list"}, "Mcp-Method"),
        ({"Mcp-Name": "behav__slow"}, "Mcp-Name"),
        ({"MCP-Protocol-Version": "2025-11-25"}, "MCP-Protocol-Version"),
        ({"MCP-Protocol-Version": "2026-01-01"}, "MCP-Protocol-Version"),
    ],
)
def test_mismatched_mirrored_header_is_32020(serving: Gateway, header_overrides: dict[str, str], what: str) -> None:
    body = rpc("tools/call", modern_params({"name": "behav__echo", "arguments": {"text": "hi"}}), 21)
    sent = {**modern_headers("tools/call", name="behav__echo"), **header_overrides}
    response = httpx2.post(serving.url, json=body, headers=sent)
    if sent["MCP-Protocol-Version"] == LEGACY:
        # A handshake-era version header makes this a 2025-11-25 request without a session.
        assert_rpc_error(response, 400, -32600, 21)
        return
    error = assert_rpc_error(response, 400, -32020, 21)
    assert what.lower() in error["message"].lower()


def test_duplicated_routing_header_is_32020(serving: Gateway) -> None:
    body = rpc("tools/list", modern_params(), 26)
    sent = [*modern_headers("tools/list").items(), ("Mcp-Method", "tools/list")]
    error = assert_rpc_error(httpx2.post(serving.url, json=body, headers=sent), 400, -32020, 26)
    assert "more than once" in error["message"]


def test_missing_mcp_method_header_is_32020(serving: Gateway) -> None:
    body = rpc("tools/list", modern_params(), 22)
    sent = {k: v for k, v in modern_headers("tools/list").items() if k != "Mcp-Method"}
    assert_rpc_error(httpx2.post(serving.url, json=body, headers=sent), 400, -32020, 22)


def test_missing_meta_envelope_is_32602(serving: Gateway) -> None:
    response = httpx2.post(serving.url, json=rpc("tools/list", {}, 23), headers=modern_headers("tools/list"))
    error = assert_rpc_error(response, 400, -32602, 23)
    assert "_meta" in error["message"]


def test_unsupported_protocol_version_is_32022(serving: Gateway) -> None:
    version = "2099-01-01"
    response = httpx2.post(serving.url, json=rpc("tools/list", modern_params(version=version), 24),
                           headers=modern_headers("tools/list", version=version))
    error = assert_rpc_error(response, 400, -32022, 24)
    assert MODERN in json.dumps(error.get("data"))


def test_unsupported_protocol_version_on_a_session_is_400(serving: Gateway) -> None:
    session_id = open_session(serving)
    sent = {**session_headers(session_id), "MCP-Protocol-Version": "1999-01-01"}
    assert_rpc_error(httpx2.post(serving.url, json=rpc("tools/list", {}, 25), headers=sent), 400, -32600, 25)


# Host, Origin, authentication ------------------------------------------------------------------


def test_foreign_origin_is_403(serving: Gateway) -> None:
    response = httpx2.post(serving.url, json=rpc("tools/list", modern_params(), 30),
                           headers=modern_headers("tools/list", Origin="http://evil.example.com"))
    assert response.status_code == 403
    assert "result" not in response.text


def test_loopback_origin_is_allowed(serving: Gateway) -> None:
    response = httpx2.post(serving.url, json=rpc("tools/list", modern_params(), 31),
                           headers=modern_headers("tools/list", Origin=f"http://localhost:{serving.port}"))
    assert response.status_code == 200
    assert "behav__echo" in response.text


def test_foreign_host_is_421(serving: Gateway) -> None:
    response = httpx2.post(serving.url, json=rpc("tools/list", modern_params(), 32),
                           headers=modern_headers("tools/list", Host="evil.example.com"))
    assert response.status_code == 421


def test_missing_token_is_401_with_resource_metadata(serving: Gateway) -> None:
    response = httpx2.post(serving.url, json=rpc("tools/list", modern_params(), 33),
                           headers={k: v for k, v in modern_headers("tools/list").items() if k != "Authorization"})
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    metadata_url = f"{serving.base}/.well-known/oauth-protected-resource"
    assert challenge == f'Bearer resource_metadata="{metadata_url}"'
    metadata = httpx2.get(metadata_url)
    assert metadata.status_code == 200
    assert metadata.headers["content-type"].startswith("application/json")
    assert metadata.json()["resource"] == serving.url


def test_empty_authorization_header_is_401(serving: Gateway) -> None:
    response = httpx2.post(serving.url, json=rpc("tools/list", modern_params(), 34),
                           headers={**modern_headers("tools/list"), "Authorization": ""})
    assert response.status_code == 401


def test_wrong_token_is_401_and_not_echoed(serving: Gateway) -> None:
    wrong = "wrong-token-7f3a9c1e5b"
    response = httpx2.post(serving.url, json=rpc("tools/list", modern_params(), 35),
                           headers=modern_headers("tools/list", Authorization=f"Bearer {wrong}"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert wrong not in response.text
    assert wrong not in json.dumps(dict(response.headers))
    assert response.json()["error"] == "invalid_token"
    assert wrong not in serving.log_text()


@pytest.mark.parametrize("authorization", ["Basic xyz", "Bearer", "bearer-ish token", TOKEN])
def test_wrong_scheme_is_401(serving: Gateway, authorization: str) -> None:
    response = httpx2.post(serving.url, json=rpc("tools/list", modern_params(), 36),
                           headers=modern_headers("tools/list", Authorization=authorization))
    assert response.status_code == 401
    assert "www-authenticate" in response.headers


# HTTP verbs and content negotiation ------------------------------------------------------------


@pytest.mark.parametrize("accept", ["text/event-stream", "text/html", ""])
def test_post_accept_without_json_is_406(serving: Gateway, accept: str) -> None:
    response = httpx2.post(serving.url, json=rpc("tools/list", modern_params(), 40),
                           headers=modern_headers("tools/list", Accept=accept))
    assert response.status_code == 406


def test_put_is_405(serving: Gateway) -> None:
    response = httpx2.put(serving.url, json=rpc("tools/list", modern_params(), 41),
                          headers=modern_headers("tools/list"))
    assert response.status_code == 405
    assert "POST" in response.headers.get("allow", "")


def test_get_without_event_stream_accept_is_406(serving: Gateway) -> None:
    session_id = open_session(serving)
    response = httpx2.get(serving.url, headers={**session_headers(session_id), "Accept": "application/json"})
    assert response.status_code == 406


# The CLI refuses a broken catalog --------------------------------------------------------------

BROKEN_MANIFEST = """\
id: broken
description: three distinct problems
transport:
  url: http://127.0.0.1:1/mcp
colour: blue
tools:
  - name: ok_tool
    risk: read
  - name: odd_tool
    risk: catastrophic
"""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_catalog_validate_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    manifest = catalog / "broken.yaml"
    manifest.write_text(BROKEN_MANIFEST)
    result = run_cli("catalog", "validate", "--catalog", str(catalog), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"{manifest}:5:") and "'colour'" in line for line in lines), lines
    assert any(line.startswith(f"{manifest}:10:") and "risk" in line and "odd_tool" in line for line in lines), lines
    assert any(line.startswith(f"{manifest}:") and "owner" in line for line in lines), lines
    assert len(lines) == 3, lines
    assert "3 problem(s)" in result.stderr


def test_catalog_validate_reports_bare_name_collisions(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for server_id in ("alpha", "beta"):
        manifest = {**behaviour_manifest(server_id, {"url": "http://127.0.0.1:1/mcp"}, tools=("echo",)),
                    "namespace": ""}
        (catalog / f"{server_id}.yaml").write_text(yaml.safe_dump(manifest))
    result = run_cli("catalog", "validate", "--catalog", str(catalog), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    collisions = [line for line in result.stdout.splitlines() if "collides" in line]
    assert len(collisions) == 1, result.stdout
    assert "'echo'" in collisions[0]
    assert str(catalog / "alpha.yaml") in collisions[0] and str(catalog / "beta.yaml") in collisions[0]


def test_catalog_validate_accepts_a_good_catalog(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "fine.yaml").write_text(yaml.safe_dump(behaviour_manifest("fine", {"url": "http://127.0.0.1:1/mcp"})))
    result = run_cli("catalog", "validate", "--catalog", str(catalog), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "catalog ok: 1 server(s), 6 tool(s)" in result.stdout


def test_serve_refuses_an_invalid_catalog(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, [])
    config = gw.write_config()
    manifest = tmp_path / "catalog" / "broken.yaml"
    manifest.write_text(BROKEN_MANIFEST)
    result = run_cli("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode != 0
    assert f"{manifest}:5:" in result.stderr
    assert f"{manifest}:10:" in result.stderr
    assert "invalid" in result.stderr


def test_the_gateways_own_namespace_is_reserved(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "mine.yaml").write_text(
        'id: narrowgate\nowner: x@example.com\ntransport: {url: "http://127.0.0.1:1/mcp"}\ntools: []\n'
    )
    result = subprocess.run([str(NARROWGATE), "catalog", "validate", "--catalog", str(catalog)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "'narrowgate' is reserved for the gateway's own tools" in result.stdout
