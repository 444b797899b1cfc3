"""Instructions per tools/call, counted by callgrind: the floor and the gateway (and another build), same run.

``.venv/bin/python -m bench.instructions [--calls 400] [--rounds N] [--compare CMD]``

CPU time per call on a machine shared with other work moves by 10-30 % between runs; the number of
instructions a process executes for the same calls does not depend on the machine's load. This runs
bench/passthrough.py (the floor) and the gateway under ``valgrind --tool=callgrind`` with counting off,
opens 16 agents on each, switches counting on (``callgrind_control -i on``) only around the timed calls
(handshakes and warm-up excluded) and reads the total from callgrind's dump: instructions per call,
every thread of the process, user space (the kernel's share of a call, ~5 % here, is not counted).

Under callgrind a process runs ~50x slower, so the default is a few hundred calls per phase (a few
minutes in all). Batched work is over-represented at that pace (the audit writer commits every record
on its own, the decision recorder writes small batches), and how many requests one event-loop turn
serves varies, so whole-process figures move by up to ~5-8 % from run to run: compare sides of one run,
and measure a single change in process (a script repeating one operation at N=0 and N=K, as
docs/performance.md describes) when it is smaller than that. Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # `python bench/instructions.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.callgrind import dump_total
from bench.load import LEGACY, MODERN, Target, run_phase
from bench.run import BEFORE, FLOOR, GATEWAY, MANIFEST_ID, REPO, Proc, free_port, start_gateway, start_upstream
from bench.run import write_gateway_files as write_files

AGENTS = 16
STARTUP_TIMEOUT_S = 600.0  # the gateway's start (imports, the Cedar build) is ~50x slower under callgrind


class Counter:
    """Instructions one process executes between start() and stop(), from callgrind's dumps."""

    def __init__(self, pid: int, out_dir: Path) -> None:
        self.pid = pid
        self.out_dir = out_dir
        self.instructions = 0

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.pid)], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._control("-i", "on")

    def stop(self) -> None:
        before = set(self.out_dir.glob(f"cg.{self.pid}.*"))
        self._control("-d")
        self._control("-i", "off")
        dump = max(set(self.out_dir.glob(f"cg.{self.pid}.*")) - before, key=lambda p: p.stat().st_mtime)
        self.instructions = dump_total(dump)


def under_callgrind(cmd: list[str], out_dir: Path) -> list[str]:
    """`cmd` with valgrind in front of the program (after any leading `env NAME=value` words)."""
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_dir}/cg.%p"]
    prefix: list[str] = []
    if cmd and Path(cmd[0]).name == "env":
        prefix = [cmd[0]]
        cmd = cmd[1:]
        while cmd and "=" in cmd[0]:
            prefix.append(cmd.pop(0))
    return [*prefix, *valgrind, *cmd]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Instructions per tools/call (callgrind): floor vs gateway")
    parser.add_argument("--calls", type=int, default=400, help="calls per phase (default 400)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="count each phase this many times per side, interleaved; the least is shown (work a "
                             "round happens to catch, a batch commit or a collection, only ever adds)")
    parser.add_argument("--eras", default=f"{LEGACY},{MODERN}", help="protocol eras to run")
    parser.add_argument("--gateway-cmd", default=f"{sys.executable} -m gateway",
                        help="command to start the gateway; 'serve --config CFG' is appended")
    parser.add_argument("--compare", default=None, metavar="CMD",
                        help="also count another build, labelled 'before' (as bench.run --compare)")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 100_000:
        parser.error("--calls must be between 1 and 100000")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be between 1 and 20")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (callgrind) is not installed", file=sys.stderr)
        return 2
    eras = [e for e in args.eras.split(",") if e]
    wanted = [(FLOOR, [sys.executable, str(REPO / "bench" / "passthrough.py")])]
    if args.compare:
        wanted.append((BEFORE, shlex.split(args.compare)))
    wanted.append((GATEWAY, shlex.split(args.gateway_cmd)))
    with tempfile.TemporaryDirectory(prefix="narrowgate-instr-") as name:
        tmp = Path(name)
        upstream = start_upstream(tmp, "asgi")
        procs: list[tuple[str, Proc]] = []
        token = secrets.token_urlsafe(32)
        try:
            for label, cmd in wanted:
                port = free_port()
                config = write_files(tmp, upstream.port, port, REPO / "cedar", name=label)
                procs.append((label, start_gateway(tmp, under_callgrind(cmd, tmp), config, port, token,
                                                   STARTUP_TIMEOUT_S, name=label)))
            counts = asyncio.run(count_all(procs, eras, args.calls, args.rounds, token, tmp))
        finally:
            for _, proc in procs:
                proc.stop()
            upstream.stop()
    print(format_counts(counts, eras, [label for label, _ in procs]))
    return 0


async def count_all(procs: list[tuple[str, Proc]], eras: list[str], calls: int, rounds: int, token: str,
                    out_dir: Path) -> dict[tuple[str, str], float]:
    """(era, side) -> the least instructions per call of its rounds; a phase with a failed call counts as nothing."""
    counts: dict[tuple[str, str], float] = {}
    for era, _, (label, proc) in itertools.product(eras, range(rounds), procs):
        target = Target(f"http://127.0.0.1:{proc.port}/mcp", tool=f"{MANIFEST_ID}__echo", token=token, era=era)
        counter = Counter(proc.pid, out_dir)
        phase = await run_phase(target, "concurrent-16", AGENTS, calls, AGENTS * 5, counter.start, counter.stop)
        if phase.failures:
            print(f"{label} {era}: {phase.failures} failed calls: {phase.errors}", file=sys.stderr)
            continue
        per_call = counter.instructions / phase.calls
        counts[(era, label)] = min(per_call, counts.get((era, label), per_call))
        print(f"  {label:<8} {era} {per_call / 1000:,.0f}k instructions per call", file=sys.stderr, flush=True)
    return counts


def format_counts(counts: dict[tuple[str, str], float], eras: list[str], labels: list[str]) -> str:
    head = f"{'instructions per tools/call, 16 agents':<44}" + "".join(f"{label:>12}" for label in labels)
    ratios = [label for label in labels if label != FLOOR]
    head += "".join(f"{label + '/floor':>15}" for label in ratios)
    if BEFORE in labels:
        head += f"{'gw/before':>12}"
    lines = [head, "-" * len(head)]
    for era in eras:
        line = f"{era:<44}" + "".join(f"{_k(counts.get((era, label))):>12}" for label in labels)
        floor = counts.get((era, FLOOR))
        for label in ratios:
            line += f"{_ratio(counts.get((era, label)), floor):>15}"
        if BEFORE in labels:
            line += f"{_ratio(counts.get((era, GATEWAY)), counts.get((era, BEFORE)), 3):>12}"
        lines.append(line)
    return "\n".join(lines)


def _k(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:,.0f}k"


def _ratio(over: float | None, under: float | None, digits: int = 2) -> str:
    return "-" if over is None or not under else f"{over / under:.{digits}f}x"


if __name__ == "__main__":
    sys.exit(main())
