"""Narrowgate benchmark: the same validated MCP load straight at an upstream, through the floor, and
through the gateway, in one run.

``.venv/bin/python -m bench.run [--calls N] [--json out.json]`` (or ``python bench/run.py``)

1. starts ``bench/upstream.py`` on a free loopback port;
2. writes a temporary catalog (one manifest for the upstream), an agents file and a config (a bearer
   token bound to a registered agent, via ``token_env``), and starts the floor
   (``bench/passthrough.py``, the cheapest Python proxy hop) and the gateway
   (``.venv/bin/narrowgate serve --config CFG``), waiting for ``GET /healthz`` on each;
3. runs every phase (serial latency, throughput at 16 and 64 agents in the 2025-11-25 era, serial and
   16 agents in the 2026-07-28 era) against the upstream, the floor and the gateway in turn, phase by
   phase, so the three are measured under the same machine load;
4. prints one table (direct, floor, gateway, gateway/floor) with the proxy's CPU ms per call sampled
   from /proc around every timed window, the added latency and the throughput, then the line for
   issue 19's aim (gateway CPU per call at 16 agents within 2.5x of the floor); ``--json PATH``
   writes everything.

Scale-out (issue 15): ``--postgres`` adds a side ``gw-pg``, one gateway process with its state in
PostgreSQL and ``cluster.redis_url`` set: what the fleet's stores cost per call over the single SQLite
process. ``--workers N`` adds a side ``gw-Nw``, the gateway as N worker processes
(``narrowgate serve --workers N``), and ``--replicas N`` a side ``gw-Nr``, N gateways with agents
spread over them (agent i talks to replica i mod N); either implies ``gw-pg``. Every such side has a
fresh database of its own on one throwaway PostgreSQL and a key prefix of its own on one throwaway
Redis (both started as the tests start theirs, tests/support/engines.py; their CPU is the
``postgres`` and ``redis`` rows). The proxy CPU of these sides is that of every process of the
gateway (parent, workers, replicas); the ratio columns ``gw-pg/gw``, ``gw-Nw/gw`` and ``gw-Nr/gw``
compare them with the single process. After the phases, ``gw-Nr`` measures how long a suspension
made on one replica takes to be refused by every replica (bench/revocation.py; the rows
``revocation to every replica``).

Exit status: 0 when every call of every phase was answered correctly; 1 when any call failed;
2 when the floor or the gateway could not be started or reached (the rest is still printed).
Only 127.0.0.1 is ever targeted; every loop is bounded by a call count and a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # `python bench/run.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import orjson
import yaml

from bench.cpu import CpuMeter, system_key
from bench.load import LEGACY, MODERN, PhaseResult, Target, run_phase
from bench.revocation import Revocable, measure

if TYPE_CHECKING:
    from tests.support.engines import Engine

REPO = Path(__file__).resolve().parent.parent
MANIFEST_ID = "bench"
DIRECT, FLOOR, BEFORE, GATEWAY = "direct", "floor", "before", "gateway"
PROXY = "proxy"  # the CPU of the hop under test: bench/passthrough.py for the floor, the gateway otherwise
TARGET_PHASE = "concurrent-16"
TARGET_RATIO = 2.5
PG_SIDE, PG_AIM_US = "gw-pg", 100  # issue 15: CPU per call on PostgreSQL + Redis at most +100 us over SQLite
THROUGHPUT_PHASE, WORKERS_AIM = "concurrent-64", 1.5  # issue 15: 2 workers >= 1.5x one process at 64 agents
TOKEN_ENV = "NARROWGATE_BENCH_TOKEN"
STDERR_TAIL = 4000


class GatewayError(RuntimeError):
    """The gateway did not start, or did not become healthy."""


@dataclass
class Plan:
    calls: int
    agents: list[int]
    modern_agents: list[int]
    eras: list[str]
    rounds: int = 1


@dataclass
class Side:
    """Results of all phases against one endpoint."""

    label: str
    phases: list[PhaseResult] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    calls: int = 0
    revocation: dict[str, Any] | None = None  # gw-Nr only: bench.revocation.measure's figures

    def add(self, phase: PhaseResult, meter: CpuMeter) -> None:
        phase.cpu_ms_per_call = meter.ms_per_call(phase.calls)
        self.phases.append(phase)
        self.calls += phase.calls
        for name, used in meter.used_s.items():
            self.cpu_s[name] = self.cpu_s.get(name, 0.0) + used

    def cpu_ms_per_call(self) -> dict[str, float]:
        return {k: v * 1000 / self.calls for k, v in self.cpu_s.items()} if self.calls else {}

    def failures(self) -> int:
        return sum(p.failures for p in self.phases) + int((self.revocation or {}).get("failures", 0))

    def phase(self, name: str, era: str) -> PhaseResult | None:
        """The phase's best round: the least CPU of the hop under test (of the upstream for direct).
        Other work on a shared machine only ever adds CPU time (cache and core contention), so the
        least of several rounds is the steadiest estimate of what a call itself costs."""
        rounds = [p for p in self.phases if p.name == name and p.era == era]
        return min(rounds, key=_own_cpu, default=None)


def _own_cpu(phase: PhaseResult) -> float:
    cpu = phase.cpu_ms_per_call
    return cpu.get(PROXY, cpu.get("upstream", 0.0))


# ---------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    stderr_path: Path
    port: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr_tail(self) -> str:
        try:
            data = self.stderr_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[-STDERR_TAIL:].decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM our own process group (started with start_new_session), then SIGKILL."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)


def start_upstream(tmp: Path, impl: str, timeout_s: float = 15.0) -> Proc:
    """Start bench.upstream on a free port and wait for its ``LISTENING <port>`` line."""
    stderr_path = tmp / "upstream.stderr"
    cmd = [sys.executable, "-m", "bench.upstream", "--port", "0", "--impl", impl]
    with stderr_path.open("wb") as err:
        popen = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    proc = Proc("upstream", popen, stderr_path, 0)
    line = _read_line(popen, timeout_s)
    if not line.startswith("LISTENING "):
        proc.stop()
        raise RuntimeError(f"upstream did not start (got {line!r}):\n{proc.stderr_tail()}")
    proc.port = int(line.split()[1])
    return proc


def _read_line(popen: subprocess.Popen[bytes], timeout_s: float) -> str:
    """First stdout line of ``popen``, or "" on timeout or exit (bounded wait)."""
    assert popen.stdout is not None
    os.set_blocking(popen.stdout.fileno(), False)
    deadline = time.monotonic() + timeout_s
    buf = b""
    while time.monotonic() < deadline and b"\n" not in buf:
        chunk = popen.stdout.read()
        if chunk:
            buf += chunk
        elif popen.poll() is not None:
            break
        else:
            time.sleep(0.02)
    return buf.split(b"\n", 1)[0].decode(errors="replace").strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_gateway_files(tmp: Path, upstream_port: int, gateway_port: int, policies: Path,
                        name: str = "gateway", policy: dict[str, Any] | None = None) -> Path:
    """Write a catalog manifest for the upstream and a gateway config (`<name>.yaml`); return its path.

    What it turns on is what a deployment has: a registered agent (agents file, lifecycle active,
    entitled to the server) authenticating with a bearer token bound to it, the shipped policies, a
    per-call ES256 upstream token (the manifest's default credentials mode, `gateway-token`), the
    audit log in the SQLite state store (one hash-chained record per call, `synchronous=FULL`) and
    the metrics (always collected for `/metrics`). Tracing stays off, as by default (it needs an OTLP
    endpoint); per-agent rate limits are off so one agent may send thousands of calls a second."""
    catalog = tmp / "catalog"
    catalog.mkdir(exist_ok=True)
    owner = "bench@narrowgate.invalid"
    tools = [{"name": name, "risk": "read", "data_classes": ["public"], "owner": owner} for name in ("echo", "add")]
    manifest = {
        "id": MANIFEST_ID,
        "owner": owner,
        "description": "Narrowgate benchmark upstream (echo, add)",
        "transport": {"url": f"http://127.0.0.1:{upstream_port}/mcp"},
        "timeout_s": 30,
        "tools": tools,
    }
    (catalog / f"{MANIFEST_ID}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    agents = {"agents": [{
        "id": "bench-agent", "owner": "bench@example.com", "purpose": "benchmark load", "state": "active",
        "identities": [{"kind": "static", "issuer": "narrowgate", "subject": "bench-agent"}],
        "entitlement": {"servers": [MANIFEST_ID], "require_task": False},
    }]}
    (tmp / "agents.yaml").write_text(yaml.safe_dump(agents, sort_keys=False))
    config = {
        "agents_file": str(tmp / "agents.yaml"),
        # One agent sends thousands of calls per second here; real agents get the default rate limits.
        "monitoring": {"per_agent": None, "per_task": None},
        "listen": f"127.0.0.1:{gateway_port}",
        "catalog": "catalog/",
        "policies": str(policies),
        "state": f"sqlite:///{tmp / 'state.db'}",
        "auth": {
            "open_loopback": False,
            "static_tokens": [{"agent": "bench-agent", "token_env": TOKEN_ENV}],
        },
        **({"policy": policy} if policy else {}),
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_gateway(tmp: Path, base_cmd: list[str], config: Path, port: int, token: str, timeout_s: float,
                  name: str = "gateway") -> Proc:
    """Start ``<base_cmd> serve --config CFG``; wait until ``/healthz`` answers 200, else GatewayError."""
    if not base_cmd or shutil.which(base_cmd[0]) is None:
        raise GatewayError(f"gateway executable {base_cmd[0]} not found (pip install -e . in the venv?)")
    stderr_path = tmp / f"{name}.stderr"
    env = {**os.environ, TOKEN_ENV: token}
    cmd = [*base_cmd, "serve", "--config", str(config)]
    with stderr_path.open("wb") as err:
        popen = subprocess.Popen(
            cmd, cwd=tmp, env=env, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    proc = Proc(name, popen, stderr_path, port)
    try:
        asyncio.run(_wait_healthy(proc, timeout_s))
    except GatewayError:
        proc.stop()
        raise
    return proc


async def _wait_healthy(proc: Proc, timeout_s: float) -> None:
    url = f"http://127.0.0.1:{proc.port}/healthz"
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            if (code := proc.popen.poll()) is not None:
                tail = proc.stderr_tail()
                raise GatewayError(f"gateway exited with status {code} during start-up:\n{tail}")
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.1)
    raise GatewayError(f"gateway not healthy at {url} after {timeout_s:.0f}s (last: {last}):\n{proc.stderr_tail()}")


# ---------------------------------------------------------------------------- phases


@dataclass
class Endpoint:
    """One side of the comparison: where the load goes and whose CPU is read."""

    label: str
    target: Target
    pids: dict[str, int | tuple[int, ...]]


async def bench_sides(endpoints: list[Endpoint], plan: Plan) -> dict[str, Side]:
    """Every phase against every endpoint, interleaved (phase by phase, round by round), so that a change
    in the machine's load during the run shifts all sides alike and the ratios stay comparable."""
    sides = {e.label: Side(e.label) for e in endpoints}
    for era in plan.eras:
        levels = plan.agents if era == LEGACY else plan.modern_agents
        runs = [("serial", 1), *((f"concurrent-{n}", n) for n in levels)]
        for (name, agents), _, endpoint in itertools.product(runs, range(plan.rounds), endpoints):
            era_target = replace(endpoint.target, era=era)
            meter = CpuMeter(endpoint.pids)
            warmup = min(200, plan.calls) if agents == 1 else agents * 5
            phase = await run_phase(era_target, name, agents, plan.calls, warmup, meter.start, meter.stop)
            sides[endpoint.label].add(phase, meter)
            print(f"  {endpoint.label:<8} {_phase_line(phase)}", file=sys.stderr, flush=True)
    return sides


def _phase_line(p: PhaseResult) -> str:
    cpu = " ".join(f"{k}={v:.3f}" for k, v in p.cpu_ms_per_call.items())
    return (
        f"{p.era} {p.name:<14} fail={p.failures:<3} p50={p.p50_ms:.3f}ms p99={p.p99_ms:.3f}ms "
        f"{p.calls_per_s:8.0f}/s cpu_ms/call[{cpu}]"
    )


@dataclass
class Outcome:
    sides: dict[str, Side]
    error: str | None = None  # why the floor or the gateway could not be measured


def run_sides(args: argparse.Namespace, plan: Plan, tmp: Path) -> Outcome:
    """Start the upstream, the floor (bench/passthrough.py) and the gateway, then measure all three."""
    upstream = start_upstream(tmp, args.upstream_impl)
    procs: list[Proc] = []
    engines = Engines()
    try:
        endpoints = [Endpoint(DIRECT, Target(f"http://127.0.0.1:{upstream.port}/mcp"), {"upstream": upstream.pid})]
        token = secrets.token_urlsafe(32)
        policies = Path(args.policies).resolve()
        error: str | None = None
        wanted = [(FLOOR, [sys.executable, str(REPO / "bench" / "passthrough.py")])] if not args.no_floor else []
        if args.compare:
            wanted.append((BEFORE, shlex.split(args.compare)))
        if not args.no_gateway:
            wanted.append((GATEWAY, shlex.split(args.gateway_cmd)))
        for label, cmd in wanted:
            port = free_port()
            before_policy = {"record_retention": 0} if label == BEFORE and args.compare_unrecorded else None
            config = write_gateway_files(tmp, upstream.port, port, policies, name=label, policy=before_policy)
            try:
                proc = start_gateway(tmp, cmd, config, port, token, args.startup_timeout, name=label)
            except GatewayError as exc:
                error = f"{label}: {exc}"
                continue
            procs.append(proc)
            target = Target(f"http://127.0.0.1:{port}/mcp", tool=f"{MANIFEST_ID}__echo", token=token)
            if label == GATEWAY and args.sdk_check and (problem := sdk_check(target)):
                error = problem
                continue
            endpoints.append(Endpoint(label, target, {PROXY: proc.pid, "upstream": upstream.pid}))
        wanted_out = scale_out_sides(args)
        if wanted_out:
            try:
                engines = start_engines(engines)
            except RuntimeError as exc:  # EngineError
                error = f"scale-out sides: {exc}"
        launch = Launch(tmp, shlex.split(args.gateway_cmd), upstream.port, policies, token, args.startup_timeout,
                        Revocable.new())
        fleet: tuple[str, list[Proc]] | None = None  # the replicas, for the revocation phase
        for label, start, count in wanted_out:
            if engines.redis is None or engines.postgres is None:
                break
            try:
                started = start(launch, engines.redis.url, fresh_database(engines.postgres, label), label, count)
            except (GatewayError, OSError) as exc:
                error = f"{label}: {exc}"
                continue
            procs.extend(started)
            endpoints.append(scale_out_endpoint(label, started, token, upstream, engines))
            fleet = (label, started) if start is start_replicas else fleet
        sides = _run(bench_sides(endpoints, plan))
        if fleet is not None:
            sides[fleet[0]].revocation = revocation_phase(fleet[1], launch.revocable)
        for proc in procs:
            if proc.popen.poll() is not None:
                error = f"{proc.name} exited during the run:\n{proc.stderr_tail()}"
        return Outcome(sides, error)
    finally:
        for proc in procs:
            proc.stop()
        upstream.stop()
        engines.stop()


# ---------------------------------------------------------------------------- scale-out sides


@dataclass
class Launch:
    """What every gateway of the run is started with."""

    tmp: Path
    cmd: list[str]
    upstream_port: int
    policies: Path
    token: str
    timeout_s: float
    revocable: Revocable  # the replicas' agents for the revocation phase


# (launch, redis url, state url, label, count) -> its processes
StartSide = Callable[[Launch, str, str, str, int], list[Proc]]


@dataclass
class Engines:
    """The throwaway PostgreSQL and Redis every scale-out side shares (each its own database and key prefix)."""

    postgres: Engine | None = None
    redis: Engine | None = None

    def stop(self) -> None:
        for engine in (self.redis, self.postgres):
            if engine is not None:
                engine.stop()


def start_engines(engines: Engines) -> Engines:
    """Start both (the tests' throwaway engines, reused); raises EngineError, keeping what started in `engines`."""
    from tests.support.engines import start_postgres, start_redis

    engines.redis = start_redis()
    engines.postgres = start_postgres()
    return engines


def fresh_database(postgres: Engine, label: str) -> str:
    """A new database for one side on the throwaway server; its URL."""
    import asyncpg  # type: ignore[import-untyped]

    name = "bench_" + label.replace("-", "_")

    async def create() -> None:
        connection = await asyncpg.connect(postgres.url)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create())
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"


