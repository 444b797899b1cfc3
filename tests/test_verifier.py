"""gateway.verifier, the module tool owners drop into their servers: real keys, real JWKS over HTTP.

Every refusal the issue lists (replayed, other upstream, other tool, changed arguments, expired,
wrong typ, tampered, revoked task) plus acceptance, the argument digest's definition, and the
example upstream in examples/verifying_upstream verifying every call it receives.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from aiohttp import web
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.credentials.keys import SigningKeyring
from gateway.credentials.revocations import Revocations
from gateway.credentials.upstream_tokens import UpstreamTokenMinter
from gateway.store import Store, open_store
from gateway.verifier import TokenRefused, UpstreamTokenVerifier, argument_digest, bearer_token
from tests.support.processes import REPO, start_listening, stop

ISSUER = "https://gateway.example"
AUDIENCE = "https://tools.example/mcp"
ACTOR = {"sub": "spiffe://example.org/bot-a", "iss": "spiffe://example.org"}
ARGS = {"path": "/data/report.txt", "limit": 10}
EXAMPLE_SERVER = REPO / "examples" / "verifying_upstream" / "server.py"


@dataclass
class Gateway:
    """The gateway's token side: keyring, minter, revocations, and its JWKS + revocations over HTTP."""

    keyring: SigningKeyring
    minter: UpstreamTokenMinter
    revocations: Revocations
    base_url: str
    fetches: dict[str, int] = field(default_factory=lambda: {"jwks": 0, "revocations": 0})

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/.well-known/jwks.json"

    @property
    def revocations_url(self) -> str:
        return f"{self.base_url}/oauth/revocations"

    def mint(self, *, tool: str = "read_file", arguments: dict[str, Any] | None = ARGS, audience: str = AUDIENCE,
             task_id: str | None = "task-1", minter: UpstreamTokenMinter | None = None) -> str:
        return (minter or self.minter).mint(
            agent_id="bot-a", actor=ACTOR, audience=audience, tool=tool, task_id=task_id, txn="trace-1",
            arguments_digest=argument_digest(arguments),
        ).token

    def verifier(self, **kwargs: Any) -> UpstreamTokenVerifier:
        return UpstreamTokenVerifier(self.jwks_url, AUDIENCE, ISSUER, **kwargs)



@pytest.fixture
async def gateway(store: Store) -> AsyncIterator[Gateway]:
    keyring = await SigningKeyring.open(store)
    revocations = Revocations()
    state: dict[str, Gateway] = {}

    async def jwks(_: web.Request) -> web.Response:
        state["gw"].fetches["jwks"] += 1
        return web.json_response(keyring.jwks())

    async def revoked(_: web.Request) -> web.Response:
        state["gw"].fetches["revocations"] += 1
        return web.json_response(revocations.snapshot())

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    app.router.add_get("/oauth/revocations", revoked)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state["gw"] = Gateway(keyring, UpstreamTokenMinter(keyring, ISSUER), revocations, f"http://127.0.0.1:{port}")
    yield state["gw"]
    await runner.cleanup()


async def refused(verifier: UpstreamTokenVerifier, token: str, tool: str = "read_file",
                  arguments: dict[str, Any] | None = ARGS) -> str:
    # averify: the sync verify would block this loop, which also serves the JWKS.
    with pytest.raises(TokenRefused) as info:
        await verifier.averify(token, tool, arguments)
    return info.value.reason


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- acceptance and each refusal -------------------------------------------------------------------


async def test_a_fresh_token_for_this_upstream_tool_and_arguments_is_accepted(gateway: Gateway) -> None:
    claims = await gateway.verifier().averify(gateway.mint(), "read_file", {"limit": 10, "path": "/data/report.txt"})
    assert (claims["sub"], claims["scope"], claims["task_id"], claims["act"]) == ("bot-a", "read_file", "task-1", ACTOR)


async def test_a_replayed_token_is_refused(gateway: Gateway) -> None:
    verifier, token = gateway.verifier(), gateway.mint()
    await verifier.averify(token, "read_file", ARGS)
    assert await refused(verifier, token) == "replayed token (jti already used)"


async def test_a_token_for_another_upstream_is_refused(gateway: Gateway) -> None:
    token = gateway.mint(audience="https://other-tools.example/mcp")
    assert await refused(gateway.verifier(), token) == "token is for another upstream (aud)"


async def test_a_token_for_another_tool_is_refused(gateway: Gateway) -> None:
    token = gateway.mint(tool="read_file")
    assert await refused(gateway.verifier(), token, tool="delete_file") == "token is for another tool (scope)"


