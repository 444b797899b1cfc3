"""Instructions of the call path's edge stages, one operation at a time, counted in process by callgrind.

Each operation is built as the gateway builds it, then repeated N times on uvloop (the gateway's loop, with
50 unrelated timers pending as on a running gateway). Under callgrind at N=0 and N=K the difference over K
is one operation's instructions, independent of the machine's load (docs/performance.md):

    python -m bench.edges --op deadline --calls 2000          # run one operation N times
    python -m bench.edges --compare --calls 2000              # every operation, N=0 and N=K under callgrind

Operations:
    timeout    a call's timeout as `asyncio.timeout` (what main had): enter, await a finished step, leave
    deadline   the same on shared timers (gateway/upstream/deadlines.py)
    mint       one per-call upstream token (`UpstreamAuth.token_headers`: claims, JSON, base64url, ES256 signature)
    sign       the ES256 signature of a 450-byte input alone (cryptography), for scale
    layer      `bare` behind one more coroutine frame (subtract `bare`: one frame's cost)
    stage      a telemetry stage with tracing off, entered and left (subtract `nothing`)
    nothing    a plain call of a lambda
    hop-legacy one tools/call through `HttpUpstream.call` (2025-11-25 session) to bench/upstream.py, reply read
    hop-modern the same, stateless 2026-07-28
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bench.callgrind import module_instructions

Step = Callable[[], Awaitable[object] | object]


async def op_timeout() -> Step:
    async def step() -> None:
        async with asyncio.timeout(30.0):
            await asyncio.sleep(0)
    return step


async def op_deadline() -> Step:
    from gateway.upstream.deadlines import Deadlines

    deadlines = Deadlines()

    async def step() -> None:
        with deadlines.within(30.0):
            await asyncio.sleep(0)
    return step


async def op_bare() -> Step:
    """What `timeout` and `deadline` wrap, alone (subtract it to get the timeout's own cost)."""
    async def step() -> None:
        await asyncio.sleep(0)
    return step


async def op_layer() -> Step:
    """`bare` behind one more coroutine frame (what handing a coroutine on instead of awaiting it saves)."""
    async def inner() -> None:
        await asyncio.sleep(0)

    async def step() -> None:
        await inner()
    return step


async def op_stage() -> Step:
    """A no-op telemetry stage with tracing off (`with telemetry.stage("mint"): pass`)."""
    from gateway.telemetry import Telemetry

    telemetry = Telemetry.from_env({})

    def step() -> None:
        with telemetry.stage("mint"):
            pass
    return step


async def op_nothing() -> Step:
    return lambda: None


def _keyring() -> Any:
    from gateway.credentials.keys import SigningKeyring, _new_record, _snapshot_of

    return SigningKeyring(None, time.time, _snapshot_of([_new_record(time.time())]))  # type: ignore[arg-type]


async def op_mint() -> Step:
    from gateway.catalog.model import Credentials, HttpTransport, ServerEntry
    from gateway.credentials.secret_sources import SecretResolver
    from gateway.credentials.upstream_auth import UpstreamAuth
    from gateway.credentials.upstream_tokens import UpstreamTokenMinter
    from gateway.identity.principal import Principal
    from gateway.verifier import argument_digest

    auth = UpstreamAuth("https://gateway.example", SecretResolver())
    auth.keyring = _keyring()
    auth.minter = UpstreamTokenMinter(auth.keyring, auth.issuer)
    server = ServerEntry(id="bench", namespace="bench", owner="bench", description="", timeout_s=30.0,
                         transport=HttpTransport(url="http://127.0.0.1:9/mcp"), tools=MappingProxyType({}),
                         source=Path("bench.yaml"),
                         credentials=Credentials(mode="gateway-token", resource="http://127.0.0.1:9/mcp"))
    principal = Principal(agent_id="bench-agent", auth_method="static-token")  # as a static token's
    digest = argument_digest({"text": "hello"})

    def step() -> dict[str, str]:  # what the credential stage does for a gateway-token upstream
        return auth.token_headers(server.credentials, principal, "echo", digest, None, os.urandom(16).hex())
    return step


async def op_hop(era: str) -> Step:
    """One tools/call through HttpUpstream.call to bench/upstream.py (its own process), as Forward sends it."""
    from gateway.catalog.model import HttpTransport, ServerEntry
    from gateway.upstream.base import CallContext
    from gateway.upstream.http_client import HttpUpstream

    upstream, port = _upstream()
    server = ServerEntry(id="bench", namespace="bench", owner="bench", description="", timeout_s=30.0,
                         transport=HttpTransport(url=f"http://127.0.0.1:{port}/mcp"), tools=MappingProxyType({}),
                         source=Path("bench.yaml"))

    async def no_events(server_id: str, message: dict[str, Any]) -> None:
        return None

    async def discovery() -> dict[str, str]:
        return {"Authorization": "Bearer discovery"}

    client = HttpUpstream(server, no_events, discovery)
    await client.start()
    auth = {"Authorization": "Bearer " + "x" * 600}  # about the size of a per-call ES256 token
    params = {"name": "echo", "arguments": {"text": "hello"}}

    async def step() -> None:
        ctx = CallContext(era=era, timeout_s=server.timeout_s, auth=auth)
        reply = await client.call("tools/call", params, ctx)
        assert reply["result"]["content"][0]["text"] == "hello", reply
    _KEEP.append((upstream, client))
    return step


_KEEP: list[Any] = []


def _upstream() -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, "-m", "bench.upstream", "--port", "0"], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline().split()[1])


