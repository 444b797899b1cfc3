"""Soak: a long run of mixed traffic against a real `narrowgate serve`, sampled at a fixed interval.

    .venv/bin/python -m bench.soak                       # SOAK_MINUTES (default 60) minutes
    .venv/bin/python -m bench.soak --minutes 10 --json .narrowgate/soak.json
    make soak SOAK_MINUTES=10

What runs, all on 127.0.0.1:
- upstreams: bench/upstream.py over HTTP (`bench`: echo, and add, which the catalog marks
  privileged so every call needs an approval), the behaviour upstream as a stdio child of the
  gateway (`pipe`), and the shifting upstream over HTTP (`shift`), whose tool list changes;
- an OIDC issuer (tests/support/identity_provider.py) that signs the task agents' workload tokens;
- the gateway (tests/support/processes.py's Gateway) with static-token agents and OIDC agents that
  must work inside tasks.
Traffic, until the deadline:
- steady agents, half 2025-11-25 (sessions, closed and reopened every SESSION_CALLS calls) and half
  2026-07-28 (stateless), calling echo on `bench` and `pipe` and lookup on `shift`, paced to --rate;
- task agents: workload JWT -> POST /oauth/token -> task token -> a few calls -> complete, fail,
  or walk away and let the deadline end it;
- one agent calling the privileged tool (held for approval) and an approver approving every
  pending request through the admin API;
- the shifting upstream adding and removing a tool every --change-s (new tools are quarantined); each
  name new by default, or, with --names K, taken in turn from K names (a bounded set of tools);
- every --restart-s, the HTTP upstream killed and restarted on its port, or the stdio child killed.
Each sample: the gateway's RSS and open file descriptors (/proc), active tasks (admin API), calls,
errors and the p50/p99 latency of the calls in the interval. At the end: the table, each series'
least-squares slope per hour (the first sample, warm-up, left out), and everything as JSON.
Every loop stops at the deadline; processes started here are stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/soak.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench.load import LEGACY, MODERN, Agent, CallFailure, Target, percentile, require_loopback
from gateway.telemetry.memory_snapshots import (
    DIRECTORY_VARIABLE,
    INTERVAL_VARIABLE,
    STATS_VARIABLE,
    snapshots,
    top_growth,
)
from tests.support.identity_provider import TestIdentityProvider, generate_key
from tests.support.processes import (
    ADMIN_TOKEN,
    BEHAVIOUR_SERVER,
    REPO,
    Gateway,
    free_port,
    start_listening,
    stdio_behaviour_transport,
    stop,
)

SHIFTING_SERVER = REPO / "tests" / "fixtures" / "upstreams" / "shifting_server.py"
OWNER = "tests@example.com"  # owner of every agent here, and the approver's name
APPROVER_TOKEN = "soak-approver-token"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
COMPLETE, FAIL = "narrowgate__complete_task", "narrowgate__fail_task"
SESSION_CALLS = 40  # a 2025-11-25 agent closes its session and opens a new one this often
TASK_CALLS = (2, 8)  # calls per task, at random in this range
TASK_DEADLINE_S = 60  # an abandoned task expires this long after it started
APPROVAL_WAIT_S = 30  # how long the privileged caller retries a pending approval
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass
class Options:
    minutes: float
    sample_s: float
    agents: int
    task_agents: int
    rate: float  # steady calls per second, all agents together
    change_s: float
    restart_s: float
    json_path: Path | None
    seed: int
    tracemalloc_dir: Path | None = None  # the gateway writes tracemalloc snapshots here (a diagnostic)
    memory_stats_dir: Path | None = None  # the gateway writes memory figures only (no tracing) here
    names: int = 0  # the shifting upstream's added tools cycle through this many names (0: every name new)


# ---------------------------------------------------------------------------- what is measured


@dataclass
class Window:
    """What happened since the last sample."""

    latencies_ns: list[int] = field(default_factory=list)
    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)


@dataclass
class Sample:
    minute: float
    rss_mib: float
    fds: int
    threads: int
    tasks_active: int
    tasks_total: int
    calls: int
    errors: int
    p50_ms: float
    p99_ms: float
    events: dict[str, int]


def proc_status(pid: int) -> tuple[float, int]:
    """RSS in MiB and thread count of a process, from /proc/<pid>/status."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (every thread's children file)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (minute, value) points, per hour; None with fewer than two points."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return 60 * sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


# ---------------------------------------------------------------------------- the deployment