@pytest.mark.parametrize("changed", [
    {"path": "/data/secret.txt", "limit": 10},
    {"path": "/data/report.txt", "limit": 11},
    {"path": "/data/report.txt"},
    {"path": "/data/report.txt", "limit": 10, "extra": True},
    None,
])
async def test_a_token_with_changed_arguments_is_refused(gateway: Gateway, changed: dict[str, Any] | None) -> None:
    reason = await refused(gateway.verifier(), gateway.mint(), arguments=changed)
    assert reason == "arguments differ from those the token was minted for (args_sha256)"


async def test_an_expired_token_is_refused(gateway: Gateway) -> None:
    past = UpstreamTokenMinter(gateway.keyring, ISSUER, clock=lambda: time.time() - 120)
    assert await refused(gateway.verifier(), gateway.mint(minter=past)) == "token expired"


async def test_expiry_honours_the_leeway(gateway: Gateway) -> None:
    now = [time.time()]
    token = gateway.mint()
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    verifier = gateway.verifier(leeway_s=5, clock=lambda: now[0])
    now[0] = exp + 5.5
    assert await refused(verifier, token) == "token expired"
    now[0] = exp + 4.5
    assert (await verifier.averify(token, "read_file", ARGS))["exp"] == exp


async def test_a_token_of_another_type_is_refused(gateway: Gateway) -> None:
    claims = jwt.decode(gateway.mint(), options={"verify_signature": False})
    # Same key, same claims, but typ "JWT" (e.g. an ID token or a task token): not an access token.
    for typ in ("JWT", "task+jwt"):
        assert await refused(gateway.verifier(), gateway.keyring.sign(claims, typ)) == \
            "wrong token type (typ must be at+jwt)"


async def test_a_tampered_token_is_refused(gateway: Gateway) -> None:
    header, payload, signature = gateway.mint(tool="read_file").split(".")
    claims = jwt.decode(gateway.mint(), options={"verify_signature": False})
    forged = f"{header}.{b64({**claims, 'scope': 'delete_file'})}.{signature}"
    assert await refused(gateway.verifier(), forged, tool="delete_file") == "bad signature"
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert await refused(gateway.verifier(), f"{header}.{payload}.{flipped}") == "bad signature"


async def test_alg_none_and_garbage_are_refused(gateway: Gateway) -> None:
    claims = jwt.decode(gateway.mint(), options={"verify_signature": False})
    unsigned = f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': gateway.keyring.current_kid})}.{b64(claims)}."
    assert await refused(gateway.verifier(), unsigned) == "token algorithm is not allowed"
    assert await refused(gateway.verifier(), "not-a-jwt") == "malformed token"


async def test_a_token_signed_by_another_gateway_is_refused(gateway: Gateway, tmp_path: Path) -> None:
    other_store = open_store(f"sqlite:///{tmp_path / 'other.db'}")
    await other_store.migrate()
    other = UpstreamTokenMinter(await SigningKeyring.open(other_store), ISSUER)
    verifier = gateway.verifier(refresh_s=60)
    assert await refused(verifier, gateway.mint(minter=other)) == "unknown signing key (kid)"
    # Made-up kids cost the gateway at most one JWKS fetch per refresh_s.
    for _ in range(5):
        assert await refused(verifier, gateway.mint(minter=other)) == "unknown signing key (kid)"
    assert gateway.fetches["jwks"] == 1
    await other_store.close()


async def test_a_token_from_another_issuer_is_refused(gateway: Gateway) -> None:
    other_issuer = UpstreamTokenMinter(gateway.keyring, "https://evil.example")
    assert await refused(gateway.verifier(), gateway.mint(minter=other_issuer)) == "wrong issuer"


async def test_a_token_without_a_usable_sub_iss_is_refused(gateway: Gateway) -> None:
    """sub_iss says whose sub it is (an agent id of this gateway, or a person at a provider): without it, or
    empty, an upstream could take a person for the agent of the same name, so the token is refused (as a
    not-yet-upgraded gateway mints them: upgrade gateways before upstreams' verifier, docs/tokens.md)."""
    claims = jwt.decode(gateway.mint(), options={"verify_signature": False})
    assert claims["sub_iss"] == ISSUER  # the gateway's own issuer for an agent's call
    without = gateway.keyring.sign({k: v for k, v in claims.items() if k != "sub_iss"}, "at+jwt")
    assert await refused(gateway.verifier(), without) == "token lacks the sub_iss claim"
    null = gateway.keyring.sign({**claims, "sub_iss": None}, "at+jwt")
    assert await refused(gateway.verifier(), null) == "token lacks the sub_iss claim"
    for bad in ("", 7):
        token = gateway.keyring.sign({**claims, "sub_iss": bad}, "at+jwt")
        assert await refused(gateway.verifier(), token) == "malformed token (sub or sub_iss is not a non-empty string)"


