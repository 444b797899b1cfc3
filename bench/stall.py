"""Reload stalls: how long a call waits while the gateway reloads policy or lists a large catalog.

``.venv/bin/python -m bench.stall [--tools 1000,5000] [--agents 16] [--sessions 3000] [--json out.json]``
``.venv/bin/python -m bench.stall --in-process [--tools 1000,5000]`` (CPU of one cold tools/list)

For each catalog size N: starts ``bench/upstream.py --bulk-tools N`` (it lists echo, add and N
echo tools) and the shifting test upstream (lookup, note, purge; it drops a tool when told),
writes catalog manifests with all of them and a copy of ``cedar/`` plus 30 harmless forbids over
every tool (so compiling the set takes what a real policy set of that size takes), starts the
gateway, and keeps 16 agents calling ``bench__echo`` back to back while it:

1. measures normal latency for a few seconds (p50, p99, max);
2. sends SIGHUP with the policy files unchanged;
3. changes a policy file and sends SIGHUP (until ``/healthz`` shows the new version, plus 1 s);
4. has another agent list its tools for the first time (all N+5 are visible to it);
5. opens ``--sessions`` idle 2025-11-25 sessions of 4 other agents (a tenth of them list their
   tools, so a change has lists to recompute and compare), then with them open: changes a policy
   file again, has the shifting upstream drop a tool (every session's list changes: re-list, new
   directory, policy catalog, and the list_changed pass over every session), and has a third
   agent list its tools.

For each event it reports the slowest call in flight during it, that divided by the normal p99,
when that call started (from the event's start) and how many calls took more than normal p99 +
100 ms (the issue's aim) out of all in flight: a long event (a 60 s compile) holds thousands of
calls, whose slowest is further out in the tail than a 4 s sample's p99 even with nothing wrong.
Every call is validated; every loop is bounded; only 127.0.0.1 is used. Exit status 1 if
any call failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python bench/stall.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import yaml

from bench.cpu import tree_cpu_s
from bench.load import Agent, CallFailure, Target
from bench.run import MANIFEST_ID, REPO, Proc, _read_line, free_port, start_gateway, write_gateway_files

TOKEN = "bench-stall-token"
LISTER, LISTER_TOKEN = "bench-lister", "bench-lister-token"
LATE_LISTER, LATE_LISTER_TOKEN = "bench-late-lister", "bench-late-lister-token"
COLD, COLD_TOKENS = "bench-cold", ("bench-cold-token-0", "bench-cold-token-1")  # for the CPU of a cold list
IDLE_AGENTS = 4  # the idle sessions belong to bench-idle-0 ... bench-idle-3
IDLE_OPENING = 32  # idle sessions opened at the same time
LISTED_SHARE = 10  # one idle session in this many lists its tools
SHIFTING = "shifting"
SHIFTING_TOOLS = ("lookup", "note", "purge")
SHIFTING_SERVER = REPO / "tests" / "fixtures" / "upstreams" / "shifting_server.py"
QUIET_POLICIES = 30
NORMAL_S = 4.0
CHANGE_TAIL_S = 1.0  # after a watched session heard of a dropped tool: the rest of the pass over sessions
EVENT_LIMIT_S = 300.0  # a reload that has not finished by then is reported as such


@dataclass
class Window:
    event: str
    seconds: float  # how long the event itself took
    worst_ms: float  # the slowest call in flight during it
    calls: int
    worst_at_s: float = 0.0  # when the slowest call started, from the event's start (negative: before it)
    over_aim: int = 0  # calls in flight that took more than normal p99 + 100 ms (the aim)


@dataclass
class SizeResult:
    tools: int
    normal_p50_ms: float = 0.0
    normal_p99_ms: float = 0.0
    normal_max_ms: float = 0.0
    events: list[Window] = field(default_factory=list)
    failures: int = 0
    cold_list_cpu_ms: list[float] = field(default_factory=list)  # gateway CPU: first list since start, then another
    sessions: int = 0  # idle sessions open during phase 5
    listed_sessions: int = 0


def quiet_policies(count: int, offset: int = 0) -> str:
    """Forbids that never match (no hour is >= 100), each validated against every tool's action."""
    return "\n".join(
        f'@id("quiet-{i}")\n@reason("never")\nforbid (principal, action in Action::"call_tool", resource) '
        f'when {{ context.request.hour == {100 + i} && resource.owner == "nobody-{i}" }};\n'
        for i in range(offset, offset + count))


