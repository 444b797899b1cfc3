"""A lean HTTP/1.1 client for one upstream origin: the upstream hop of every call.

Per upstream: keep-alive connections on the running loop (asyncio Protocols), each request
written with one `transport.write` (the caller passes a header block it built once per upstream
plus the per-call lines), each reply parsed by httptools as its bytes arrive. It does what the
hop needs and nothing else: no redirects, no cookies, no proxies, and no pipelining (a connection
carries one request at a time and goes back to the pool only once its reply was read whole).
aiohttp cost ~3x the instructions per round trip for the same work (docs/performance-cuts.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import select
import ssl
import time
import zlib
from dataclasses import dataclass
from types import TracebackType
from typing import cast
from urllib.parse import quote, urlsplit

import httptools
import idna

from gateway.protocol.http_token import breaks_header, is_token

MAX_CONNECTIONS = 256  # open at once per upstream; more requests wait for one
MAX_IDLE = 64  # kept-alive connections held per upstream; more are closed when their reply ends
READ_AHEAD_BYTES = 256 * 1024  # body bytes read before the reader takes them: then the socket pauses
INFLATED_CHUNK = 64 * 1024  # a compressed body comes out at most this much per read
ACCEPT_ENCODING = "gzip, deflate"
# Limits on a reply's head, as aiohttp's (max_line_size / max_field_size 8190, max_headers 128):
# httptools has none, so a hostile upstream streaming header lines would grow the gateway unbounded.
MAX_HEAD_BYTES = 64 * 1024  # status line and header lines of one response, counted as they arrive
MAX_FIELD_BYTES = 8190  # one header's name, or its value
MAX_HEADERS = 128
MAX_INTERIM = 8  # 1xx answers (100 Continue, 103 Early Hints) before the real one
# Over TLS the transport's write buffer hides the raw socket's (asyncio's sslproto and uvloop alike):
# a request over this size that was answered early may still wait there in part, so it is not reused.
TLS_REUSE_MAX_REQUEST = 64 * 1024
INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# Characters a request target may carry as they are (RFC 3986 pchar plus "/" and, in a query, "?");
# anything else (spaces, controls, non-ASCII) is percent-encoded, as yarl did.
PATH_SAFE = "/%:@!$&'()*+,;=-._~"
QUERY_SAFE = PATH_SAFE + "?"
LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")  # a % that starts no escape (/100%, ?q=%zz)
# Verified TLS with the system's CAs (SSL_CERT_FILE / SSL_CERT_DIR apply), as aiohttp's default:
# built at import because loading the CA store reads files, which must not happen on the loop.
DEFAULT_TLS = ssl.create_default_context()
DEFAULT_TLS.set_alpn_protocols(["http/1.1"])


class ConnectFailed(OSError):
    """No connection could be opened (refused, unreachable, TLS handshake): nothing was sent."""


class Disconnected(ConnectionError):
    """The connection ended before the reply did: the request may have reached the upstream.
    `stale`: it was a kept-alive connection and not one byte of the reply had arrived, the one case
    where a request without side effects may be sent again on a new connection."""

    def __init__(self, message: str, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


class BadResponse(ConnectionError):
    """What came back is not an HTTP/1.1 response (or a compressed body that does not inflate)."""


def inflate(inflater: zlib._Decompress, data: bytes) -> bytes:
    """At most INFLATED_CHUNK bytes out of `data` (the rest waits in the inflater's unconsumed_tail)."""
    try:
        return bytes(inflater.decompress(data, INFLATED_CHUNK))
    except zlib.error:
        raise BadResponse("the upstream's compressed body does not inflate") from None


@dataclass(frozen=True, slots=True)
class Origin:
    host: str
    port: int
    tls: ssl.SSLContext | None
    authority: str  # the Host header
    target: str  # path and query of the URL


def origin_of(url: str) -> Origin:
    """Where `url` points. A non-ASCII host goes in punycode (IDNA), the path and query
    percent-encoded where they hold characters a request line cannot carry (ValueError if neither works)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the upstream URL must be http:// or https:// with a host")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    # IDNA 2008 with UTS 46 mapping, as browsers: str.encode("idna") is IDNA 2003 (faß.de -> fass.de, another domain).
    host = parts.hostname if parts.hostname.isascii() else idna.encode(parts.hostname, uts46=True).decode("ascii")
    authority = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != (443 if secure else 80):
        authority = f"{authority}:{port}"
    target = _escaped(parts.path or "/", PATH_SAFE) + (f"?{_escaped(parts.query, QUERY_SAFE)}" if parts.query else "")
    return Origin(host, port, DEFAULT_TLS if secure else None, authority, target)


def _escaped(text: str, safe: str) -> str:
    """`text` percent-encoded for a request line: an existing %XX kept as it is, a lone % sent as %25."""
    return quote(LONE_PERCENT.sub("%25", text), safe=safe)


def header_lines(headers: dict[str, str]) -> str:
    """`Name: value\\r\\n` lines; a name that is not an RFC 9110 token or a value that could end the
    header early is refused (ValueError, as aiohttp refused it), never sent. The message names the
    header, never its value: it may be a secret."""
    lines = []
    for name, value in headers.items():
        if not is_token(name):
            raise ValueError(f"header name {name!r} is not an HTTP token; not sent")
        if breaks_header(value):
            raise ValueError(f"header {name!r} holds a line break or NUL; not sent")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines)


def _poller(transport: asyncio.BaseTransport) -> select.poll | None:
    """A poll object on the connection's socket (for TLS the raw socket: any byte or EOF there counts).
    poll(), not select(): a gateway can hold fds above FD_SETSIZE."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return poller


def _keep_alive_timeout(value: str) -> float | None:
    """The `timeout=N` of a Keep-Alive header, if it names one (None for a value that is no ASCII number:
    called while httptools parses, so it never raises)."""
    for param in value.split(","):
        key, _, number = param.partition("=")
        number = number.strip()
        if key.strip().lower() == "timeout" and number.isascii() and number.isdigit():
            return float(number)
    return None


class Slots:
    """At most `size` requests at once per upstream, the rest waiting in arrival order: asyncio.Semaphore's
    behaviour, without its coroutine (and its scan of the waiters) when a slot is free, as it nearly always is.
    A released slot goes straight to the oldest waiter."""

    __slots__ = ("free", "waiters")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take(self) -> bool:
        """A slot now, if one is free and nobody waits for one before us."""
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def wait(self) -> None:
        """Wait for a slot (after `take` said none is free)."""
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class Reply:
    """One response: its status and headers once they arrived, its body as it arrives."""

    __slots__ = (
        "buffered",
        "chunks",
        "complete",
        "connection",
        "error",
        "flushed",
        "headers",
        "headers_read",
        "inflater",
        "keep_alive",
        "raw_headers",
        "status",
        "waiter",
    )

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names; a repeated header's values joined by ", "
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_read: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.waiter: asyncio.Future[None] | None = None
        self.complete = False
        self.keep_alive = False
        self.error: Exception | None = None
        self.inflater: zlib._Decompress | None = None  # for a compressed body
        self.flushed = False

    @property
    def content_type(self) -> str:
        value = self.headers.get("content-type")
        return value.split(";", 1)[0].strip().lower() if value else "application/octet-stream"

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    async def read_chunk(self) -> bytes:
        """The next piece of the body, inflated if it was compressed; b"" at its end."""
        while True:
            inflater = self.inflater
            if inflater is not None and inflater.unconsumed_tail and (
                    out := inflate(inflater, inflater.unconsumed_tail)):
                return out
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.buffered < READ_AHEAD_BYTES // 2:
                    self.connection.resume()
                if inflater is None:
                    return chunk
                if out := inflate(inflater, chunk):
                    return out
                continue
            if self.error is not None:
                raise self.error
            if self.complete:
                if self.inflater is not None and not self.flushed:
                    self.flushed = True
                    return bytes(self.inflater.flush())
                return b""
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def ready_body(self) -> bytes | None:
        """The whole body, if it has all arrived and needs no inflating (a small reply usually came with its
        head): taken at once, without awaiting read_chunk. None: read it with read_chunk."""
        if not self.complete or self.inflater is not None:
            return None
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        self.connection.resume()
        return body

    # Called by the connection as bytes arrive --------------------------------------------------

    def on_headers(self, status: int) -> None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.raw_headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.status, self.headers = status, headers
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in INFLATE_WBITS:
            self.inflater = zlib.decompressobj(INFLATE_WBITS[encoding])
        elif encoding != "identity":
            self.fail(BadResponse(f"the upstream answered with an unsupported Content-Encoding {encoding!r}"))
            return
        if not self.headers_read.done():
            self.headers_read.set_result(None)

    def on_body(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > READ_AHEAD_BYTES:
            self.connection.pause()
        self.wake()

    def on_complete(self, keep_alive: bool) -> None:
        self.complete, self.keep_alive = True, keep_alive
        self.wake()

    def fail(self, error: Exception) -> None:
        if self.error is None and not self.complete:
            self.error = error
        if not self.headers_read.done():
            self.headers_read.set_exception(error)
            self.headers_read.exception()  # retrieved: a reply nobody awaits any more must not warn
        self.wake()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Connection(asyncio.Protocol):
    """One keep-alive connection; httptools calls the `on_*` methods while it parses."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.poller: select.poll | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reply: Reply | None = None
        self.open = False
        self.paused = False
        self.idle_since = 0.0
        self.keepalive_s: float | None = None  # the upstream's own Keep-Alive timeout, if it named one
        self.reused = False  # carries a request after an earlier one (was handed out of the pool)
        self.spoiled = False  # the upstream sent more than the answer asked for: never reused
        self.head_done = False  # the reply's final status and headers were parsed
        self.head_bytes = 0  # bytes fed while the reply's head was incomplete (since the last 1xx)
        self.interim = 0  # 1xx answers so far
        self.answered = False  # a byte of the reply arrived
        self.tls = False  # over TLS: the write buffer seen here is not the socket's
        self.sent = 0  # bytes of the current request handed to the transport
        self.aborted = False  # closed by the gateway itself, not by the upstream

    def send(self, data: bytes) -> Reply:
        if self.transport is None or self.reply is not None:
            raise RuntimeError("a connection carries one request at a time")
        self.reply = Reply(self)
        self.head_done, self.head_bytes, self.interim, self.answered = False, 0, 0, False
        self.sent = len(data)
        self.transport.write(data)
        return self.reply

    def quiet(self) -> bool:
        """Open, and nothing arrived on the socket since its reply ended: an EOF or a stray byte the loop
        has not read yet (the upstream closed the connection while the gateway was busy) shows here,
        before a request is sent on it. One poll() syscall."""
        if not self.open or self.transport is None or self.transport.is_closing():
            return False
        return self.poller is None or not self.poller.poll(0)

    def flushed(self) -> bool:
        """Every byte of the request left the gateway (none waits in the transport's buffer). Over TLS
        that buffer is only the TLS layer's, so a request is known sent only if it was small too."""
        return (self.transport is not None and self.transport.get_write_buffer_size() == 0
                and (not self.tls or self.sent <= TLS_REUSE_MAX_REQUEST))

    def abort(self) -> None:
        """Close at once: what waits to be sent is dropped (an upstream that stopped reading must not
        hold a request's body in the gateway, nor TLS wait for a close_notify that never comes)."""
        self.open, self.aborted = False, True
        if self.transport is not None:
            self.transport.abort()

    def pause(self) -> None:
        if not self.paused and self.transport is not None and self.open:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and self.open:
            self.paused = False
            self.transport.resume_reading()

    # asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.open = cast(asyncio.Transport, transport), True  # uvloop's is no subclass
        self.poller = _poller(transport)
        self.tls = transport.get_extra_info("ssl_object") is not None

    def data_received(self, data: bytes) -> None:
        reply = self.reply
        if reply is None:  # bytes nobody asked for: this connection cannot be trusted again
            self.abort()
            return
        self.answered = True
        if not self.head_done:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
            if not self.head_done and self.head_bytes > MAX_HEAD_BYTES:
                raise BadResponse(f"the upstream's response head is over {MAX_HEAD_BYTES} bytes")
        except BadResponse as exc:
            reply.fail(exc)
            self.abort()
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            # A limit our callbacks enforce comes wrapped (HttpParserCallbackError). An upgrade (101)
            # is not an answer either: BadResponse, never Disconnected (so never sent again).
            cause = exc.__context__
            reply.fail(cause if isinstance(cause, BadResponse) else
                       BadResponse(f"the upstream's answer is not HTTP/1.1 ({type(exc).__name__})"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        reply = self.reply
        if reply is not None and not reply.complete:
            if exc is None and not self.aborted and reply.headers_read.done() and _reads_to_close(reply):
                # A body without a length ends where the upstream closes the connection: not at a reset,
                # nor where the gateway aborted it (that body may be cut short).
                reply.on_complete(False)
            else:
                stale = self.reused and not self.answered
                reply.fail(Disconnected("the upstream closed the connection before its reply ended", stale))

    # httptools callbacks (after the reply completed, the rest of the bytes belong to no request) --

    # (data_received feeds the parser only while a reply is awaited: `reply is None` never holds here)

    def on_message_begin(self) -> None:
        reply = self.reply
        if reply is not None and reply.complete:
            self.spoiled = True

    def on_header(self, name: bytes, value: bytes) -> None:
        reply = self.reply
        if reply is None or self.spoiled:
            return
        if len(reply.raw_headers) >= MAX_HEADERS:
            raise BadResponse(f"the upstream's response has over {MAX_HEADERS} headers")
        if len(name) > MAX_FIELD_BYTES or len(value) > MAX_FIELD_BYTES:
            raise BadResponse(f"a header of the upstream's response is over {MAX_FIELD_BYTES} bytes")
        reply.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        reply = self.reply
        if reply is None or self.spoiled:
            return
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise BadResponse("the upstream switched protocols (101): not an answer")
            # An interim answer (103 Early Hints): the real one follows.
            self.interim += 1
            if self.interim > MAX_INTERIM:
                raise BadResponse(f"the upstream sent over {MAX_INTERIM} interim (1xx) answers")
            reply.raw_headers.clear()
            self.head_bytes = 0
            return
        self.head_done = True
        reply.on_headers(status)
        if (keep_alive := reply.headers.get("keep-alive")) is not None:
            self.keepalive_s = _keep_alive_timeout(keep_alive)

    def on_body(self, body: bytes) -> None:
        reply = self.reply
        if reply is not None and not self.spoiled:
            reply.on_body(body)

    def on_message_complete(self) -> None:
        reply = self.reply
        if reply is None or self.spoiled or (not self.head_done and reply.error is None):
            return  # the end of an interim answer
        reply.on_complete(self.parser.should_keep_alive())


def _reuse_margin(upstream_timeout_s: float) -> float:
    """How long a connection may idle before reuse when the upstream closes idle ones after
    `upstream_timeout_s`: a margin below it, proportional for a short one (timeout=1 gives 0.5 s, not 0)."""
    return max(upstream_timeout_s - 1.0, upstream_timeout_s / 2)


def _reads_to_close(reply: Reply) -> bool:
    """A body framed by the connection's end: no Content-Length and not chunked."""
    if "content-length" in reply.headers:
        return False
    codings = [token.strip().lower() for token in reply.headers.get("transfer-encoding", "").split(",")]
    return codings[-1] != "chunked"


class Exchange:
    """`async with client.request(...) as reply`: the reply once its headers arrived. On exit the
    connection goes back to the pool only when the whole request left the gateway and the reply was
    read to its end and may be kept alive; otherwise (cancelled, timed out, failed, left half-read,
    answered before its body was sent) it is aborted."""

    __slots__ = ("client", "connection", "data", "fresh", "head_timeout_s", "holds_slot", "reply")

    def __init__(self, client: Http1Client, data: bytes, fresh: bool, head_timeout_s: float | None) -> None:
        self.client, self.data, self.fresh, self.head_timeout_s = client, data, fresh, head_timeout_s
        self.connection: Connection | None = None
        self.reply: Reply | None = None
        self.holds_slot = False

    async def __aenter__(self) -> Reply:
        client = self.client
        if not client.slots.take():
            await client.slots.wait()
        self.holds_slot = True  # until finish()
        try:
            connection = (None if self.fresh else client.idle_connection()) or await client.connect()
            self.connection = connection
            client.active.add(connection)
            reply = self.reply = connection.send(self.data)
            if self.head_timeout_s is None:
                await reply.headers_read
            else:
                async with asyncio.timeout(self.head_timeout_s):
                    await reply.headers_read
            return reply
        except BaseException:
            self.finish()
            raise

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.finish()

    def finish(self) -> None:
        """Hand the connection back or abort it; safe to call more than once."""
        if not self.holds_slot:
            return
        self.holds_slot = False
        connection, reply = self.connection, self.reply
        self.connection = None
        if connection is not None:
            connection.reply = None
            self.client.active.discard(connection)
            reusable = (reply is not None and reply.complete and reply.keep_alive and reply.error is None
                        and not reply.chunks and connection.open and not connection.spoiled
                        and connection.flushed())
            if reusable:
                self.client.keep(connection)
            else:
                connection.abort()
        self.client.slots.release()


class Http1Client:
    """The connections to one upstream origin."""

    def __init__(self, origin: Origin, keepalive_s: float) -> None:
        self.origin = origin
        self.keepalive_s = keepalive_s
        self.idle: list[Connection] = []  # last in, first out: the most recently used is the likeliest open
        self.active: set[Connection] = set()  # carrying a request now
        self.closed = False
        self.slots = Slots(MAX_CONNECTIONS)
        self.opened = 0  # connections opened so far (bench/upstream_hop.py checks every call reused one)

    def request(self, head: str, body: bytes | None, fresh: bool = False,
                head_timeout_s: float | None = None) -> Exchange:
        """`head` is the request line and header lines without the blank line that ends them;
        Content-Length is added here (none for `body` None: a GET or a DELETE).
        `fresh`: on a new connection, not a kept-alive one. `head_timeout_s`: how long to wait for
        the reply's status and headers (for a stream held open, whose caller sets no deadline)."""
        if body is None:
            return Exchange(self, f"{head}\r\n".encode(), fresh, head_timeout_s)
        return Exchange(self, f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body, fresh, head_timeout_s)

    def idle_connection(self) -> Connection | None:
        now = time.monotonic()
        while self.idle:
            connection = self.idle.pop()
            limit = self.keepalive_s if connection.keepalive_s is None else min(
                self.keepalive_s, _reuse_margin(connection.keepalive_s))
            if now - connection.idle_since < limit and connection.quiet():
                connection.reused = True
                return connection
            connection.abort()  # the upstream closed it, or it idled past the upstream's own timeout
        return None

    async def connect(self) -> Connection:
        origin = self.origin
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                Connection, origin.host, origin.port, ssl=origin.tls,
                server_hostname=origin.host if origin.tls is not None else None)
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {origin.authority} ({type(exc).__name__})") from exc
        self.opened += 1
        return connection

    def keep(self, connection: Connection) -> None:
        if self.closed or len(self.idle) >= MAX_IDLE:
            connection.abort()
            return
        connection.idle_since = time.monotonic()
        self.idle.append(connection)

    def close(self) -> None:
        """Abort every connection, idle or carrying a request (whose reader then gets Disconnected)."""
        self.closed = True
        for connection in [*self.idle, *self.active]:
            connection.abort()
        self.idle.clear()