@dataclass
class Deployment:
    gateway: Gateway
    idp: TestIdentityProvider
    bench_port: int
    shift_port: int
    bench_upstream: Any  # subprocess.Popen
    shift_upstream: Any
    static_tokens: dict[str, str]
    task_subjects: list[str]

    @property
    def url(self) -> str:
        return self.gateway.url

    def restart_http_upstream(self) -> None:
        stop(self.bench_upstream, signal.SIGKILL)
        self.bench_upstream, _ = start_listening(bench_upstream_cmd(self.bench_port))

    def kill_stdio_child(self) -> int:
        assert self.gateway.process is not None
        killed = 0
        for pid in children(self.gateway.process.pid):
            with contextlib.suppress(OSError):
                if str(BEHAVIOUR_SERVER) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    os.kill(pid, signal.SIGKILL)  # a child of the gateway this run started
                    killed += 1
        return killed

    def stop(self) -> None:
        self.gateway.stop()
        stop(self.bench_upstream)
        stop(self.shift_upstream)
        self.idp.close()


def bench_upstream_cmd(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.upstream", "--port", str(port)]


def manifests(bench_port: int, shift_port: int) -> list[dict[str, Any]]:
    def tools(specs: dict[str, str]) -> list[dict[str, Any]]:
        return [{"name": name, "risk": risk, "data_classes": ["internal"]} for name, risk in specs.items()]
    return [
        {"id": "bench", "owner": OWNER, "description": "fast HTTP upstream", "timeout_s": 30,
         "transport": {"url": f"http://127.0.0.1:{bench_port}/mcp"},
         "tools": tools({"echo": "read", "add": "privileged"})},
        {"id": "pipe", "owner": OWNER, "description": "behaviour upstream over stdio", "timeout_s": 30,
         "transport": stdio_behaviour_transport(), "tools": tools({"echo": "read"})},
        {"id": "shift", "owner": OWNER, "description": "upstream whose tools change", "timeout_s": 30,
         "transport": {"url": f"http://127.0.0.1:{shift_port}/mcp"},
         "tools": tools({"lookup": "read", "note": "read"})},
    ]


def deploy(workdir: Path, opts: Options) -> Deployment:
    bench_upstream, bench_port = start_listening(bench_upstream_cmd(0))
    shift_upstream, shift_port = start_listening([sys.executable, str(SHIFTING_SERVER), "--port", "0"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    idp = TestIdentityProvider(f"{base}/mcp", keys=[generate_key("RS256")])
    tokens = {f"soak-{i}": f"soak-token-{i}" for i in range(opts.agents + 1)}  # + the privileged caller
    gateway = Gateway(workdir, manifests(bench_port, shift_port), tokens=tokens, port=port, env=tracemalloc_env(opts),
                      extra_config={
        "identity": {"audience": f"{base}/mcp", "oidc_issuers": [{"issuer": idp.issuer}]},
        "admin": {"tokens": [{"name": "soak-admin", "token": ADMIN_TOKEN},
                             {"name": OWNER, "token": APPROVER_TOKEN, "role": "approver"}]},
    })
    deployment = Deployment(gateway, idp, bench_port, shift_port, bench_upstream, shift_upstream, tokens, [])
    try:
        gateway.start()
        deployment.task_subjects = [register_task_agent(deployment, i) for i in range(opts.task_agents)]
    except BaseException:
        deployment.stop()
        raise
    return deployment


def tracemalloc_env(opts: Options) -> dict[str, str]:
    """The gateway's diagnostic switch (gateway/telemetry/memory_snapshots.py): one snapshot per sample."""
    env: dict[str, str] = {}
    if opts.tracemalloc_dir is not None:
        env[DIRECTORY_VARIABLE] = str(opts.tracemalloc_dir.resolve())
    if opts.memory_stats_dir is not None:
        env[STATS_VARIABLE] = str(opts.memory_stats_dir.resolve())
    if env:
        env[INTERVAL_VARIABLE] = str(opts.sample_s)
    return env


STATS_SHOWN = ("rss_bytes", "malloc_in_use_bytes", "malloc_free_bytes", "pymalloc_arena_bytes",
               "pymalloc_in_use_bytes", "pymalloc_free_block_bytes", "pymalloc_unused_pool_bytes")


def print_memory_stats(directory: Path) -> None:
    """One row per figure file: where the gateway's memory is (MiB), and the gc object count."""
    print("  n " + " ".join(f"{name.removesuffix('_bytes')[:14]:>14}" for name in STATS_SHOWN) + "    objects")
    for path in sorted(directory.glob("stats-*.json")):
        figures = json.loads(path.read_text())
        objects = sum(figures.get("objects_by_type", {}).values())
        print(f"{path.stem[-3:]} " + " ".join(f"{figures.get(name, 0) / 2**20:14.1f}" for name in STATS_SHOWN)
              + f" {objects:10d}")


def print_tracemalloc_growth(directory: Path) -> None:
    """The top growth from the second snapshot (the first is start-up and warm-up) to the last."""
    found = snapshots(directory)
    if len(found) < 3:
        print(f"tracemalloc: {len(found)} snapshot(s) in {directory}, too few to compare")
        return
    for line in top_growth(found[1], found[-1]):
        print(line)


def register_task_agent(deployment: Deployment, index: int) -> str:
    """An OIDC agent that may only work inside tasks; returns its workload subject."""
    subject = f"repo:soak/task-agent-{index}:ref:refs/heads/main"
    body = {"id": f"soak-task-{index}", "owner": OWNER, "purpose": "soak: tasks that start and end",
            "state": "active",
            "identities": [{"kind": "oidc", "issuer": deployment.idp.issuer, "subject": subject, "claims": {}}],
            "entitlement": {"servers": ["bench", "pipe"], "require_task": True}}
    request = urllib.request.Request(f"{deployment.gateway.base}/admin/v1/agents", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                              "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    return subject


# ---------------------------------------------------------------------------- the traffic


class Soak:
    def __init__(self, deployment: Deployment, opts: Options) -> None:
        self.deployment = deployment
        self.opts = opts
        self.started = time.monotonic()
        self.deadline = self.started + opts.minutes * 60
        self.window = Window()
        self.samples: list[Sample] = []
        self.errors_total: Counter[str] = Counter()
        self.tasks_started = 0  # since the start, counted here: see task_counts
        self.random = random.Random(opts.seed)
        self.http: aiohttp.ClientSession | None = None
        self.stopping = asyncio.Event()

    def over(self) -> bool:
        return time.monotonic() >= self.deadline

    def stop_early(self) -> None:
        """SIGTERM or SIGINT: end the run now, with its report and clean-up (a soak started in the
        background ignores SIGINT, so SIGTERM is the way to stop it)."""
        print("soak: stopping early on a signal", flush=True)
        self.deadline = min(self.deadline, time.monotonic())
        self.stopping.set()

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), max(0.0, min(seconds, self.deadline - time.monotonic())))

    def error(self, kind: str, exc: BaseException) -> None:
        key = f"{kind}: {type(exc).__name__}: {str(exc)[:80]}"
        self.window.errors[key] += 1
        self.errors_total[key] += 1

    async def timed(self, kind: str, call: Awaitable[None]) -> bool:
        started = time.perf_counter_ns()
        try:
            await call
        except (CallFailure, aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            self.error(kind, exc)
            return False
        self.window.latencies_ns.append(time.perf_counter_ns() - started)
        self.window.calls += 1
        return True

    # -- actors

    async def steady_agent(self, index: int) -> None:
        era = LEGACY if index % 2 == 0 else MODERN
        token = self.deployment.static_tokens[f"soak-{index}"]
        interval = self.opts.agents / self.opts.rate
        counter = itertools.count()
        while not self.over():
            agent = Agent(Target(self.deployment.url, "bench__echo", token, era), f"soak-{index}")
            if not await self.timed("open", agent.open()):
                await agent.close()
                await self.pause(1)
                continue
            try:
                for n in itertools.islice(counter, SESSION_CALLS):
                    if self.over():
                        break
                    await self.timed("call", self.one_call(agent, n))
                    await self.pause(interval * self.random.uniform(0.5, 1.5))
            finally:
                await agent.close()
            self.window.events["sessions"] += era == LEGACY

    async def one_call(self, agent: Agent, n: int) -> None:
        tool = ("bench__echo", "bench__echo", "pipe__echo", "shift__lookup")[n % 4]
        if tool == "shift__lookup":
            await expect_text(agent, tool, {"query": f"q{n}"}, f"found q{n}")
        else:
            await echo(agent, tool, f"{agent.name}-{n}")

    async def task_agent(self, index: int) -> None:
        subject = self.deployment.task_subjects[index]
        era = (LEGACY, MODERN)[index % 2]
        while not self.over():
            token = await self.start_task(subject)
            if token is None:
                await self.pause(2)
                continue
            agent = Agent(Target(self.deployment.url, "bench__echo", token, era), f"task-{index}")
            try:
                if await self.timed("task-open", agent.open()):
                    for n in range(self.random.randint(*TASK_CALLS)):
                        tool = ("bench__echo", "pipe__echo")[n % 2]
                        await self.timed("task-call", echo(agent, tool, f"t{index}-{n}"))
                    await self.end_task(agent)
            finally:
                await agent.close()
            await self.pause(self.random.uniform(1, 3))

    async def start_task(self, subject: str) -> str | None:
        assert self.http is not None
        form = {"grant_type": EXCHANGE, "subject_token": self.deployment.idp.mint(sub=subject),
                "subject_token_type": JWT_TYPE, "scope": "bench__echo pipe__echo",
                "purpose": "soak task", "expires_in": str(TASK_DEADLINE_S)}
        try:
            async with self.http.post(f"{self.deployment.gateway.base}/oauth/token", data=form) as response:
                body = await response.json()
                if response.status != 200:
                    raise CallFailure(f"token endpoint: HTTP {response.status}: {body}")
        except (CallFailure, aiohttp.ClientError, TimeoutError) as exc:
            self.error("task-start", exc)
            return None
        self.window.events["tasks_started"] += 1
        self.tasks_started += 1
        return str(body["access_token"])

    async def end_task(self, agent: Agent) -> None:
        choice = self.random.random()
        if choice < 0.2:
            self.window.events["tasks_abandoned"] += 1  # the deadline ends it
            return
        tool = COMPLETE if choice < 0.8 else FAIL
        if await self.timed("task-end", expect_ok(agent, tool, {"reason": "soak"})):
            self.window.events["tasks_ended"] += 1

    async def privileged_caller(self) -> None:
        token = self.deployment.static_tokens[f"soak-{self.opts.agents}"]
        agent = Agent(Target(self.deployment.url, "bench__add", token, LEGACY), "privileged")
        for n in itertools.count():
            if self.over():
                break
            if agent.http is None and not await self.timed("privileged-open", agent.open()):
                await agent.close()
                await self.pause(2)
                continue
            started = time.monotonic()
            if await self.timed("privileged", approved_call(agent, "bench__add", {"a": n, "b": 1}, str(n + 1))):
                self.window.events["approved_calls"] += 1
                self.window.events["approval_wait_ms_sum"] += int((time.monotonic() - started) * 1000)
            else:
                await agent.close()
            await self.pause(self.random.uniform(2, 6))
        await agent.close()

    async def approver(self) -> None:
        assert self.http is not None
        base = f"{self.deployment.gateway.base}/admin/v1/approvals"
        headers = {"Authorization": f"Bearer {APPROVER_TOKEN}"}
        while not self.over():
            try:
                async with self.http.get(f"{base}?state=pending", headers=headers) as response:
                    pending = (await response.json())["approvals"]
                for request in pending:
                    async with self.http.post(f"{base}/{request['id']}/approve", headers=headers,
                                              json={"comment": "soak"}) as response:
                        await response.read()
                        self.window.events["approvals"] += response.status == 200
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
                self.error("approver", exc)
            await self.pause(0.5)

    def extra_name(self, n: int) -> str:
        """The n-th tool the shifting upstream adds: new every time, or one of --names in turn."""
        return f"extra{n % self.opts.names if self.opts.names else n}"

    async def list_changer(self) -> None:
        assert self.http is not None
        control = f"http://127.0.0.1:{self.deployment.shift_port}/control"
        for n in itertools.count():
            await self.pause(self.opts.change_s)
            if self.over():
                return
            ops = [{"op": "add", "name": self.extra_name(n)}] + ([{"op": "remove", "name": self.extra_name(n - 1)}]
                                                                 if n else [])
            for op in ops:
                try:
                    async with self.http.post(control, json=op) as response:
                        await response.read()
                    self.window.events["list_changes"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.error("list-change", exc)

    async def restarter(self) -> None:
        for n in itertools.count():
            await self.pause(self.opts.restart_s)
            if self.over():
                return
            if n % 2 == 0:
                await asyncio.to_thread(self.deployment.restart_http_upstream)
                self.window.events["http_restarts"] += 1
            else:
                self.window.events["stdio_kills"] += self.deployment.kill_stdio_child()

    async def sampler(self) -> None:
        while not self.over():
            await self.pause(self.opts.sample_s)
            self.samples.append(await self.sample())
            print(format_row(self.samples[-1]), flush=True)

    async def sample(self) -> Sample:
        window, self.window = self.window, Window()
        assert self.deployment.gateway.process is not None
        pid = self.deployment.gateway.process.pid
        rss, threads = proc_status(pid)
        active, total = await self.task_counts()
        latencies = sorted(window.latencies_ns)
        return Sample(round((time.monotonic() - self.started) / 60, 2), round(rss, 1), open_fds(pid), threads,
                      active, total, window.calls, sum(window.errors.values()), round(percentile(latencies, 50), 2),
                      round(percentile(latencies, 99), 2), dict(window.events))

    async def task_counts(self) -> tuple[int, int]:
        """Active tasks (admin API, `state=active`) and the tasks started so far (counted here).

        Not a listing of every task: the store keeps them all, and a listing of 20,000 tasks each
        minute was a transient of tens of MiB that grew with the run (most of the RSS slope the
        soak used to report; docs/operations.md#soak)."""
        assert self.http is not None
        url = f"{self.deployment.gateway.base}/admin/v1/tasks?state=active"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        try:
            async with self.http.get(url, headers=headers) as response:
                tasks = (await response.json())["tasks"]
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            self.error("task-count", exc)
            return -1, self.tasks_started
        return len(tasks), self.tasks_started

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_early)
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            self.http = http
            actors: list[Callable[[], Awaitable[None]]] = [self.sampler, self.approver, self.privileged_caller,
                                                          self.list_changer, self.restarter]
            actors += [lambda i=i: self.steady_agent(i) for i in range(self.opts.agents)]
            actors += [lambda i=i: self.task_agent(i) for i in range(self.opts.task_agents)]
            tasks = [asyncio.create_task(actor()) for actor in actors]
            try:
                await asyncio.wait_for(asyncio.gather(*tasks), timeout=self.opts.minutes * 60 + 120)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)


async def echo(agent: Agent, tool: str, text: str) -> None:
    agent.target = replace(agent.target, tool=tool)  # one session calls every tool it may
    await agent.call_echo(text)


async def call_tool(agent: Agent, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    message = await agent._request("tools/call", {"name": tool, "arguments": arguments})
    if "error" in message:
        raise CallFailure(f"{tool}: JSON-RPC error {message['error']}")
    result: dict[str, Any] = message["result"]
    if result.get("isError"):
        raise CallFailure(f"{tool}: tool error {str(result)[:200]}")
    return result


async def expect_text(agent: Agent, tool: str, arguments: dict[str, Any], text: str) -> None:
    result = await call_tool(agent, tool, arguments)
    got = result["content"][0].get("text")
    if got != text:
        raise CallFailure(f"{tool}: {got!r} != {text!r}")


async def approved_call(agent: Agent, tool: str, arguments: dict[str, Any], text: str) -> None:
    """A call that needs a person: held until approved, or (pending mode) refused with the approval's
    id and retried, identically, until the approver has said yes."""
    deadline = time.monotonic() + APPROVAL_WAIT_S
    while True:
        message = await agent._request("tools/call", {"name": tool, "arguments": arguments})
        result = message.get("result") or {}
        approval = (result.get("_meta") or {}).get("narrowgate/approval") or {}
        if "error" in message or not result.get("isError"):
            break
        if approval.get("state") != "pending" or time.monotonic() > deadline:
            raise CallFailure(f"{tool}: {str(result)[:200]}")
        await asyncio.sleep(0.5)
    if "error" in message:
        raise CallFailure(f"{tool}: JSON-RPC error {message['error']}")
    got = result["content"][0].get("text")
    if got != text:
        raise CallFailure(f"{tool}: {got!r} != {text!r}")


async def expect_ok(agent: Agent, tool: str, arguments: dict[str, Any]) -> None:
    await call_tool(agent, tool, arguments)


# ---------------------------------------------------------------------------- report

HEADER = (f"{'min':>6} {'RSS MiB':>8} {'fds':>5} {'thr':>4} {'tasks':>6} {'total':>6} {'calls':>7} {'errors':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7}  events")
SERIES = ("rss_mib", "fds", "threads", "tasks_active", "p50_ms", "p99_ms")


def format_row(s: Sample) -> str:
    events = " ".join(f"{k}={v}" for k, v in sorted(s.events.items()))
    return (f"{s.minute:>6.1f} {s.rss_mib:>8.1f} {s.fds:>5} {s.threads:>4} {s.tasks_active:>6} {s.tasks_total:>6} "
            f"{s.calls:>7} {s.errors:>6} {s.p50_ms:>7.2f} {s.p99_ms:>7.2f}  {events}")


def slopes(samples: list[Sample]) -> dict[str, float | None]:
    steady = samples[1:] if len(samples) >= 3 else samples  # the first interval is warm-up
    return {name: (None if (v := slope_per_hour([(s.minute, getattr(s, name)) for s in steady])) is None
                   else round(v, 3)) for name in SERIES}


def report(soak: Soak) -> dict[str, Any]:
    samples = soak.samples  # their rows were printed as they were taken
    per_hour = slopes(samples)
    print("slope per hour (least squares, first sample left out): "
          + ", ".join(f"{k} {'n/a' if v is None else f'{v:+.3f}'}" for k, v in per_hour.items()))
    for kind, count in soak.errors_total.most_common(10):
        print(f"  {count:>6} x {kind}")
    calls = sum(s.calls for s in samples)
    return {"options": {**asdict(soak.opts), "json_path": str(soak.opts.json_path),
                        "tracemalloc_dir": str(soak.opts.tracemalloc_dir),
                        "memory_stats_dir": str(soak.opts.memory_stats_dir)},
            "samples": [asdict(s) for s in samples], "slopes_per_hour": per_hour,
            "calls": calls, "errors": sum(s.errors for s in samples), "error_kinds": dict(soak.errors_total),
            "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}}


@contextlib.contextmanager
def deployed(opts: Options) -> Iterator[Deployment]:
    with tempfile.TemporaryDirectory(prefix="narrowgate-soak-") as tmp:
        deployment = deploy(Path(tmp), opts)
        try:
            yield deployment
        finally:
            deployment.stop()


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "60")))
    parser.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples (default 60)")
    parser.add_argument("--agents", type=int, default=12, help="steady agents, half in each era (default 12)")
    parser.add_argument("--task-agents", type=int, default=4, help="agents working in tasks (default 4)")
    parser.add_argument("--rate", type=float, default=40.0, help="steady calls per second in all (default 40)")
    parser.add_argument("--change-s", type=float, default=20.0, help="seconds between tool list changes")
    parser.add_argument("--restart-s", type=float, default=90.0, help="seconds between upstream restarts")
    parser.add_argument("--json", type=Path, default=None, help="write samples and slopes here")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tracemalloc", type=Path, default=None, metavar="DIR",
                        help="diagnostic: the gateway writes a tracemalloc snapshot into DIR every sample; "
                             "the top growth between the second and the last is printed at the end")
    parser.add_argument("--memory-stats", type=Path, default=None, metavar="DIR",
                        help="diagnostic: the gateway writes its memory figures (RSS, malloc, pymalloc arenas, "
                             "object counts) into DIR every sample, without tracing; printed at the end")
    parser.add_argument("--names", type=int, default=0, metavar="K",
                        help="the tools the shifting upstream adds cycle through K names (default 0: each one "
                             "new, filling the bounded review table, discovery.max_pending_reviews_per_server)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.minutes > 24 * 60 or args.agents < 1 or args.rate <= 0 or args.names == 1 \
            or args.names < 0:
        parser.error("--minutes must be in (0, 1440], --agents at least 1, --rate positive, --names 0 or at least 2")
    return Options(args.minutes, args.sample_s, args.agents, args.task_agents, args.rate, args.change_s,
                   args.restart_s, args.json, args.seed, args.tracemalloc, args.memory_stats, args.names)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    print(f"soak: {opts.minutes:g} min, {opts.agents} steady agents at {opts.rate:g} calls/s, "
          f"{opts.task_agents} task agents, a sample every {opts.sample_s:g} s", flush=True)
    with deployed(opts) as deployment:
        require_loopback(deployment.url)
        print(HEADER, flush=True)
        soak = Soak(deployment, opts)
        asyncio.run(soak.run())
    result = report(soak)
    if opts.json_path is not None:
        opts.json_path.parent.mkdir(parents=True, exist_ok=True)
        opts.json_path.write_text(json.dumps(result, indent=2))
        print(f"wrote {opts.json_path}")
    if opts.tracemalloc_dir is not None:
        print_tracemalloc_growth(opts.tracemalloc_dir)
    if opts.memory_stats_dir is not None:
        print_memory_stats(opts.memory_stats_dir)
    return 0 if soak.samples else 1


if __name__ == "__main__":
    sys.exit(main())
