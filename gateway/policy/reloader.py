"""When to reload the policy set: a change on disk, SIGHUP, or the admin API; always loudly.

A reload that fails keeps the last good set serving; the failure is logged at ERROR, counted, and
shown by `GET /admin/v1/policies` and `/healthz`. The engine compiles on a worker thread, so a
reload never holds up calls; an unchanged directory is noticed from its bytes and not compiled.
In a fleet, a reload attempted here is announced to the other replicas (`on_attempted_here`), which
reload from their own directories (`reload(..., here=False)`, not announced again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from gateway.events import Observers
from gateway.policy.engine import PolicyEngine, ReloadOutcome

log = logging.getLogger("narrowgate.policy")


class PolicyReloader:
    def __init__(self, engine: PolicyEngine, directories: list[Path], interval_s: float) -> None:
        self.engine = engine
        self.directories = directories
        self.interval_s = interval_s
        self.failures = 0
        self.reloads = 0
        self.watcher: asyncio.Task[None] | None = None
        self.pending: set[asyncio.Task[ReloadOutcome]] = set()  # SIGHUP reloads under way
        self.fingerprint = self.current_fingerprint()
        # Told after a reload that changed the set: what agents may see can have changed.
        self.on_change: Observers[[]] = []
        # Told after every attempt, good or bad (the audit log records both).
        self.on_outcome: Observers[[ReloadOutcome, str]] = []
        # Told after every attempt made here (not on another replica's notice): the fleet reloads too.
        self.on_attempted_here: Observers[[ReloadOutcome]] = []

    async def reload(self, why: str, *, here: bool = True) -> ReloadOutcome:
        # Taken before reading: an edit made while the compile runs is seen by the next watch.
        fingerprint = await asyncio.to_thread(self.current_fingerprint)
        outcome = await self.engine.reload_async()
        self.fingerprint = fingerprint
        for observer in self.on_outcome:
            observer(outcome, why)
        for attempted in self.on_attempted_here if here else ():
            attempted(outcome)
        if outcome.ok:
            self.reloads += 1
            if outcome.changed:
                for changed in self.on_change:
                    changed()
            log.info("policy reload (%s): version %s%s", why, outcome.version, "" if outcome.changed else ", unchanged")
        else:
            self.failures += 1
            # The engine has logged the problems; this line says what it means for operators.
            log.error("POLICY RELOAD FAILED (%s); the last good set %s keeps serving", why, outcome.version)
        return outcome

    def reload_soon(self, why: str) -> None:
        """From a signal handler: reload in the background (the handler itself must not wait)."""
        task = asyncio.create_task(self.reload(why))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self.reload_soon, "SIGHUP")
        except (NotImplementedError, RuntimeError) as exc:  # no signals here (platform, or not the main thread)
            log.warning("SIGHUP policy reload is not available (%s); use the file watch or the admin API", exc)
        if self.interval_s > 0:
            self.watcher = asyncio.create_task(self.watch())

    async def stop(self) -> None:
        # Nothing to remove where start() could not install the handler.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in [*self.pending, *([self.watcher] if self.watcher is not None else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def watch(self) -> None:
        """Poll file names, sizes and mtimes: cheap, and needs no inotify support."""
        while True:
            await asyncio.sleep(self.interval_s)
            if await asyncio.to_thread(self.current_fingerprint) != self.fingerprint:
                await self.reload("files changed")

    def current_fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        entries = []
        for directory in self.directories:
            for path in sorted(directory.rglob("*")) if directory.is_dir() else ():
                with contextlib.suppress(OSError):
                    stat = path.stat()
                    entries.append((str(path), stat.st_size, stat.st_mtime_ns))
        return tuple(entries)
