"""Load generator: plays MCP agents against a Streamable HTTP endpoint and validates every answer.

``python -m bench.load URL [--tool echo] [--token T] [--era 2025-11-25|2026-07-28] [--calls N]``

Phases: serial latency on one agent (p50, p99), then throughput with 16 and 64 concurrent agents,
each its own connection and (2025-11-25) its own MCP session. Every response is checked: HTTP
status, JSON-RPC id, no error, ``isError`` false, and the text content equal to what was sent.
Any failure makes the CLI exit non-zero. All loops are bounded by call counts and timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)
from mcp_types.version import LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION

LEGACY = LATEST_HANDSHAKE_VERSION  # "2025-11-25"
MODERN = LATEST_MODERN_VERSION  # "2026-07-28"
CLIENT_INFO = {"name": "narrowgate-bench-load", "version": "0.1.0"}
CALL_TIMEOUT_S = 30.0
MAX_ERRORS_KEPT = 5
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class CallFailure(Exception):
    """One call's answer was missing or wrong."""


@dataclass(frozen=True)
class Target:
    url: str
    tool: str = "echo"
    token: str | None = None
    era: str = LEGACY
    # More replicas of the same gateway: agent i talks to (url, *mirrors)[i % (1 + len(mirrors))].
    mirrors: tuple[str, ...] = ()

    def for_agent(self, index: int) -> Target:
        if not self.mirrors:
            return self
        urls = (self.url, *self.mirrors)
        return replace(self, url=urls[index % len(urls)], mirrors=())


@dataclass
class PhaseResult:
    name: str
    era: str
    agents: int
    calls: int
    failures: int = 0
    elapsed_s: float = 0.0
    calls_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: list[str] = field(default_factory=list)
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# A hook pair run.py uses to sample CPU exactly around a timed window (handshakes excluded).
Hook = Callable[[], None]


def require_loopback(url: str) -> None:
    """Refuse any target that is not on this machine."""
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise SystemExit(f"refusing non-loopback target {url!r}: benchmarks only hit 127.0.0.1")


