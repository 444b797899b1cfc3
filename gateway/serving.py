"""Serving the ASGI app: the listening socket, taken before anything starts, and a clean stop.

The socket is bound first, so a port in use is one plain line before any upstream is started or
any banner printed. SIGINT and SIGTERM both drain: stop accepting, let the gateway answer what
is in flight (`on_stop`), then uvicorn's own shutdown and the app's lifespan end (audit flushed,
upstreams stopped). The process then exits 0, with one log line for the signal and no traceback.
An expected refusal raised while the app starts (Redis unreachable, say) ends the start with one
line, not uvicorn's traceback (`RefusingLifespan`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Generator
from types import FrameType
from typing import ClassVar

import uvicorn
from uvicorn.lifespan.on import LifespanOn, LifespanSendMessage

log = logging.getLogger("narrowgate")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LISTEN_BACKLOG = 2048


class PortUnavailable(Exception):
    """The listen address cannot be bound; the message is one plain line for a person."""


def bind_listener(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on host:port, or PortUnavailable saying plainly why not.

    `reuse_port`: several such sockets (this process's own, see gateway.supervisor) may listen on one
    address, the kernel spreading new connections over them (Linux SO_REUSEPORT, same user only)."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                     flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse a port in TIME_WAIT
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortUnavailable(f"port {port} on {host} is already in use") from None
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def interrupt_on_sigterm() -> None:
    """Until the server takes the signals over: SIGTERM stops start-up as Ctrl-C does (clean-up runs,
    `narrowgate: interrupted`), instead of killing the process where it stands."""

    def interrupt(sig: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


class StartRefused(Exception):
    """The app refused to start for a reason it states in one line (no traceback is wanted)."""


class RefusingLifespan(LifespanOn):
    """uvicorn's lifespan, quiet about an expected refusal: the refusal's text is kept (`refused`) and
    neither Starlette's traceback nor uvicorn's "Application startup failed" is logged for it."""

    refusals: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.refused: str | None = None

    async def send(self, message: LifespanSendMessage) -> None:
        # Starlette sends startup.failed from inside its `except` block, so the exception is at hand.
        failure = sys.exc_info()[1]
        if message["type"] == "lifespan.startup.failed" and isinstance(failure, self.refusals):
            self.refused = str(failure)
            self.logger = logging.getLogger("narrowgate.refused-start")
            self.logger.disabled = True
            message = {**message, "message": ""}
        await super().send(message)


def refusing_lifespan(refusals: tuple[type[BaseException], ...]) -> type[RefusingLifespan]:
    return type("GatewayLifespan", (RefusingLifespan,), {"refusals": refusals})


class DrainingServer(uvicorn.Server):
    """uvicorn's server, stopping the gateway's way on SIGINT and SIGTERM (see the module docstring).

    `refusals`: exception types the app may raise at start that `run` turns into StartRefused (one
    line); `on_started`: called once the app has started and the server accepts connections."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], Awaitable[None]],
                 refusals: tuple[type[BaseException], ...] = (),
                 on_started: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.on_stop = on_stop
        self.on_started = on_started
        if not config.loaded:
            config.load()
        config.lifespan_class = refusing_lifespan((*refusals, StartRefused))

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            super().run(sockets)
        except SystemExit:
            refused = getattr(getattr(self, "lifespan", None), "refused", None)
            if refused is not None:
                raise StartRefused(refused) from None
            raise

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the signal once it has shut down, which turns a clean stop into a
        # KeyboardInterrupt traceback (SIGINT) or death by signal (SIGTERM); a drained gateway exits 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            if sig == signal.SIGINT:  # a second Ctrl-C: stop waiting for anything
                self.force_exit = True
            return
        log.info("%s received: stopping (new connections refused, open calls answered)", signal.Signals(sig).name)
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in getattr(self, "servers", []):
            server.close()  # stop accepting before draining; uvicorn closes them again, harmlessly
        try:
            await self.on_stop()
        except Exception:
            log.exception("draining the gateway failed; stopping anyway")
        await super().shutdown(sockets)
