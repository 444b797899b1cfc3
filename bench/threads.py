"""CPU per call of each gateway thread under load: the event loop's and the writers' apart.

``python -m bench.threads [--era ERA] [--calls N] [--agents A] [--gateway-cmd CMD]`` starts bench/run.py's
upstream and gateway (the whole pipeline: a registered agent with a bearer token, the shipped policies, a signed
token per call, audit, decision recording, metrics), runs one phase of N calls from A agents, and prints user
and system CPU per call of every thread of the gateway that ran during the phase, read from
``/proc/<pid>/task/<tid>/stat`` before and after it (clock ticks, usually 10 ms: keep phases of seconds), and how
often per call each thread gave up the CPU: ``waits`` (voluntary context switches: it blocked, on I/O, a lock or
the GIL) and ``preempted`` (involuntary ones), from ``/proc/<pid>/task/<tid>/status``.

bench.run gives the process's CPU against the floor; this tells how much of it the loop's thread spends and how
much the threads that write the audit log and the recorded decision inputs (work a thread hop moved off the
loop still counts). A loop thread that waits more often than the floor's (about 0.1 per call) is handing the
interpreter lock to another thread and waiting to get it back (docs/performance-cuts.md, "Fourth pass").
Figures move by 10-30 % between runs on a shared machine: compare builds in alternation, with phases of tens of
thousands of calls.
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
from typing import NamedTuple

from bench.cpu import CLK_TCK
from bench.load import LEGACY, MODERN, Target, run_phase
from bench.run import MANIFEST_ID, REPO, free_port, start_gateway, start_upstream, write_gateway_files


class Ticks(NamedTuple):
    """One thread so far: its name, user and system clock ticks, voluntary and involuntary context switches."""

    name: str
    user: int
    system: int
    waits: int = 0
    preempted: int = 0


class Row(NamedTuple):
    """One thread's share of a call: CPU in microseconds, context switches in how many per call."""

    thread: str
    user_us: float
    system_us: float
    waits: float
    preempted: float


ThreadTicks = dict[str, Ticks]  # thread id -> what it spent so far


def thread_ticks(pid: int) -> ThreadTicks:
    """Each live thread of `pid`: its name, clock ticks and context switches so far."""
    ticks: ThreadTicks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended between the listing and the read
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        switches = {key: int(value) for key, _, value in (line.partition(":\t") for line in status.splitlines())
                    if key.endswith("ctxt_switches")}
        ticks[tid] = Ticks(name, int(fields[11]), int(fields[12]),  # utime, stime: fields 14 and 15
                           switches.get("voluntary_ctxt_switches", 0), switches.get("nonvoluntary_ctxt_switches", 0))
    return ticks


def per_call_rows(before: ThreadTicks, after: ThreadTicks, calls: int) -> list[Row]:
    """Per call, each thread that used CPU during the phase, busiest first."""
    per_call = 1e6 / CLK_TCK / calls  # microseconds a tick, per call
    rows = []
    for tid, now in after.items():
        then = before.get(tid, Ticks(now.name, 0, 0))
        if now.user - then.user or now.system - then.system:
            rows.append(Row(f"{tid} {now.name}", (now.user - then.user) * per_call,
                            (now.system - then.system) * per_call, (now.waits - then.waits) / calls,
                            (now.preempted - then.preempted) / calls))
    return sorted(rows, key=lambda row: -row.user_us - row.system_us)


def measure(era: str, calls: int, agents: int, gateway_cmd: list[str]) -> tuple[int, list[Row]]:
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
    for row in rows:
        print(f"  {row.thread:28} user {row.user_us:7.1f} us   system {row.system_us:6.1f} us   "
              f"waits {row.waits:5.2f}   preempted {row.preempted:5.2f}")
    print(f"  {'all threads':28} user {sum(r.user_us for r in rows):7.1f} us   "
          f"system {sum(r.system_us for r in rows):6.1f} us   waits {sum(r.waits for r in rows):5.2f}   "
          f"preempted {sum(r.preempted for r in rows):5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