def scale_out_sides(args: argparse.Namespace) -> list[tuple[str, StartSide, int]]:
    if args.no_gateway:
        return []
    sides: list[tuple[str, StartSide, int]] = []
    if args.postgres or args.workers > 1 or args.replicas > 1:
        sides.append((PG_SIDE, start_workers, 1))
    if args.workers > 1:
        sides.append((f"gw-{args.workers}w", start_workers, args.workers))
    if args.replicas > 1:
        sides.append((f"gw-{args.replicas}r", start_replicas, args.replicas))
    return sides


def with_cluster(config: Path, redis_url: str, state_url: str, key_prefix: str, **extra: Any) -> None:
    """Add the `cluster:` section, the state store (and `extra` top-level keys) to a config written by
    write_gateway_files."""
    data = yaml.safe_load(config.read_text())
    data["cluster"] = {"redis_url": redis_url, "key_prefix": key_prefix}
    data["state"] = state_url
    data.update(extra)
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def start_workers(launch: Launch, redis_url: str, state_url: str, label: str, workers: int) -> list[Proc]:
    """`narrowgate serve` on PostgreSQL and Redis, with `workers: N` when N > 1, once every worker serves."""
    port = free_port()
    config = write_gateway_files(launch.tmp, launch.upstream_port, port, launch.policies, name=label)
    with_cluster(config, redis_url, state_url, f"bench-{label}", **({"workers": workers} if workers > 1 else {}))
    proc = start_gateway(launch.tmp, launch.cmd, config, port, launch.token, launch.timeout_s, name=label)
    if workers == 1:
        return [proc]
    deadline = time.monotonic() + launch.timeout_s
    while f"{workers} workers serving" not in proc.stderr_tail():
        if time.monotonic() > deadline or proc.popen.poll() is not None:
            proc.stop()
            raise GatewayError(f"not all {workers} workers started:\n{proc.stderr_tail()}")
        time.sleep(0.1)
    return [proc]