async def op_hop_legacy() -> Step:
    from gateway.protocol.eras import LEGACY_ERA

    return await op_hop(LEGACY_ERA)


async def op_hop_modern() -> Step:
    from gateway.protocol.eras import MODERN_ERA

    return await op_hop(MODERN_ERA)


async def op_sign() -> Step:
    from gateway.credentials.keys import _ECDSA_SHA256

    key = _keyring()._snapshot.current.private
    data = b"x" * 450
    return lambda: key.sign(data, _ECDSA_SHA256)


OPS: dict[str, Callable[[], Awaitable[Step]]] = {
    "bare": op_bare, "timeout": op_timeout, "deadline": op_deadline, "mint": op_mint, "sign": op_sign,
    "hop-legacy": op_hop_legacy, "hop-modern": op_hop_modern, "layer": op_layer, "stage": op_stage,
    "nothing": op_nothing,
}


async def run(op: str, calls: int) -> None:
    loop = asyncio.get_running_loop()
    for index in range(50):  # a running gateway's loop has timers pending (keep-alives, sweeps)
        loop.call_later(3600 + index, lambda: None)
    step = await OPS[op]()
    result = step()  # one warm-up (caches, first-use imports)
    if asyncio.iscoroutine(result):
        await result
    for _ in range(calls):
        result = step()
        if asyncio.iscoroutine(result):
            await result
    for process, client in _KEEP:
        await client.close()
        process.terminate()
        process.wait()


def counted(op: str, calls: int) -> int:
    return module_instructions(["bench.edges", "--op", op, "--calls", str(calls)])


def compare(ops: list[str], calls: int) -> None:
    print("| operation | instructions per operation |\n| --- | ---: |")
    for op in ops:
        per_call = (counted(op, calls) - counted(op, 0)) / calls
        print(f"| {op} | {per_call / 1000:,.1f}k |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--op", choices=sorted(OPS), default="deadline")
    parser.add_argument("--ops", default=",".join(OPS), help="with --compare: which operations")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--compare", action="store_true", help="count the operations under callgrind")
    args = parser.parse_args(argv)
    if args.compare:
        compare(args.ops.split(","), args.calls)
        return 0
    import uvloop

    uvloop.run(run(args.op, args.calls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
