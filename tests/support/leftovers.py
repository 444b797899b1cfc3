"""The last safety net of a test run: no process it started outlives it (Linux).

The run's top pytest process (the xdist controller, or a plain run) makes itself a child subreaper before any
test or worker starts, so a process orphaned anywhere below it (the PostgreSQL and Redis of an xdist worker that
died before its session fixtures stopped them, a gateway's stdio child) becomes its child instead of init's.
When the run ends, every process still below it was leaked: it is killed and named, and the run fails. A nested
pytest run (a test that runs pytest) is a subreaper of its own, so it sweeps only what it started.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

from tests.support.processes import descendants

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
GRACE_S = 5.0  # processes stopped at the very end (a worker's last teardown) get this long to exit


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def kill_leftovers() -> dict[int, str]:
    """Wait up to GRACE_S for the processes below this one to exit, kill the rest and reap them; the ones that had
    to be killed."""
    deadline = time.monotonic() + GRACE_S
    while (left := descendants(os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue  # exited meanwhile
    reap_children()
    return left


def reap_children() -> None:
    """Collect the exit status of this process's exited children (orphans it adopted, the ones just killed)."""
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no children left
        if pid == 0:  # children left, none exited yet: the ones just killed are still dying
            time.sleep(0.05)