def start_replicas(launch: Launch, redis_url: str, state_url: str, label: str, replicas: int) -> list[Proc]:
    """`replicas` gateways on one Redis key space and one PostgreSQL database, with the revocable agents."""
    procs: list[Proc] = []
    try:
        for index in range(replicas):
            name, port = f"{label}-{index}", free_port()
            config = write_gateway_files(launch.tmp, launch.upstream_port, port, launch.policies, name=name)
            with_cluster(config, redis_url, state_url, f"bench-{label}")
            launch.revocable.add_to(config, MANIFEST_ID)
            procs.append(start_gateway(launch.tmp, launch.cmd, config, port, launch.token, launch.timeout_s,
                                       name=name))
    except GatewayError:
        for proc in procs:
            proc.stop()
        raise
    return procs


def scale_out_endpoint(label: str, procs: list[Proc], token: str, upstream: Proc, engines: Engines) -> Endpoint:
    """Agents spread over every replica; the hop's CPU is all of the gateway's processes."""
    urls = [f"http://127.0.0.1:{proc.port}/mcp" for proc in procs]
    target = Target(urls[0], tool=f"{MANIFEST_ID}__echo", token=token, mirrors=tuple(urls[1:]))
    pids: dict[str, int | tuple[int, ...]] = {PROXY: tuple(proc.pid for proc in procs), "upstream": upstream.pid}
    for name, engine in (("redis", engines.redis), ("postgres", engines.postgres)):
        if engine is not None and engine.process is not None:
            pids[name] = engine.process.pid
    return Endpoint(label, target, pids)