def start_bulk_upstream(tmp: Path, tools: int) -> Proc:
    return start_upstream(tmp, "upstream", [sys.executable, "-m", "bench.upstream", "--port", "0",
                                            "--bulk-tools", str(tools)])


def start_upstream(tmp: Path, name: str, cmd: list[str]) -> Proc:
    """A server that prints `LISTENING <port>` once ready."""
    stderr_path = tmp / f"{name}.stderr"
    with stderr_path.open("wb") as err:
        popen = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    proc = Proc(name, popen, stderr_path, 0)
    line = _read_line(popen, 30.0)
    if not line.startswith("LISTENING "):
        proc.stop()
        raise RuntimeError(f"{name} did not start (got {line!r}):\n{proc.stderr_tail()}")
    proc.port = int(line.split()[1])
    return proc


def write_files(tmp: Path, upstream_port: int, gateway_port: int, tools: int, shifting_port: int,
                sessions: int) -> Path:
    """bench.run's files, with N more tools in the manifest, the shifting upstream, the quiet policies,
    agents that list and agents with idle sessions, and reloads from SIGHUP only."""
    cedar = tmp / "cedar"
    shutil.copytree(REPO / "cedar", cedar, ignore=shutil.ignore_patterns("tests", "README.md"))
    (cedar / "policies" / "70-quiet.cedar").write_text(quiet_policies(QUIET_POLICIES))
    path = write_gateway_files(tmp, upstream_port, gateway_port, cedar)
    manifest_path = tmp / "catalog" / f"{MANIFEST_ID}.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    bulk = {**manifest["tools"][0]}
    manifest["tools"] += [{**bulk, "name": f"tool{i:05d}"} for i in range(tools)]
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    shifting = {**manifest, "id": SHIFTING, "description": "drops a tool when told",
                "transport": {"url": f"http://127.0.0.1:{shifting_port}/mcp"},
                "tools": [{**bulk, "name": name} for name in SHIFTING_TOOLS]}
    (tmp / "catalog" / f"{SHIFTING}.yaml").write_text(yaml.safe_dump(shifting, sort_keys=False))
    agents_path = tmp / "agents.yaml"
    agents = yaml.safe_load(agents_path.read_text())
    agents["agents"][0]["entitlement"]["servers"].append(SHIFTING)
    template = json.dumps(agents["agents"][0])
    extra = {LISTER: LISTER_TOKEN, LATE_LISTER: LATE_LISTER_TOKEN,
             **{f"{COLD}-{k}": token for k, token in enumerate(COLD_TOKENS)},
             **{idle_agent(k): idle_token(k) for k in range(IDLE_AGENTS)}}
    # Each agent its own purpose: no two share a listing (see gateway.policy.tool_listing).
    agents["agents"] += [json.loads(template.replace("bench-agent", name).replace("benchmark load", f"bench {name}"))
                         for name in extra]
    agents_path.write_text(yaml.safe_dump(agents, sort_keys=False))
    config = yaml.safe_load(path.read_text())
    config["policy"] = {"watch_interval_s": 0}  # reloads come from SIGHUP here
    config["auth"]["static_tokens"] += [{"agent": name, "token": token} for name, token in extra.items()]
    config["limits"] = {"max_sessions_per_agent": sessions + 64, "max_sessions": sessions + 1024}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def idle_agent(k: int) -> str:
    return f"bench-idle-{k}"


def idle_token(k: int) -> str:
    return f"bench-idle-token-{k}"


