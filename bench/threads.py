"""CPU per call of each gateway thread under load: the event loop's and the writers' apart.

``python -m bench.threads [--era ERA] [--calls N] [--agents A] [--gateway-cmd CMD]`` starts bench/run.py's
upstream and gateway (the whole pipeline: a registered agent with a bearer token, the shipped policies, a signed
token per call, audit, decision recording, metrics), runs one phase of N calls from A agents, and prints user
and system CPU per call of every thread of the gateway that ran during the phase, read from
``/proc/<pid>/task/<tid>/stat`` before and after it (clock ticks, usually 10 ms: keep phases of seconds).

bench.run gives the process's CPU against the floor; this tells how much of it the loop's thread spends and how
much the threads that write the audit log and the recorded decision inputs (work a thread hop moved off the
loop still counts). Figures move by 10-30 % between runs on a shared machine: compare builds in alternation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import sys
import tempfile
from pathlib import Path

from bench.cpu import CLK_TCK
from bench.load import LEGACY, MODERN, Target, run_phase
from bench.run import MANIFEST_ID, REPO, free_port, start_gateway, start_upstream, write_gateway_files

ThreadTicks = dict[str, tuple[str, int, int]]  # thread id -> (name, user ticks, system ticks)


def thread_ticks(pid: int) -> ThreadTicks:
    """Each live thread of `pid`: its name and user and system clock ticks so far."""
    ticks: ThreadTicks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended between the listing and the read
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        ticks[tid] = (name, int(fields[11]), int(fields[12]))  # utime, stime: fields 14 and 15
    return ticks


def per_call_rows(before: ThreadTicks, after: ThreadTicks, calls: int) -> list[tuple[str, float, float]]:
    """(thread, user us, system us) per call for each thread that used CPU during the phase, busiest first."""
    per_call = 1e6 / CLK_TCK / calls  # microseconds a tick, per call
    rows = []
    for tid, (name, user, system) in after.items():
        _, user0, system0 = before.get(tid, (name, 0, 0))
        if user - user0 or system - system0:
            rows.append((f"{tid} {name}", (user - user0) * per_call, (system - system0) * per_call))
    return sorted(rows, key=lambda row: -row[1] - row[2])


def measure(era: str, calls: int, agents: int, gateway_cmd: list[str]) -> tuple[int, list[tuple[str, float, float]]]:
    with tempfile.TemporaryDirectory(prefix="narrowgate-bench-threads-") as name:
        tmp = Path(name)
        upstream = start_upstream(tmp, "asgi")
        port, token = free_port(), secrets.token_urlsafe(32)
        config = write_gateway_files(tmp, upstream.port, port, REPO / "cedar", name="gateway")
        gateway = start_gateway(tmp, gateway_cmd, config, port, token, 120, name="gateway")
        try:
            target = Target(f"http://127.0.0.1:{port}/mcp", tool=f"{MANIFEST_ID}__echo", token=token, era=era)
            ticks: dict[str, ThreadTicks] = {}

            def started() -> None:
                ticks["before"] = thread_ticks(gateway.pid)

            def stopped() -> None:
                ticks["after"] = thread_ticks(gateway.pid)

            phase = asyncio.run(run_phase(target, f"concurrent-{agents}", agents, calls, 80, started, stopped))
            if phase.failures:
                raise SystemExit(f"{phase.failures} of {phase.calls} calls failed")
            return phase.calls, per_call_rows(ticks["before"], ticks["after"], phase.calls)
        finally:
            gateway.stop()
            upstream.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--era", default=LEGACY, choices=[LEGACY, MODERN])
    parser.add_argument("--calls", type=int, default=8000, help="calls in the measured phase (default 8000)")
    parser.add_argument("--agents", type=int, default=16, help="agents calling at once (default 16)")
    parser.add_argument("--gateway-cmd", default=f"{sys.executable} -m gateway",
                        help="how to start the gateway (another checkout: 'env PYTHONPATH=DIR python -m gateway')")
    args = parser.parse_args(argv)
    calls, rows = measure(args.era, args.calls, args.agents, shlex.split(args.gateway_cmd))
    print(f"{calls} calls, {args.agents} agents, {args.era}: CPU per call of each gateway thread")
    for thread, user, system in rows:
        print(f"  {thread:28} user {user:7.1f} us   system {system:6.1f} us")
    print(f"  {'all threads':28} user {sum(r[1] for r in rows):7.1f} us   system {sum(r[2] for r in rows):6.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