def revocation_phase(replicas: list[Proc], revocable: Revocable) -> dict[str, Any]:
    """bench.revocation on the replicas: suspensions on the first, refused by every one."""
    urls = [f"http://127.0.0.1:{proc.port}/mcp" for proc in replicas]
    figures: dict[str, Any] = _run(measure(urls, f"{MANIFEST_ID}__echo", revocable))
    print(f"  revocation: {figures}", file=sys.stderr, flush=True)
    return figures


def sdk_check(target: Target) -> str | None:
    """Drive the endpoint with the mcp SDK's Client in both eras; a message on failure."""
    from bench.conformance import check

    for mode in ("legacy", "auto"):
        try:
            line = asyncio.run(asyncio.wait_for(check(target.url, target.tool, mode, target.token), 30))
        except Exception as exc:  # any failure is reported, not raised
            return f"SDK client check failed (mode={mode}): {type(exc).__name__}: {exc}"
        print(f"  sdk-check {line}", file=sys.stderr, flush=True)
    return None


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# ---------------------------------------------------------------------------- report


Row = tuple[str, dict[str, float | None]]
Cell = Callable[[PhaseResult, PhaseResult | None], float | None]  # (the side's phase, direct's) -> figure


def summary_rows(plan: Plan, sides: dict[str, Side]) -> list[Row]:
    """The table: latency, throughput and the proxy's CPU per call, per era, for every side."""
    rows: list[Row] = []

    def metric(label: str, phase: str, era: str, value: Cell) -> None:
        direct = sides[DIRECT].phase(phase, era) if DIRECT in sides else None
        cells: dict[str, float | None] = {}
        for name, side in sides.items():
            p = side.phase(phase, era)
            cells[name] = value(p, direct) if p is not None and p.calls_per_s else None
        rows.append((label, cells))

    for era in plan.eras:
        tag = f" [{era}]"
        levels = plan.agents if era == LEGACY else plan.modern_agents
        for n in [1, *levels]:
            phase = "serial" if n == 1 else f"concurrent-{n}"
            who = "serial" if n == 1 else f"{n} agents"
            metric(f"proxy CPU ms/call, {who}{tag}", phase, era, lambda p, _: p.cpu_ms_per_call.get(PROXY))
        metric(f"  of it system (kernel), 16 agents{tag}", TARGET_PHASE, era,
               lambda p, _: p.cpu_ms_per_call.get(system_key(PROXY)))
        metric(f"serial p50 ms{tag}", "serial", era, lambda p, _: p.p50_ms)
        metric(f"serial p50 added over direct ms{tag}", "serial", era,
               lambda p, d: p.p50_ms - d.p50_ms if d is not None and p is not d else None)
        metric(f"serial p99 ms{tag}", "serial", era, lambda p, _: p.p99_ms)
        metric(f"serial p99 added over direct ms{tag}", "serial", era,
               lambda p, d: p.p99_ms - d.p99_ms if d is not None and p is not d else None)
        for n in levels:
            metric(f"throughput {n} agents calls/s{tag}", f"concurrent-{n}", era, lambda p, _: p.calls_per_s)
            metric(f"p50 ms, {n} agents{tag}", f"concurrent-{n}", era, lambda p, _: p.p50_ms)
            metric(f"p99 ms, {n} agents{tag}", f"concurrent-{n}", era, lambda p, _: p.p99_ms)
    for proc in ("upstream", "redis", "postgres", "loadgen"):
        rows.append((f"{proc} CPU ms/call (all phases)", {n: s.cpu_ms_per_call().get(proc) for n, s in sides.items()}))
    if any(s.revocation for s in sides.values()):
        for key, what in (("p50_ms", "p50"), ("max_ms", "max")):
            rows.append((f"revocation to every replica {what} ms",
                         {n: s.revocation[key] if s.revocation else None for n, s in sides.items()}))
    rows.append(("failed calls", {n: float(s.failures()) for n, s in sides.items()}))
    return rows