def percentile(sorted_ns: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanosecond samples, in ms."""
    if not sorted_ns:
        return 0.0
    rank = max(1, min(len(sorted_ns), round(q / 100 * len(sorted_ns) + 0.5)))
    return sorted_ns[rank - 1] / 1e6


# ---------------------------------------------------------------------------- response parsing


def _parse_sse(body: bytes) -> list[Any]:
    messages: list[Any] = []
    for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
        if data.strip():  # a priming event (an id and a retry hint) carries no message
            messages.append(orjson.loads(data))
    return messages


def _find_response(content_type: str, body: bytes, req_id: int) -> dict[str, Any]:
    """Return the JSON-RPC response for ``req_id`` from a JSON or SSE body."""
    if content_type.startswith("text/event-stream"):
        messages = _parse_sse(body)
    else:
        decoded = orjson.loads(body)
        messages = decoded if isinstance(decoded, list) else [decoded]
    for msg in messages:
        if isinstance(msg, dict) and msg.get("id") == req_id and ("result" in msg or "error" in msg):
            return msg
    raise CallFailure(f"no response with id {req_id} in {body[:200]!r}")


def _check_echo(msg: dict[str, Any], text: str) -> None:
    if "error" in msg:
        raise CallFailure(f"JSON-RPC error {msg['error']}")
    result = msg["result"]
    if not isinstance(result, dict) or result.get("isError"):
        raise CallFailure(f"tool error result {str(result)[:200]}")
    content = result.get("content")
    got = content[0].get("text") if isinstance(content, list) and content else None
    if got != text:
        raise CallFailure(f"content {got!r} != sent {text!r}")


# ---------------------------------------------------------------------------- one agent


class Agent:
    """One MCP client: its own TCP connection, its own session (2025-11-25)."""

    def __init__(self, target: Target, name: str) -> None:
        self.target = target
        self.name = name
        self.http: aiohttp.ClientSession | None = None
        self.session_id: str | None = None
        self.ids = itertools.count(1)
        self.base_headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
        }
        if target.token:
            self.base_headers["authorization"] = f"Bearer {target.token}"

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=1, force_close=False)
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
        self.http = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        if self.target.era == LEGACY:
            await self._initialize()
        else:
            await self._discover()

    async def close(self) -> None:
        if self.http is None:
            return
        try:
            if self.session_id is not None:
                async with self.http.delete(self.target.url, headers=self._headers()) as resp:
                    await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            pass
        finally:
            await self.http.close()
            self.http = None

    async def call_echo(self, text: str) -> None:
        """One validated ``tools/call``; raises CallFailure on any wrong answer."""
        args = {"text": text}
        msg = await self._request("tools/call", {"name": self.target.tool, "arguments": args})
        _check_echo(msg, text)

    # -- protocol

    async def _initialize(self) -> None:
        params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": CLIENT_INFO}
        msg = await self._request("initialize", params)
        if "error" in msg:
            raise CallFailure(f"initialize failed: {msg['error']}")
        version = msg["result"].get("protocolVersion")
        if version != LEGACY:
            raise CallFailure(f"server negotiated {version!r}, wanted {LEGACY}")
        await self._notify("notifications/initialized")

    async def _discover(self) -> None:
        msg = await self._request("server/discover", {})
        if "error" in msg:
            raise CallFailure(f"server/discover failed: {msg['error']}")
        if MODERN not in msg["result"].get("supportedVersions", []):
            raise CallFailure(f"server does not support {MODERN}: {msg['result']}")

    def _headers(self, method: str | None = None, params: dict[str, Any] | None = None) -> dict[str, str]:
        headers = dict(self.base_headers)
        if self.target.era == MODERN:
            headers["mcp-protocol-version"] = MODERN
            if method is not None:
                headers["mcp-method"] = method
            if method == "tools/call" and params is not None:
                headers["mcp-name"] = params["name"]
        else:
            if self.session_id is not None:
                headers["mcp-session-id"] = self.session_id
                headers["mcp-protocol-version"] = LEGACY
        return headers

    def _envelope(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.target.era != MODERN:
            return params
        meta = {
            PROTOCOL_VERSION_META_KEY: MODERN,
            CLIENT_CAPABILITIES_META_KEY: {},
            CLIENT_INFO_META_KEY: CLIENT_INFO,
        }
        return {**params, "_meta": meta}

    async def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.http is not None, "agent not opened"
        req_id = next(self.ids)
        message = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": self._envelope(params)}
        body = orjson.dumps(message)
        async with self.http.post(self.target.url, data=body, headers=self._headers(method, params)) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise CallFailure(f"{method}: HTTP {resp.status}: {payload[:300]!r}")
            if method == "initialize":
                self.session_id = resp.headers.get("mcp-session-id")
            return _find_response(resp.headers.get("content-type", ""), payload, req_id)

    async def _notify(self, method: str) -> None:
        assert self.http is not None, "agent not opened"
        body = orjson.dumps({"jsonrpc": "2.0", "method": method})
        async with self.http.post(self.target.url, data=body, headers=self._headers(method)) as resp:
            await resp.read()
            if resp.status != 202:
                raise CallFailure(f"{method}: expected 202, got HTTP {resp.status}")


# ---------------------------------------------------------------------------- phases


class Tally:
    """Counts failures and keeps the first few messages."""

    def __init__(self) -> None:
        self.failures = 0
        self.errors: list[str] = []

    def fail(self, exc: BaseException) -> None:
        self.failures += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(f"{type(exc).__name__}: {exc}"[:400])


async def _timed_calls(agent: Agent, count: int, tag: str, tally: Tally, samples: list[int]) -> None:
    for i in range(count):
        text = f"{tag}-{i}"
        t0 = time.perf_counter_ns()
        try:
            await agent.call_echo(text)
        except (CallFailure, aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            tally.fail(exc)
            continue
        samples.append(time.perf_counter_ns() - t0)


async def _open_agents(target: Target, count: int, tally: Tally) -> list[Agent]:
    agents = [Agent(target.for_agent(i), f"agent{i}") for i in range(count)]
    results = await asyncio.gather(*(a.open() for a in agents), return_exceptions=True)
    opened: list[Agent] = []
    for agent, res in zip(agents, results, strict=True):
        if isinstance(res, BaseException):
            tally.fail(res)
            await agent.close()
        else:
            opened.append(agent)
    return opened


def _finish(result: PhaseResult, tally: Tally, samples: list[int], elapsed_s: float) -> PhaseResult:
    samples.sort()
    result.failures = tally.failures
    result.errors = tally.errors
    result.elapsed_s = elapsed_s
    result.calls_per_s = len(samples) / elapsed_s if elapsed_s > 0 else 0.0
    result.p50_ms = percentile(samples, 50)
    result.p99_ms = percentile(samples, 99)
    return result


async def run_phase(
    target: Target,
    name: str,
    agents: int,
    calls: int,
    warmup: int = 0,
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
) -> PhaseResult:
    """Open ``agents`` agents, warm up, then time ``calls`` validated calls spread across them."""
    for url in (target.url, *target.mirrors):
        require_loopback(url)
    result = PhaseResult(name=name, era=target.era, agents=agents, calls=calls)
    tally = Tally()
    opened = await _open_agents(target, agents, tally)
    try:
        if len(opened) < agents:
            return _finish(result, tally, [], 0.0)
        per_agent = [calls // agents + (1 if i < calls % agents else 0) for i in range(agents)]
        warm = [warmup // agents + 1 if warmup else 0 for _ in range(agents)]
        scratch = Tally()
        await asyncio.gather(
            *(_timed_calls(a, n, f"w{a.name}", scratch, []) for a, n in zip(opened, warm, strict=True))
        )
        if scratch.failures:  # a broken target fails the phase at once instead of `calls` times
            tally.failures += scratch.failures
            room = MAX_ERRORS_KEPT - len(tally.errors)
            tally.errors.extend(f"warm-up: {e}" for e in scratch.errors[:room])
            return _finish(result, tally, [], 0.0)
        samples: list[int] = []
        if on_start:
            on_start()
        t0 = time.perf_counter()
        runs = zip(opened, per_agent, strict=True)
        await asyncio.gather(*(_timed_calls(a, n, f"{name}-{a.name}", tally, samples) for a, n in runs))
        elapsed = time.perf_counter() - t0
        if on_stop:
            on_stop()
        return _finish(result, tally, samples, elapsed)
    finally:
        await asyncio.gather(*(a.close() for a in opened))


# ---------------------------------------------------------------------------- CLI


def format_row(r: PhaseResult) -> str:
    return (
        f"{r.name:<14} era={r.era} agents={r.agents:<3} calls={r.calls:<6} fail={r.failures:<3} "
        f"p50={r.p50_ms:7.3f}ms p99={r.p99_ms:7.3f}ms {r.calls_per_s:9.1f} calls/s"
    )


async def run_all(target: Target, calls: int, agent_counts: Sequence[int]) -> list[PhaseResult]:
    results = [await run_phase(target, "serial", 1, calls, warmup=min(200, calls))]
    for n in agent_counts:
        results.append(await run_phase(target, f"concurrent-{n}", n, calls, warmup=n * 5))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MCP load generator (validating)")
    parser.add_argument("url")
    parser.add_argument("--tool", default="echo", help="tool name as the endpoint exposes it")
    parser.add_argument("--token", default=None, help="bearer token")
    parser.add_argument("--era", choices=(LEGACY, MODERN), default=LEGACY)
    parser.add_argument("--calls", type=int, default=2000, help="calls per phase")
    parser.add_argument("--agents", default="16,64", help="comma-separated concurrency levels")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    target = Target(url=args.url, tool=args.tool, token=args.token, era=args.era)
    agent_counts = [int(x) for x in args.agents.split(",") if x]
    results = _run(run_all(target, args.calls, agent_counts))
    if args.json:
        print(orjson.dumps([r.as_dict() for r in results], option=orjson.OPT_INDENT_2).decode())
    else:
        for r in results:
            print(format_row(r))
            for err in r.errors:
                print(f"    {err}")
    return 1 if any(r.failures for r in results) else 0


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    sys.exit(main())
