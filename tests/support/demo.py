"""`narrowgate demo` as a real subprocess for tests: its own state directory and port, its banner parsed,
and its process tree read from /proc."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import NARROWGATE, REPO, free_port

SERVING = "serving MCP at"


@dataclass
class DemoProcess:
    process: subprocess.Popen[bytes]
    port: int
    state_dir: Path
    log_path: Path
    log_offset: int = 0  # where this run's output starts (a restart appends to the same file)

    @classmethod
    def start(cls, workdir: Path, port: int | None = None, timeout_s: float = 60,
              env: dict[str, str] | None = None) -> DemoProcess:
        """Start the demo and wait until it serves; stdout and stderr go to one file.

        Without `port`, `--port` is a free port, unless `env` sets NARROWGATE_LISTEN (then no --port)."""
        workdir.mkdir(parents=True, exist_ok=True)
        state_dir = workdir / "demo-state"
        log_path = workdir / "demo.log"
        command = [str(NARROWGATE), "demo", "--state-dir", str(state_dir)]
        listen = (env or {}).get("NARROWGATE_LISTEN")
        if port is None and listen is not None:
            port = int(listen.rpartition(":")[2])
        else:
            port = port or free_port()
            command += ["--port", str(port)]
        with log_path.open("ab") as log:
            offset = log.tell()
            process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                       env={**clean_environment(), **(env or {})})
        demo = cls(process, port, state_dir, log_path, offset)
        demo.wait_for(SERVING, timeout_s)
        return demo

    def output(self) -> str:
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if match := re.search(pattern, self.output()):
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"pattern {pattern!r} not seen in the demo's output:\n{self.output()[-3000:]}")

    def banner_value(self, label: str) -> str:
        """A `label : value` line of the banner, e.g. banner_value("agent token")."""
        return self.wait_for(rf"{re.escape(label)}\s*:\s*(\S+)", 1).group(1)

    def export_lines(self) -> list[str]:
        """The banner's `export ...` lines, exactly as printed (to paste into a shell)."""
        return [line.strip() for line in self.output().splitlines() if line.strip().startswith("export ")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def clean_environment() -> dict[str, str]:
    """This environment minus NARROWGATE_* (a developer's exported settings must not steer the test)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("NARROWGATE_")}


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below `pid` (children, their children, ...), with its command line."""
    found: list[tuple[int, str]] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            for child in (int(p) for p in task.read_text().split()):
                found.append((child, command_line(child)))
                pending.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie has ended; it only waits to be reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def wait_gone(pids: list[int], timeout_s: float) -> list[tuple[int, str]]:
    """Poll until none of `pids` runs; those still running at the deadline, with their command lines."""
    deadline = time.monotonic() + timeout_s
    while True:
        running = [(pid, command_line(pid)) for pid in pids if alive(pid)]
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.1)