def format_table(rows: Sequence[Row], labels: Sequence[str]) -> str:
    def cell(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:.0f}" if abs(v) >= 1000 or v.is_integer() else f"{v:.3f}"

    ratios = [(f"gw/{base}", GATEWAY, base) for base in (FLOOR, BEFORE) if base in labels and GATEWAY in labels]
    ratios += [(f"{side}/gw", side, GATEWAY) for side in labels if side.startswith("gw-") and GATEWAY in labels]
    width = max(len(r[0]) for r in rows)
    head = f"{'metric':<{width}}" + "".join(f"  {label:>9}" for label in [*labels, *(r for r, _, _ in ratios)])
    lines = [head, "-" * len(head)]
    for label, cells in rows:
        line = f"{label:<{width}}" + "".join(f"  {cell(cells.get(name)):>9}" for name in labels)
        for _, over, base in ratios:
            under, above = cells.get(base), cells.get(over)
            if under is not None and above is not None and under > 0 and not label.startswith("failed"):
                line += f"  {above / under:>8.2f}x"
            else:
                line += f"  {'-':>9}"
        lines.append(line)
    return "\n".join(lines)


def target_line(plan: Plan, sides: dict[str, Side]) -> str | None:
    """Issue 19's aim, read off this run: gateway CPU per call within 2.5x of the floor at 16 agents."""
    if FLOOR not in sides or GATEWAY not in sides:
        return None
    parts = []
    for era in plan.eras:
        floor, gateway = sides[FLOOR].phase(TARGET_PHASE, era), sides[GATEWAY].phase(TARGET_PHASE, era)
        f_cpu = floor.cpu_ms_per_call.get(PROXY) if floor else None
        g_cpu = gateway.cpu_ms_per_call.get(PROXY) if gateway else None
        if f_cpu and g_cpu:
            part = f"{era} {g_cpu:.3f}/{f_cpu:.3f} ms = {g_cpu / f_cpu:.2f}x"
            paired = paired_ratios(sides[FLOOR], sides[GATEWAY], era)
            if len(paired) > 1:
                part += (f" (rounds paired: {', '.join(f'{r:.2f}x' for r in paired)}; median "
                         f"{statistics.median(paired):.2f}x, {sum(r <= TARGET_RATIO for r in paired)} of {len(paired)} "
                         f"<= {TARGET_RATIO}x)")
            parts.append(part)
    if not parts:
        return None
    return f"gateway CPU per tools/call vs the floor, {TARGET_PHASE} (aim <= {TARGET_RATIO}x): " + "; ".join(parts)