async def test_a_token_living_longer_than_60_seconds_is_refused(gateway: Gateway) -> None:
    claims = jwt.decode(gateway.mint(), options={"verify_signature": False})
    long_lived = gateway.keyring.sign({**claims, "exp": claims["iat"] + 3600}, "at+jwt")
    assert await refused(gateway.verifier(), long_lived) == "token lifetime exceeds 60 s"


async def test_a_token_of_a_revoked_task_is_refused(gateway: Gateway) -> None:
    verifier = gateway.verifier(revocations_url=gateway.revocations_url, refresh_s=0)
    await verifier.averify(gateway.mint(task_id="task-1"), "read_file", ARGS)
    gateway.revocations.revoke_task("task-1", until=time.time() + 60)
    assert await refused(verifier, gateway.mint(task_id="task-1")) == "task revoked"
    assert (await verifier.averify(gateway.mint(task_id="task-2"), "read_file", ARGS))["task_id"] == "task-2"
    minted = gateway.minter.mint(agent_id="bot-a", actor=ACTOR, audience=AUDIENCE, tool="read_file", task_id=None,
                                 txn="t", arguments_digest=argument_digest(ARGS))
    gateway.revocations.revoke_jti(minted.jti, until=minted.expires_at)
    assert await refused(verifier, minted.token) == "token revoked"


async def test_revocations_are_polled_at_most_once_per_refresh_interval(gateway: Gateway) -> None:
    verifier = gateway.verifier(revocations_url=gateway.revocations_url, refresh_s=60)
    for _ in range(5):
        await verifier.averify(gateway.mint(), "read_file", ARGS)
    assert gateway.fetches["revocations"] == 1


async def test_an_unreachable_revocation_list_fails_closed(gateway: Gateway) -> None:
    verifier = gateway.verifier(revocations_url=f"{gateway.base_url}/nowhere")
    assert await refused(verifier, gateway.mint()) == "revocation list unavailable"


async def test_rotation_old_tokens_verify_during_overlap_and_new_kid_is_fetched(gateway: Gateway) -> None:
    verifier = gateway.verifier(refresh_s=0)
    before = gateway.mint()
    await verifier.averify(gateway.mint(), "read_file", ARGS)  # caches the JWKS with the old key only
    await gateway.keyring.rotate(overlap_s=120)
    await verifier.averify(before, "read_file", ARGS)  # the old key is still cached and served
    after = gateway.mint()
    assert jwt.get_unverified_header(after)["kid"] == gateway.keyring.current_kid
    await verifier.averify(after, "read_file", ARGS)  # unknown kid -> one refetch -> accepted
    assert gateway.fetches["jwks"] == 2


async def test_concurrent_use_of_one_token_is_accepted_exactly_once(gateway: Gateway) -> None:
    verifier, token = gateway.verifier(), gateway.mint()
    results = await asyncio.gather(*(verifier.averify(token, "read_file", ARGS) for _ in range(16)),
                                   return_exceptions=True)
    assert sum(isinstance(r, dict) for r in results) == 1
    assert all(r.reason == "replayed token (jti already used)" for r in results if isinstance(r, TokenRefused))


async def test_the_replay_cache_is_bounded_and_fails_closed(gateway: Gateway) -> None:
    verifier = gateway.verifier(max_replay_entries=2)
    await verifier.averify(gateway.mint(), "read_file", ARGS)
    await verifier.averify(gateway.mint(), "read_file", ARGS)
    assert await refused(verifier, gateway.mint()) == "replay cache full; try again shortly"


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer  abc ") == "abc"
    for bad in (None, "", "Basic abc", "Bearer", "Bearer "):
        with pytest.raises(TokenRefused, match="no bearer token"):
            bearer_token(bad)


# --- argument digest -------------------------------------------------------------------------------


