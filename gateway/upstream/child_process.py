"""Child processes that cannot outlive the gateway, and the environment they are given.

`die_with_parent` is a `preexec_fn` for `subprocess.Popen` / `asyncio.create_subprocess_exec`: the
child asks Linux (`prctl(PR_SET_PDEATHSIG, SIGTERM)`) for SIGTERM when the gateway dies, even on
SIGKILL, when no shutdown code runs. Elsewhere it does nothing: clean shutdown still stops children
itself. Linux ties the signal to the *thread* that started the child: start children from a thread
that lives as long as the process (the main thread, or the event loop's), never a worker thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping

PR_SET_PDEATHSIG = 1
# What a child needs to run at all; anything else it gets only when its manifest names it.
BASE_ENV_NAMES = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
LOCALE_PREFIX = "LC_"


def _load_prctl() -> Callable[..., int] | None:
    # Resolved here, in the parent: the child between fork and exec must not load libraries.
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()
_forking_pid = os.getpid()


def _remember_forking_pid() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


# Runs in the parent just before every fork (subprocess with a preexec_fn included), so the child
# knows which process it must outlive; a pid read at import would be stale in forked workers.
os.register_at_fork(before=_remember_forking_pid)


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it dies (Linux only)."""
    if _PRCTL is None:
        return
    if _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        os._exit(126)  # cannot promise to die with the gateway: do not start at all
    if os.getppid() != _forking_pid:
        os._exit(1)  # the gateway died before the request above took effect


def child_environment(
    parent: Mapping[str, str], inherit: Iterable[str], explicit: Mapping[str, str]
) -> dict[str, str]:
    """A child's whole environment: what any program needs, the parent's variables it names in
    `inherit` (if set), then its explicit values. Nothing else of the parent's reaches it."""
    env = {name: value for name, value in parent.items()
           if name in BASE_ENV_NAMES or name.startswith(LOCALE_PREFIX)}
    env.update({name: parent[name] for name in inherit if name in parent})
    env.update(explicit)
    return env