def paired_ratios(floor: Side, gateway: Side, era: str) -> list[float]:
    """The gateway's CPU per call over the floor's, round by round at TARGET_PHASE: rounds run interleaved, so
    round k of each side met the same machine. The least-CPU rounds (Side.phase) may come from different
    moments; these show how far a single round's ratio moves on a shared machine."""
    def cpu(side: Side) -> list[float]:
        return [p.cpu_ms_per_call.get(PROXY, 0.0) for p in side.phases if p.name == TARGET_PHASE and p.era == era]
    return [g / f for f, g in zip(cpu(floor), cpu(gateway), strict=False) if f > 0 and g > 0]


def fleet_lines(plan: Plan, sides: dict[str, Side]) -> list[str]:
    """Issue 15's aims, read off this run: gw-pg's CPU per call over the single SQLite process, throughput
    at 64 agents of N workers over one, and how long a revocation takes to reach every replica."""
    lines: list[str] = []
    single, store = sides.get(GATEWAY), sides.get(PG_SIDE)
    if single is not None and store is not None:
        parts = []
        for era in plan.eras:
            base, over = single.phase(TARGET_PHASE, era), store.phase(TARGET_PHASE, era)
            b_cpu = base.cpu_ms_per_call.get(PROXY) if base else None
            o_cpu = over.cpu_ms_per_call.get(PROXY) if over else None
            if b_cpu and o_cpu:
                parts.append(f"{era} {o_cpu:.3f} - {b_cpu:.3f} ms = {(o_cpu - b_cpu) * 1000:+.0f} us")
        if parts:
            lines.append(f"gateway CPU per tools/call on PostgreSQL + Redis over SQLite, {TARGET_PHASE} "
                         f"(aim <= +{PG_AIM_US} us): " + "; ".join(parts))
    for name, side in sides.items():
        if single is not None and name.startswith("gw-") and name.endswith("w"):
            base, over = single.phase(THROUGHPUT_PHASE, LEGACY), side.phase(THROUGHPUT_PHASE, LEGACY)
            if base and over and base.calls_per_s:
                lines.append(f"throughput at 64 agents, {name} over one process [{LEGACY}] (aim >= "
                             f"{WORKERS_AIM}x): {over.calls_per_s:.0f}/{base.calls_per_s:.0f} calls/s = "
                             f"{over.calls_per_s / base.calls_per_s:.2f}x")
        if side.revocation:
            got = side.revocation
            lines.append(f"revocation to every replica, {name} ({got['agents']} suspensions, polled every "
                         f"{got['poll_ms']:.0f} ms): p50 {got['p50_ms']:.1f} ms, max {got['max_ms']:.1f} ms")
    return lines