def test_argument_digest_is_the_documented_definition() -> None:
    args = {"b": [1, 2.5, {"z": None, "a": "é"}], "a": "日本"}
    expected = hashlib.sha256(
        json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    assert argument_digest(args) == expected
    assert argument_digest(None) == argument_digest({}) == hashlib.sha256(b"{}").hexdigest()


def test_argument_digest_ignores_key_order_at_every_depth() -> None:
    one = {"path": "/a", "opts": {"x": 1, "y": [{"p": 1, "q": 2}]}}
    two = {"opts": {"y": [{"q": 2, "p": 1}], "x": 1}, "path": "/a"}
    assert argument_digest(one) == argument_digest(two)


@pytest.mark.parametrize("changed", [
    {"path": "/b", "opts": {"x": 1, "y": [{"p": 1, "q": 2}]}},            # a value
    {"path": "/a", "opts": {"x": "1", "y": [{"p": 1, "q": 2}]}},          # a type: "1" vs 1
    {"path": "/a", "opts": {"x": 1.5, "y": [{"p": 1, "q": 2}]}},          # a number
    {"path": "/a", "opts": {"x": True, "y": [{"p": 1, "q": 2}]}},         # true vs 1
    {"path": "/a", "opts": {"x": 1, "y": [{"q": 2}, {"p": 1}]}},          # list structure
    {"path": "/a", "opts": {"x": 1, "y": [{"p": 1, "q": 2}], "z": None}},  # an added key
    {"path": "/a", "opts": {"x": 1}},                                      # a removed key
    {"Path": "/a", "opts": {"x": 1, "y": [{"p": 1, "q": 2}]}},            # a key's case
    {"path": "/a ", "opts": {"x": 1, "y": [{"p": 1, "q": 2}]}},           # whitespace
])
def test_argument_digest_differs_for_any_change(changed: dict[str, Any]) -> None:
    assert argument_digest(changed) != argument_digest({"path": "/a", "opts": {"x": 1, "y": [{"p": 1, "q": 2}]}})


def test_argument_digest_survives_a_json_round_trip() -> None:
    # The upstream hashes what it parsed from the wire; the gateway hashed what it serialized.
    args = {"text": "naïve ☃ \U0001f600", "n": 0.1, "big": 2**70, "neg": -0.0, "list": []}
    assert argument_digest(json.loads(json.dumps(args))) == argument_digest(args)


# --- the example upstream ----------------------------------------------------------------------------


@pytest.fixture
async def example_upstream(gateway: Gateway, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    record = tmp_path / "received.jsonl"
    process, port = await asyncio.to_thread(start_listening, [
        sys.executable, str(EXAMPLE_SERVER), "--port", "0", "--jwks-url", gateway.jwks_url,
        "--audience", AUDIENCE, "--issuer", ISSUER, "--revocations-url", gateway.revocations_url,
        "--record", str(record),
    ])
    yield f"http://127.0.0.1:{port}/mcp", record
    await asyncio.to_thread(stop, process)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_example_upstream_verifies_every_call(gateway: Gateway, example_upstream: tuple[str, Path],
                                                    mode: str) -> None:
    url, record = example_upstream
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        async def call(tool: str, arguments: dict[str, Any], token: str | None) -> Any:
            # A fresh token per call, as the gateway sends them: swap the client's default header.
            http.headers.pop("Authorization", None)
            if token is not None:
                http.headers["Authorization"] = f"Bearer {token}"
            return await client.call_tool(tool, arguments)

        token = gateway.mint(tool="echo", arguments={"text": "hi"})
        ok = await call("echo", {"text": "hi"}, token)
        assert not ok.is_error and ok.content[0].text == "hi"
        cases: list[tuple[str, dict[str, Any], Callable[[], str | None], str]] = [
            ("echo", {"text": "hi"}, lambda: token, "replayed token"),
            ("echo", {"text": "hi"}, lambda: None, "no bearer token"),
            ("echo", {"text": "bye"}, lambda: gateway.mint(tool="echo", arguments={"text": "hi"}), "args_sha256"),
            ("add", {"a": 1, "b": 2}, lambda: gateway.mint(tool="echo", arguments={"a": 1, "b": 2}), "(scope)"),
            ("add", {"a": 1, "b": 2}, lambda: gateway.mint(tool="add", arguments={"a": 1, "b": 2},
                                                           audience="https://other.example/mcp"), "(aud)"),
        ]
        for tool, arguments, make_token, reason in cases:
            result = await call(tool, arguments, make_token())
            assert result.is_error and reason in result.content[0].text, (tool, reason, result)
        added = await call("add", {"b": 2, "a": 1}, gateway.mint(tool="add", arguments={"a": 1, "b": 2}))
        assert not added.is_error and added.structured_content == {"result": 3}

    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [line["outcome"] for line in lines] == ["accepted"] + ["refused"] * len(cases) + ["accepted"]
    assert lines[0]["authorization"] == f"Bearer {token}"  # what reached the upstream, verbatim
    assert lines[0]["claims"]["args_sha256"] == argument_digest({"text": "hi"})

