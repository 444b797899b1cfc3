"""Narrowgate benchmark: the same validated MCP load straight at an upstream, then through the gateway.

``.venv/bin/python -m bench.run [--calls N] [--json out.json]`` (or ``python bench/run.py``)

1. starts ``bench/upstream.py`` on a free loopback port;
2. runs the phases against it directly (serial latency, throughput at 16 and 64 agents, in the
   2025-11-25 era, plus serial and 16 agents in the 2026-07-28 era);
3. writes a temporary catalog (one manifest for the upstream) and gateway config (a static
   bearer token via ``token_env``), starts ``.venv/bin/narrowgate serve --config CFG``, waits for
   ``GET /healthz`` to answer 200, and runs the same phases through it (tool ``bench__echo``);
4. prints one table (direct, gateway, gateway/direct) with CPU ms per call sampled from /proc
   around every timed window, and writes everything as JSON with ``--json PATH``.

Exit status: 0 when every call of every phase was answered correctly; 1 when any call failed;
2 when the gateway could not be started or reached (the direct results are still printed).
Only 127.0.0.1 is ever targeted; every loop is bounded by a call count and a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import orjson
import yaml

from bench.cpu import CpuMeter
from bench.load import LEGACY, MODERN, PhaseResult, Target, run_phase

REPO = Path(__file__).resolve().parent.parent
MANIFEST_ID = "bench"
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


@dataclass
class Side:
    """Results of all phases against one endpoint."""

    label: str
    phases: list[PhaseResult] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    calls: int = 0

    def add(self, phase: PhaseResult, meter: CpuMeter) -> None:
        phase.cpu_ms_per_call = meter.ms_per_call(phase.calls)
        self.phases.append(phase)
        self.calls += phase.calls
        for name, used in meter.used_s.items():
            self.cpu_s[name] = self.cpu_s.get(name, 0.0) + used

    def cpu_ms_per_call(self) -> dict[str, float]:
        return {k: v * 1000 / self.calls for k, v in self.cpu_s.items()} if self.calls else {}

    def failures(self) -> int:
        return sum(p.failures for p in self.phases)

    def phase(self, name: str, era: str) -> PhaseResult | None:
        return next((p for p in self.phases if p.name == name and p.era == era), None)


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


def write_gateway_files(tmp: Path, upstream_port: int, gateway_port: int, policies: Path) -> Path:
    """Write a catalog manifest for the upstream and a gateway config; return the config path."""
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
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_gateway(tmp: Path, base_cmd: list[str], config: Path, port: int, token: str, timeout_s: float) -> Proc:
    """Start ``<base_cmd> serve --config CFG``; wait until ``/healthz`` answers 200, else GatewayError."""
    if not base_cmd or shutil.which(base_cmd[0]) is None:
        raise GatewayError(f"gateway executable {base_cmd[0]} not found (pip install -e . in the venv?)")
    stderr_path = tmp / "gateway.stderr"
    env = {**os.environ, TOKEN_ENV: token}
    cmd = [*base_cmd, "serve", "--config", str(config)]
    with stderr_path.open("wb") as err:
        popen = subprocess.Popen(
            cmd, cwd=tmp, env=env, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    proc = Proc("gateway", popen, stderr_path, port)
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


async def bench_side(label: str, target: Target, pids: dict[str, int], plan: Plan) -> Side:
    side = Side(label)
    for era in plan.eras:
        era_target = Target(url=target.url, tool=target.tool, token=target.token, era=era)
        levels = plan.agents if era == LEGACY else plan.modern_agents
        runs = [("serial", 1), *((f"concurrent-{n}", n) for n in levels)]
        for name, agents in runs:
            meter = CpuMeter(pids)
            warmup = min(200, plan.calls) if agents == 1 else agents * 5
            phase = await run_phase(era_target, name, agents, plan.calls, warmup, meter.start, meter.stop)
            side.add(phase, meter)
            print(f"  {label:<8} {_phase_line(phase)}", file=sys.stderr, flush=True)
    return side


def _phase_line(p: PhaseResult) -> str:
    cpu = " ".join(f"{k}={v:.3f}" for k, v in p.cpu_ms_per_call.items())
    return (
        f"{p.era} {p.name:<14} fail={p.failures:<3} p50={p.p50_ms:.3f}ms p99={p.p99_ms:.3f}ms "
        f"{p.calls_per_s:8.0f}/s cpu_ms/call[{cpu}]"
    )


def run_sides(args: argparse.Namespace, plan: Plan, tmp: Path) -> tuple[Side, Side | None, str | None]:
    upstream = start_upstream(tmp, args.upstream_impl)
    gateway: Proc | None = None
    try:
        url = f"http://127.0.0.1:{upstream.port}/mcp"
        direct = _run(bench_side("direct", Target(url), {"upstream": upstream.pid}, plan))
        if args.no_gateway:
            return direct, None, None
        token = secrets.token_urlsafe(32)
        gw_port = args.gateway_port or free_port()
        config = write_gateway_files(tmp, upstream.port, gw_port, Path(args.policies).resolve())
        try:
            gateway = start_gateway(tmp, gateway_cmd(args), config, gw_port, token, args.startup_timeout)
        except GatewayError as exc:
            return direct, None, str(exc)
        target = Target(f"http://127.0.0.1:{gw_port}/mcp", tool=f"{MANIFEST_ID}__echo", token=token)
        if args.sdk_check and (problem := sdk_check(target)):
            return direct, None, problem
        pids = {"gateway": gateway.pid, "upstream": upstream.pid}
        via = _run(bench_side("gateway", target, pids, plan))
        if gateway.popen.poll() is not None:
            return direct, via, f"gateway exited during the run:\n{gateway.stderr_tail()}"
        return direct, via, None
    finally:
        if gateway is not None:
            gateway.stop()
        upstream.stop()


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


def gateway_cmd(args: argparse.Namespace) -> list[str]:
    if args.passthrough:
        return [sys.executable, str(REPO / "bench" / "passthrough.py")]
    return shlex.split(args.gateway_cmd)


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# ---------------------------------------------------------------------------- report


Row = tuple[str, float | None, float | None]


def summary_rows(plan: Plan, direct: Side, via: Side | None) -> list[Row]:
    rows: list[Row] = []

    def metric(label: str, phase: str, era: str, attr: str) -> None:
        d = direct.phase(phase, era)
        g = via.phase(phase, era) if via else None
        rows.append((label, getattr(d, attr) if d else None, getattr(g, attr) if g else None))

    for era in plan.eras:
        tag = "" if era == LEGACY else f" [{era}]"
        metric(f"serial p50 (ms){tag}", "serial", era, "p50_ms")
        metric(f"serial p99 (ms){tag}", "serial", era, "p99_ms")
        for n in plan.agents if era == LEGACY else plan.modern_agents:
            metric(f"throughput {n} agents (calls/s){tag}", f"concurrent-{n}", era, "calls_per_s")
    d_cpu, g_cpu = direct.cpu_ms_per_call(), (via.cpu_ms_per_call() if via else {})
    for proc in ("gateway", "upstream", "loadgen"):
        rows.append((f"CPU ms/call {proc}", d_cpu.get(proc), g_cpu.get(proc)))
    rows.append(("failed calls", float(direct.failures()), float(via.failures()) if via else None))
    return rows


def format_table(rows: Sequence[Row], via_label: str = "gateway") -> str:
    def cell(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:.0f}" if v >= 1000 or v.is_integer() else f"{v:.3f}"

    width = max(len(r[0]) for r in rows)
    ratio_label = "gw/direct" if via_label == "gateway" else "pt/direct"
    lines = [f"{'metric':<{width}}  {'direct':>10}  {via_label:>11}  {ratio_label:>9}"]
    lines.append("-" * len(lines[0]))
    for label, d, g in rows:
        ratio = f"{g / d:.2f}x" if d and g is not None and not label.startswith("failed") else "-"
        lines.append(f"{label:<{width}}  {cell(d):>10}  {cell(g):>11}  {ratio:>9}")
    return "\n".join(lines)


def write_json(path: Path, plan: Plan, args: argparse.Namespace, report: dict[str, Any]) -> None:
    meta = {
        "calls_per_phase": plan.calls,
        "agents": plan.agents,
        "modern_agents": plan.modern_agents,
        "eras": plan.eras,
        "upstream_impl": args.upstream_impl,
        "gateway_cmd": None if args.no_gateway else gateway_cmd(args),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.write_bytes(orjson.dumps({"meta": meta, **report}, option=orjson.OPT_INDENT_2))


def _side_dict(side: Side | None) -> dict[str, Any] | None:
    if side is None:
        return None
    return {"phases": [p.as_dict() for p in side.phases], "cpu_ms_per_call": side.cpu_ms_per_call()}


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Narrowgate benchmark: direct vs via the gateway")
    parser.add_argument("--calls", type=int, default=5000, help="validated calls per phase (default 5000)")
    parser.add_argument("--agents", default="16,64", help="concurrency levels, 2025-11-25 era")
    parser.add_argument("--modern-agents", default="16", help="concurrency levels, 2026-07-28 era")
    parser.add_argument("--eras", default=f"{LEGACY},{MODERN}", help="protocol eras to run")
    parser.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--no-gateway", action="store_true", help="run the direct half only")
    parser.add_argument(
        "--gateway-cmd",
        default=str(REPO / ".venv" / "bin" / "narrowgate"),
        help="command to start the gateway; 'serve --config CFG' is appended",
    )
    parser.add_argument(
        "--passthrough",
        action="store_true",
        help="measure bench/passthrough.py (a minimal Python proxy) in place of the gateway",
    )
    parser.add_argument("--gateway-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--policies", default=str(REPO / "cedar"), help="policies dir for the gateway")
    parser.add_argument("--startup-timeout", type=float, default=30.0)
    parser.add_argument(
        "--sdk-check",
        action="store_true",
        help="first check the gateway with the mcp SDK's own client (both eras)",
    )
    parser.add_argument("--upstream-impl", choices=("asgi", "aiohttp"), default="asgi")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.calls > 1_000_000:
        parser.error("--calls must be between 1 and 1000000")
    return args


def _levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    eras = [e for e in args.eras.split(",") if e]
    plan = Plan(args.calls, _levels(args.agents), _levels(args.modern_agents), eras)
    with tempfile.TemporaryDirectory(prefix="narrowgate-bench-") as tmp:
        direct, via, gateway_error = run_sides(args, plan, Path(tmp))
    print(format_table(summary_rows(plan, direct, via), "passthrough" if args.passthrough else "gateway"))
    if gateway_error:
        print(f"\nGATEWAY ERROR: {gateway_error}", file=sys.stderr)
    for side in (direct, via):
        for phase in side.phases if side else []:
            for err in phase.errors:
                print(f"{side.label} {phase.era} {phase.name}: {err}", file=sys.stderr)
    if args.json:
        report = {"direct": _side_dict(direct), "gateway": _side_dict(via), "gateway_error": gateway_error}
        write_json(args.json, plan, args, report)
    if gateway_error:
        return 2
    return 1 if direct.failures() or (via and via.failures()) else 0


if __name__ == "__main__":
    sys.exit(main())