class Load:
    """Agents calling back to back; every call's (start, end) in perf_counter seconds."""

    def __init__(self, url: str, agents: int) -> None:
        self.agents = [Agent(Target(url=url, tool=f"{MANIFEST_ID}__echo", token=TOKEN), f"a{i}")
                       for i in range(agents)]
        self.spans: list[tuple[float, float]] = []
        self.failures = 0
        self.stopping = False
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await asyncio.gather(*(a.open() for a in self.agents))
        self.tasks = [asyncio.create_task(self.run(a)) for a in self.agents]

    async def run(self, agent: Agent) -> None:
        n = 0
        while not self.stopping:
            n += 1
            started = time.perf_counter()
            try:
                await agent.call_echo(f"{agent.name}-{n}")
            except (CallFailure, aiohttp.ClientError, TimeoutError):
                self.failures += 1
            self.spans.append((started, time.perf_counter()))

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(a.close() for a in self.agents), return_exceptions=True)

    def in_flight(self, start: float, end: float) -> list[tuple[float, float]]:
        """(start, end) of the calls that were running at some moment in [start, end]."""
        return [(a, b) for a, b in self.spans if b >= start and a <= end]


async def healthz_version(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(f"{base}/healthz") as resp:
        return str((await resp.json())["policy"]["version"])


async def wait_for_new_version(http: aiohttp.ClientSession, base: str, before: str) -> None:
    deadline = time.monotonic() + EVENT_LIMIT_S
    while time.monotonic() < deadline:
        if await healthz_version(http, base) != before:
            return
        await asyncio.sleep(0.05)


async def list_once(url: str, expected: int, token: str = LISTER_TOKEN) -> None:
    lister = Agent(Target(url=url, tool=f"{MANIFEST_ID}__echo", token=token), "lister")
    await lister.open()
    try:
        reply = await lister._request("tools/list", {})
        listed = len(reply.get("result", {}).get("tools", []))
        if listed != expected:
            raise CallFailure(f"tools/list showed {listed} tools, expected {expected}")
    finally:
        await lister.close()


async def open_idle_sessions(url: str, count: int) -> tuple[int, dict[str, str]]:
    """`count` 2025-11-25 sessions that stay open and idle (no stream, no connection held), spread
    over the idle agents; one in LISTED_SHARE lists its tools first. Returns how many listed, and the
    headers of the first one that did (to watch its GET stream)."""
    listed = 0
    watched: dict[str, str] = {}
    gate = asyncio.Semaphore(IDLE_OPENING)
    connector = aiohttp.TCPConnector(limit=IDLE_OPENING)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:

        async def post(headers: dict[str, str], message: dict[str, object],
                       status: int = 200) -> aiohttp.ClientResponse:
            async with http.post(url, data=json.dumps(message), headers=headers) as resp:
                body = await resp.read()
                if resp.status != status or (status == 200 and b'"result"' not in body):
                    raise CallFailure(f"{message.get('method')}: HTTP {resp.status}: {body[:200]!r}")
                return resp

        async def one(i: int) -> None:
            nonlocal listed
            headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
                       "authorization": f"Bearer {idle_token(i % IDLE_AGENTS)}"}
            init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "idle", "version": "1"}}
            async with gate:
                resp = await post(headers, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
                headers = {**headers, "mcp-session-id": resp.headers["mcp-session-id"],
                           "mcp-protocol-version": "2025-11-25"}
                await post(headers, {"jsonrpc": "2.0", "method": "notifications/initialized"}, 202)
                if i % LISTED_SHARE == 0:
                    await post(headers, {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}})
                    listed += 1
                    if i == 0:
                        watched.update(headers)

        await asyncio.gather(*(one(i) for i in range(count)))
    return listed, watched


async def until_notified(url: str, headers: dict[str, str], method: str, action: Callable[[], Awaitable[None]]) -> None:
    """Open the session's GET stream, run `action`, and return once `method` arrives on the stream
    (the pass over every open session reached this one)."""
    timeout = aiohttp.ClientTimeout(total=EVENT_LIMIT_S)
    async with (aiohttp.ClientSession(timeout=timeout) as http,
                http.get(url, headers={**headers, "accept": "text/event-stream"}) as stream):
        if stream.status != 200:
            raise CallFailure(f"GET stream: HTTP {stream.status}")
        await action()
        seen = b""
        async for chunk in stream.content.iter_any():
            seen = (seen + chunk)[-4096:]
            if method.encode() in seen:
                return
    raise CallFailure(f"the stream ended before {method}")


async def shifting_control(port: int, op: dict[str, str]) -> None:
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
                http.post(f"http://127.0.0.1:{port}/control", json=op) as resp):
        body = await resp.json()
        if resp.status != 200 or not body.get("ok"):
            raise CallFailure(f"shifting upstream refused {op}: {body}")


