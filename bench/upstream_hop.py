"""One upstream POST round trip, aiohttp vs the lean client (gateway/upstream/http1.py), counted in process.

Starts `bench/upstream.py` as its own process, then in this process (uvloop) sends N stateless
2026-07-28 `tools/call`s to it with the chosen client, each built and read as
`gateway/upstream/http_client.py` does (headers, orjson body, JSON reply parsed). Run it under
callgrind with N=0 and N=2000: the difference over 2000 is the instructions of one round trip on
the gateway's side, independent of the machine's load:

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python -m bench.upstream_hop --client lean --calls 2000
    python -m bench.upstream_hop --compare   # both clients, N=0 and N=2000, under callgrind; prints the table
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

import orjson

from bench.callgrind import module_instructions
from gateway.protocol.eras import MODERN_ERA
from gateway.upstream.base import CallContext, modern_params
from gateway.upstream.http1 import Http1Client, header_lines, origin_of

AUTH = {"Authorization": "Bearer " + "x" * 600}  # about the size of a per-call ES256 token


def start_upstream() -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, "-m", "bench.upstream", "--port", "0"], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, int(line.split()[1])


def body_for(request_id: int) -> dict[str, Any]:
    params = modern_params({"name": "echo", "arguments": {"text": "hello"}},
                           CallContext(era=MODERN_ERA, timeout_s=10))
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def run_aiohttp(url: str, calls: int) -> None:
    import aiohttp

    base = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
            "MCP-Protocol-Version": MODERN_ERA}
    connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=4.0, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                                     cookie_jar=aiohttp.DummyCookieJar()) as http:
        for request_id in range(1, calls + 2):  # one warm-up call
            body = body_for(request_id)
            headers = {**base, **AUTH, "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
            async with http.post(url, data=orjson.dumps(body), headers=headers) as resp:
                reply = orjson.loads(await resp.read())
            assert reply["result"]["content"][0]["text"] == "hello", reply


async def run_lean(url: str, calls: int) -> None:
    origin = origin_of(url)
    block = (f"POST {origin.target} HTTP/1.1\r\nHost: {origin.authority}\r\n"
             + header_lines({"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                             "Accept-Encoding": "gzip, deflate", "MCP-Protocol-Version": MODERN_ERA}))
    client = Http1Client(origin, 4.0)
    for request_id in range(1, calls + 2):
        body = body_for(request_id)
        head = block + header_lines({**AUTH, "Mcp-Method": "tools/call", "Mcp-Name": "echo"})
        async with client.request(head, orjson.dumps(body)) as reply:
            chunks = []
            while chunk := await reply.read_chunk():
                chunks.append(chunk)
            reply_body = orjson.loads(b"".join(chunks))
        assert reply_body["result"]["content"][0]["text"] == "hello", reply_body
    client.close()
    assert client.opened == 1, "every call after the first reused the kept-alive connection"


def counted(client: str, calls: int, port: int) -> int:
    return module_instructions(["bench.upstream_hop", "--client", client, "--calls", str(calls), "--port", str(port)])


def compare(calls: int) -> None:
    upstream, port = start_upstream()
    try:
        print("| client | instructions per POST round trip |\n| --- | ---: |")
        for client in ("aiohttp", "lean"):
            per_call = (counted(client, calls, port) - counted(client, 0, port)) / calls
            print(f"| {client} | {per_call / 1000:,.1f}k |")
    finally:
        upstream.terminate()
        upstream.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=("aiohttp", "lean"), default="lean")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--port", type=int, default=0, help="an upstream already listening (default: start one)")
    parser.add_argument("--compare", action="store_true", help="count both clients under callgrind")
    args = parser.parse_args(argv)
    if args.compare:
        compare(args.calls)
        return 0
    import uvloop

    upstream, port = (None, args.port) if args.port else start_upstream()
    try:
        run = run_aiohttp if args.client == "aiohttp" else run_lean
        uvloop.run(run(f"http://127.0.0.1:{port}/mcp", args.calls))
    finally:
        if upstream is not None:
            upstream.terminate()
            upstream.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
