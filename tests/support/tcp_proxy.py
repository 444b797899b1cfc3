"""A loopback TCP proxy that a test can cut: one process loses its connection to a server (Redis) while
every other process keeps theirs, as when one replica's network path fails.

It runs on its own event loop in a thread, so it keeps forwarding while the test's loop waits or a
blocking call runs. `cut()` drops every open connection and stops listening (new connections are
refused); `restore()` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any

from tests.support.processes import free_port

CHUNK = 65536


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tcp-proxy", daemon=True)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        self.thread.start()
        self.restore()
        return self

    def call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=10)

    def restore(self) -> None:
        self.call(self.listen())

    def cut(self) -> None:
        self.call(self.drop())

    def stop(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    async def listen(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(self.accepted, "127.0.0.1", self.port, reuse_address=True)

    async def drop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, upstream_writer}
        await asyncio.gather(self.pipe(reader, upstream_writer), self.pipe(upstream_reader, writer))

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()  # one side gone: so is the other
        self.writers.discard(writer)