async def window(load: Load, name: str, event: Callable[[], Awaitable[None]], tail_s: float,
                 normal_p99_ms: float) -> Window:
    start = time.perf_counter()
    await event()
    took = time.perf_counter() - start
    await asyncio.sleep(tail_s)  # work the event left behind (e.g. the pass over open sessions)
    spans = load.in_flight(start, time.perf_counter())
    if not spans:
        return Window(name, took, 0.0, 0)
    worst = max(spans, key=lambda span: span[1] - span[0])
    over = sum(1 for a, b in spans if (b - a) * 1000 > normal_p99_ms + 100)
    return Window(name, took, (worst[1] - worst[0]) * 1000, len(spans), worst[0] - start, over)


async def measure(tools: int, agents: int, gateway: Proc, tmp: Path, shifting_port: int,
                  sessions: int) -> SizeResult:
    base = f"http://127.0.0.1:{gateway.port}"
    result = SizeResult(tools)
    for token in COLD_TOKENS:  # the first is the first list since start: it builds the tool index too
        used = tree_cpu_s(gateway.pid)
        await list_once(f"{base}/mcp", tools + 5, token)
        result.cold_list_cpu_ms.append((tree_cpu_s(gateway.pid) - used) * 1000)
    load = Load(f"{base}/mcp", agents)
    await load.start()
    # This process must not stall itself: its own full collections (it holds thousands of sessions'
    # state) would show up as slow calls. Collected once here, then not during the measurements.
    gc.collect()
    gc.freeze()
    gc.disable()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        try:
            await asyncio.sleep(1.0)  # warm-up
            start = time.perf_counter()
            await asyncio.sleep(NORMAL_S)
            normal = sorted(b - a for a, b in load.spans if a >= start)
            result.normal_p50_ms = normal[len(normal) // 2] * 1000
            result.normal_p99_ms = normal[min(len(normal) - 1, int(len(normal) * 0.99))] * 1000
            result.normal_max_ms = normal[-1] * 1000

            async def sighup() -> None:
                os.kill(gateway.pid, signal.SIGHUP)
                await asyncio.sleep(0.5)

            async def changed() -> None:
                before = await healthz_version(http, base)
                (tmp / "cedar" / "policies" / "71-quiet.cedar").write_text(quiet_policies(8, QUIET_POLICIES))
                os.kill(gateway.pid, signal.SIGHUP)
                await wait_for_new_version(http, base, before)

            p99 = result.normal_p99_ms
            result.events.append(await window(load, "SIGHUP, policy unchanged", sighup, 1.5, p99))
            result.events.append(await window(load, "SIGHUP, a policy file changed", changed, 1.0, p99))
            result.events.append(await window(load, "another agent's first tools/list",
                                              lambda: list_once(f"{base}/mcp", tools + 5), 0.2,
                                              result.normal_p99_ms))
            if sessions:
                await with_sessions_open(load, result, http, base, gateway, tmp, tools, shifting_port, sessions)
        finally:
            gc.enable()
            await load.stop()
    result.failures = load.failures
    return result


async def with_sessions_open(load: Load, result: SizeResult, http: aiohttp.ClientSession, base: str,
                             gateway: Proc, tmp: Path, tools: int, shifting_port: int, sessions: int) -> None:
    """Phase 5: the same kinds of event with `sessions` idle sessions open."""
    started = time.perf_counter()
    gc.enable()
    result.listed_sessions, watched = await open_idle_sessions(f"{base}/mcp", sessions)
    gc.collect()
    gc.freeze()
    gc.disable()
    result.sessions = sessions
    print(f"  {sessions} idle sessions open in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    await asyncio.sleep(1.0)
    label = f"{sessions} sessions"

    async def changed() -> None:
        before = await healthz_version(http, base)
        (tmp / "cedar" / "policies" / "72-quiet.cedar").write_text(quiet_policies(4, QUIET_POLICIES + 8))
        os.kill(gateway.pid, signal.SIGHUP)
        await wait_for_new_version(http, base, before)

    result.events.append(await window(load, f"policy file changed, {label}", changed, 2.0, result.normal_p99_ms))
    # Until the session watched hears of it: re-list, rebuild, the policy catalog compiled on a worker
    # thread (the generated schema changed), then the pass over every session.
    drop = {"op": "remove", "name": "note"}
    result.events.append(await window(load, f"upstream dropped a tool, {label}", lambda: until_notified(
        f"{base}/mcp", watched, "notifications/tools/list_changed", lambda: shifting_control(shifting_port, drop)),
        CHANGE_TAIL_S, result.normal_p99_ms))
    result.events.append(await window(load, f"a third agent's first tools/list, {label}",
                                      lambda: list_once(f"{base}/mcp", tools + 4, LATE_LISTER_TOKEN), 0.2,
                                      result.normal_p99_ms))


def run_size(tools: int, agents: int, sessions: int, keep: Path | None = None) -> SizeResult:
    tmp = Path(tempfile.mkdtemp(prefix=f"narrowgate-stall-{tools}-"))
    upstream = start_bulk_upstream(tmp, tools)
    shifting = start_upstream(tmp, SHIFTING, [sys.executable, str(SHIFTING_SERVER), "--port", "0"])
    gateway: Proc | None = None
    try:
        port = free_port()
        config = write_files(tmp, upstream.port, port, tools, shifting.port, sessions)
        narrowgate = str(Path(sys.executable).parent / "narrowgate")
        gateway = start_gateway(tmp, [narrowgate], config, port, TOKEN, timeout_s=EVENT_LIMIT_S)
        return asyncio.run(measure(tools, agents, gateway, tmp, shifting.port, sessions))
    finally:
        if gateway is not None:
            gateway.stop()
        shifting.stop()
        upstream.stop()
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copy(tmp / "gateway.stderr", keep / f"gateway-{tools}.stderr")
        shutil.rmtree(tmp, ignore_errors=True)


def format_results(results: list[SizeResult], agents: int) -> str:
    lines = [f"Reload stalls ({agents} agents calling back to back; worst call in flight during each event)",
             f"{'tools':>6}  {'event':<48} {'took':>8} {'worst':>9} {'added':>9} {'/ p99':>7} {'at':>8} "
             f"{'over aim':>13}  normal p50 / p99 / max"]
    for r in results:
        for w in r.events:
            ratio = w.worst_ms / r.normal_p99_ms if r.normal_p99_ms else 0.0
            added = w.worst_ms - r.normal_p99_ms
            lines.append(f"{r.tools:>6}  {w.event:<48} {w.seconds:>7.2f}s {w.worst_ms:>7.0f}ms {added:>7.0f}ms "
                         f"{ratio:>6.1f}x {w.worst_at_s:>7.1f}s {w.over_aim:>5} / {w.calls:<6} "
                         f"{r.normal_p50_ms:.0f} / {r.normal_p99_ms:.0f} / {r.normal_max_ms:.0f} ms")
        if r.cold_list_cpu_ms:
            first, *others = r.cold_list_cpu_ms
            lines.append(f"{r.tools:>6}  gateway CPU of a cold tools/list (nothing else running): first since start "
                         f"{first:.0f} ms (builds the tool index), another agent's " +
                         ", ".join(f"{o:.0f} ms" for o in others))
        if r.sessions:
            lines.append(f"{r.tools:>6}  ({r.sessions} idle sessions in the last events, {r.listed_sessions} of them "
                         "had listed)")
        if r.failures:
            lines.append(f"{r.tools:>6}  {r.failures} call(s) FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", default="1000,5000", help="catalog sizes, comma-separated")
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--sessions", type=int, default=3000, help="idle sessions open in the last events (0: none)")
    parser.add_argument("--in-process", action="store_true",
                        help="only measure the CPU of one agent's cold tools/list in this process")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--keep-logs", type=Path, help="copy each gateway's log into this directory")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.tools.split(",") if s.strip()]
    if args.in_process:
        from bench.listing_cpu import main as listing_main
        return listing_main(sizes)
    results = []
    for size in sizes:
        print(f"  {size} tools ...", file=sys.stderr, flush=True)
        results.append(run_size(size, args.agents, args.sessions, args.keep_logs))
    print(format_results(results, args.agents))
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    if args.json is not None:
        with contextlib.suppress(OSError):
            args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"agents": args.agents, "loadavg": load,
                                         "results": [asdict(r) for r in results]}, indent=2))
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