def write_json(path: Path, plan: Plan, args: argparse.Namespace, report: dict[str, Any]) -> None:
    meta = {
        "calls_per_phase": plan.calls,
        "rounds": plan.rounds,
        "agents": plan.agents,
        "modern_agents": plan.modern_agents,
        "eras": plan.eras,
        "upstream_impl": args.upstream_impl,
        "gateway_cmd": None if args.no_gateway else shlex.split(args.gateway_cmd),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.write_bytes(orjson.dumps({"meta": meta, **report}, option=orjson.OPT_INDENT_2))


def _side_dict(side: Side) -> dict[str, Any]:
    figures = {"phases": [p.as_dict() for p in side.phases], "cpu_ms_per_call": side.cpu_ms_per_call()}
    return figures if side.revocation is None else {**figures, "revocation": side.revocation}


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Narrowgate benchmark: direct vs via the gateway")
    parser.add_argument("--calls", type=int, default=5000, help="validated calls per phase (default 5000)")
    parser.add_argument("--agents", default="16,64", help="concurrency levels, 2025-11-25 era")
    parser.add_argument("--modern-agents", default="16", help="concurrency levels, 2026-07-28 era")
    parser.add_argument("--eras", default=f"{LEGACY},{MODERN}", help="protocol eras to run")
    parser.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--no-gateway", action="store_true", help="skip the gateway (direct and floor only)")
    parser.add_argument(
        "--gateway-cmd",
        default=str(REPO / ".venv" / "bin" / "narrowgate"),
        help="command to start the gateway; 'serve --config CFG' is appended",
    )
    parser.add_argument("--rounds", type=int, default=1,
                        help="run each phase this many times per side (interleaved); the table shows each "
                             "phase's round with the least CPU of the hop under test (default 1)")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor (bench/passthrough.py)")
    parser.add_argument(
        "--compare",
        default=None,
        metavar="CMD",
        help="also measure another gateway build, labelled 'before' (e.g. 'env PYTHONPATH=/tmp/old "
        ".venv/bin/python -m gateway' for a checkout of an older commit); the table adds gw/before",
    )
    parser.add_argument("--compare-unrecorded", action="store_true",
                        help="with --compare: the 'before' side runs with policy.record_retention 0 (decision "
                             "inputs not recorded), so gw/before is the cost of recording them")
    parser.add_argument("--policies", default=str(REPO / "cedar"), help="policies dir for the gateway")
    parser.add_argument("--startup-timeout", type=float, default=30.0)
    parser.add_argument(
        "--sdk-check",
        action="store_true",
        help="first check the gateway with the mcp SDK's own client (both eras)",
    )
    parser.add_argument("--upstream-impl", choices=("asgi", "aiohttp"), default="asgi")
    parser.add_argument("--postgres", action="store_true",
                        help="also measure one gateway process on PostgreSQL and Redis (side gw-pg; throwaway "
                             "engines); implied by --workers/--replicas N > 1")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="also measure the gateway as N worker processes (side gw-Nw; on PostgreSQL and "
                             "Redis, with gw-pg)")
    parser.add_argument("--replicas", type=int, default=1, metavar="N",
                        help="also measure N gateway replicas on one PostgreSQL database and one Redis, agents "
                             "spread over them (side gw-Nr, with gw-pg), then how long a suspension on one takes "
                             "to reach every replica")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.calls > 1_000_000:
        parser.error("--calls must be between 1 and 1000000")
    if args.rounds < 1 or args.rounds > 20:
        parser.error("--rounds must be between 1 and 20")
    if not 1 <= args.workers <= 64 or not 1 <= args.replicas <= 8:
        parser.error("--workers must be between 1 and 64, --replicas between 1 and 8")
    return args


def _levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    eras = [e for e in args.eras.split(",") if e]
    plan = Plan(args.calls, _levels(args.agents), _levels(args.modern_agents), eras, args.rounds)
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(at start)", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="narrowgate-bench-") as tmp:
        outcome = run_sides(args, plan, Path(tmp))
    sides = outcome.sides
    print(format_table(summary_rows(plan, sides), list(sides)))
    if (line := target_line(plan, sides)) is not None:
        print(line)
    for line in fleet_lines(plan, sides):
        print(line)
    if outcome.error:
        print(f"\nERROR: {outcome.error}", file=sys.stderr)
    for side in sides.values():
        for phase in side.phases:
            for err in phase.errors:
                print(f"{side.label} {phase.era} {phase.name}: {err}", file=sys.stderr)
        for err in (side.revocation or {}).get("errors", []):
            print(f"{side.label} revocation: {err}", file=sys.stderr)
    if args.json:
        report = {"sides": {name: _side_dict(side) for name, side in sides.items()}, "error": outcome.error,
                  "target": target_line(plan, sides), "fleet": fleet_lines(plan, sides)}
        write_json(args.json, plan, args, report)
    if outcome.error:
        return 2
    return 1 if any(side.failures() for side in sides.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
