"""The demo's HTTP upstream (examples/demo_upstreams/payments_server.py) as a child that dies with the demo.

Three guards, because the demo can end in three ways:
- a clean stop (SIGINT, SIGTERM): `stop()` signals the child's own process group and waits;
- the demo killed outright (SIGKILL, a crash): on Linux the kernel sends the child SIGTERM
  (PR_SET_PDEATHSIG, gateway.upstream.child_process), and everywhere the child sees its stdin, a
  pipe from the demo, reach end-of-file and stops itself (`--exit-with-stdin`);
- a Ctrl-C in the terminal: the child runs in its own process group, so only the demo gets the
  SIGINT and stops the child after draining, instead of the child dying under in-flight calls.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from gateway.upstream.child_process import die_with_parent

STOP_TIMEOUT_S = 5.0


class PaymentsServer:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port

    @classmethod
    def start(cls, script: Path, cwd: Path) -> PaymentsServer:
        process = subprocess.Popen(
            [sys.executable, str(script), "--port", "0", "--exit-with-stdin"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd,
            process_group=0, preexec_fn=die_with_parent,
        )
        assert process.stdout is not None
        try:
            for line in process.stdout:
                if line.startswith("LISTENING "):
                    return cls(process, int(line.split()[1]))
        except BaseException:  # interrupted while it starts: stop it here, not at our exit
            cls(process, 0).stop()
            raise
        process.wait()
        raise RuntimeError("the demo payments server did not start")

    def stop(self) -> None:
        """SIGTERM to the child's process group, then SIGKILL if it has not stopped in time."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        finally:
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    stream.close()
