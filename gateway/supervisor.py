"""`narrowgate serve --workers N`: N worker processes on one listening socket, and their supervisor.

The parent binds one socket per worker on the listen address (SO_REUSEPORT: the kernel spreads new
connections evenly over them) and checks what it can before any worker starts (gateway/cli/serve.py),
then forks the workers: each builds its own gateway (event loop, upstream children, store and Redis
connections) and accepts on its socket. The parent serves nothing; it watches, and keeps every
socket open, so connections waiting on a dead worker's socket are taken by its replacement.
- Worker 1 starts alone; the others start once it serves, so a bad start (the policy set, Redis
  gone) is reported once, by one worker, and the parent exits with that worker's code.
- SIGTERM or SIGINT on the parent: every worker gets SIGTERM and drains as a single gateway does
  (gateway/serving.py); the parent closes its copies of the sockets, so no new connection waits on
  a worker that stops, and exits 0 once all workers have exited 0. A worker still running after
  STOP_TIMEOUT_S is killed (its upstream children die with it, see gateway.upstream.child_process).
- A worker that dies after it served (or a replacement that fails to start) is replaced by a new
  process with the same worker number, at most MAX_RESTARTS within RESTART_WINDOW_S; past that the
  parent stops the others and exits 1.
- The parent dies, even by SIGKILL: Linux sends each worker SIGTERM (PR_SET_PDEATHSIG) and it drains.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from gateway import logs
from gateway.serving import interrupt_on_sigterm
from gateway.upstream.child_process import die_with_parent

log = logging.getLogger("narrowgate")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_TIMEOUT_S = 30.0  # the drain grace (5 s) and uvicorn's shutdown (3 s), with room for upstreams to stop
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
POLL_S = 0.2
EXIT_FAILED = 1

# Runs one worker's gateway on the inherited socket until it is stopped; calls `on_started` once it
# serves; returns the process's exit code.
ServeOne = Callable[[int, socket.socket, Callable[[], None]], int]


@dataclass
class Worker:
    number: int  # 1..N, kept by a replacement
    pid: int
    ready_fd: int  # read end of the pipe the worker writes one byte to once it serves
    replacement: bool = False  # started in place of one that died (its failing to start is not fatal)
    serving: bool = False


@dataclass
class Supervisor:
    listeners: list[socket.socket]  # one per worker: worker n accepts on listeners[n - 1]
    serve_one: ServeOne
    running: dict[int, Worker] = field(default_factory=dict)  # by pid
    restarts: list[float] = field(default_factory=list)
    stop_requested: bool = False

    def run(self) -> int:
        """Start the workers, keep them running until a stop signal, and return the exit code."""
        previous = {sig: signal.signal(sig, self._request_stop) for sig in STOP_SIGNALS}
        try:
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _request_stop(self, sig: int, frame: FrameType | None) -> None:
        if not self.stop_requested:
            log.info("%s received: stopping %d worker(s)", signal.Signals(sig).name, len(self.running))
        self.stop_requested = True

    @property
    def workers(self) -> int:
        return len(self.listeners)

    def _supervise(self) -> int:
        self._start(1)
        while not self.stop_requested:
            self._watch_ready()
            failure = self._reap_and_replace()
            if failure is not None:
                self.stop_requested = True
                return self._stop_all(failure)
            if len(self.running) < self.workers and all(w.serving for w in self.running.values()):
                self._start_the_rest()
        return self._stop_all(None)

    def _start_the_rest(self) -> None:
        taken = {w.number for w in self.running.values()}
        for number in range(1, self.workers + 1):
            if number not in taken:
                self._start(number)

    def _start(self, number: int, replacement: bool = False) -> None:
        read_fd, write_fd = os.pipe()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # none lands between fork and reset
        with logs.writer_paused():
            pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            self._become_worker(number, write_fd, blocked)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(write_fd)
        self.running[pid] = Worker(number, pid, read_fd, replacement)
        log.debug("worker %d started (pid %d)", number, pid)

    def _become_worker(self, number: int, ready_fd: int, mask: set[int | signal.Signals]) -> None:
        """In the forked child: serve, then leave without running the parent's clean-up."""
        code = EXIT_FAILED
        try:
            for other in self.running.values():
                os.close(other.ready_fd)
            own = self.listeners[number - 1]
            for sock in self.listeners:
                if sock is not own:
                    sock.close()
            die_with_parent()  # the supervisor gone, even by SIGKILL: SIGTERM, and this worker drains
            signal.signal(signal.SIGINT, signal.default_int_handler)
            interrupt_on_sigterm()  # until its server takes the signals over, as a single gateway
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

            def started() -> None:
                os.write(ready_fd, b"1")

            code = self.serve_one(number, own, started)
        except KeyboardInterrupt:
            print("narrowgate: interrupted", file=sys.stderr)
            code = 130
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_FAILED
        except BaseException:
            traceback.print_exc()
        finally:
            logs.flush_and_stop()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _watch_ready(self) -> None:
        waiting = {w.ready_fd: w for w in self.running.values() if not w.serving}
        if not waiting:
            time.sleep(POLL_S)
            return
        try:
            readable, _, _ = select.select(list(waiting), [], [], POLL_S)
        except InterruptedError:
            return
        for fd in readable:
            worker = waiting[fd]
            if os.read(fd, 1):
                worker.serving = True
                log.debug("worker %d (pid %d) serving", worker.number, worker.pid)
                if len(self.running) == self.workers and all(w.serving for w in self.running.values()):
                    log.info("%d workers serving (pids %s)", self.workers,
                             ", ".join(str(pid) for pid in sorted(self.running)))

    def _reap_and_replace(self) -> int | None:
        """Replace workers that died after serving; an exit code if the whole must stop instead."""
        for pid, code in self._reap():
            worker = self.running.pop(pid)
            os.close(worker.ready_fd)
            if not worker.serving and not worker.replacement:
                log.error("worker %d (pid %d) failed to start (%s): stopping", worker.number, pid, describe(code))
                return code if code > 0 else EXIT_FAILED
            if not self._may_restart():
                log.error("worker %d (pid %d) %s; %d restarts within %d s: stopping", worker.number, pid,
                          describe(code), MAX_RESTARTS, RESTART_WINDOW_S)
                return EXIT_FAILED
            log.warning("worker %d (pid %d) %s: starting a new one", worker.number, pid, describe(code))
            self._start(worker.number, replacement=True)
        return None

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
        self.restarts.append(now)
        return len(self.restarts) <= MAX_RESTARTS

    def _reap(self) -> list[tuple[int, int]]:
        """(pid, exit code) of every worker that has exited; a negative code is the signal that ended it."""
        ended = []
        while self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.running:
                ended.append((pid, os.waitstatus_to_exitcode(status)))
        return ended

    def _stop_all(self, failure: int | None) -> int:
        """SIGTERM to every worker, wait for them (killing what outstays STOP_TIMEOUT_S), and the exit code."""
        for pid in self.running:
            _signal(pid, signal.SIGTERM)
        for sock in self.listeners:
            sock.close()  # each worker holds its own copy until its server stops accepting
        codes: list[int] = []
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.running:
            if time.monotonic() > deadline:
                for pid in self.running:
                    log.error("worker pid %d did not stop within %d s: killing it", pid, STOP_TIMEOUT_S)
                    _signal(pid, signal.SIGKILL)
                deadline = float("inf")
            for pid, code in self._reap():
                os.close(self.running.pop(pid).ready_fd)
                codes.append(code)
            time.sleep(0.05)
        if failure is not None:
            return failure
        if all(code == 0 for code in codes):
            log.info("all workers stopped")
            return 0
        return 130 if 130 in codes else EXIT_FAILED


def describe(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone: reaped next
        os.kill(pid, sig)
