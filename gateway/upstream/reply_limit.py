"""The cap on one upstream message (`limits.max_upstream_reply_bytes`), enforced while reading.

Upstream bytes are read in chunks and split into lines here, so that a message over the cap is
never held whole: stdio lines and SSE events alike. A stdio pipe resyncs at the next newline (a
JSON-RPC message never holds a raw one), so an oversized line is discarded, not the child.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.protocol.errors import UPSTREAM_ERROR, RpcError
from gateway.protocol.jsonrpc import RequestId

CHUNK_BYTES = 64 * 1024
HEAD_BYTES = 1024  # kept of an oversized line, to tell whose message it was
TAIL_BYTES = 256
LIMIT_KEY = "limits.max_upstream_reply_bytes"

ReadChunk = Callable[[], Awaitable[bytes]]
"""Returns the next chunk of a byte stream, b"" at its end."""


class ReplyTooLarge(RpcError):
    """An upstream message was larger than the cap; it was discarded unread."""

    def __init__(self, server_id: str, limit: int) -> None:
        super().__init__(UPSTREAM_ERROR, f"upstream {server_id!r} sent a message larger than {LIMIT_KEY} "
                                         f"({limit} bytes); it was discarded",
                         {"limit": LIMIT_KEY, "maxBytes": limit})


@dataclass(slots=True)
class OversizedLine:
    """What is kept of a line over the cap: its size, its first and its last bytes."""

    size: int
    head: bytes
    tail: bytes = b""

    def extend(self, data: bytes) -> None:
        self.size += len(data)
        self.tail = (self.tail + data)[-TAIL_BYTES:]


async def capped_lines(read: ReadChunk, limit: int) -> AsyncIterator[bytes | OversizedLine]:
    """The lines of a byte stream (without their "\\n"); a line longer than `limit` bytes comes out
    as an OversizedLine once it ends, having been skipped without being held."""
    partial = bytearray()
    oversized: OversizedLine | None = None
    while chunk := await read():
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:end]
            start = end + 1
            if oversized is not None:
                oversized.extend(piece)
                yield oversized
                oversized = None
            elif len(partial) + len(piece) > limit:
                yield _oversized(partial, piece)
                partial.clear()
            elif partial:
                partial += piece
                yield bytes(partial)
                partial.clear()
            else:
                yield piece
        rest = chunk[start:]
        if oversized is not None:
            oversized.extend(rest)
        elif len(partial) + len(rest) > limit:
            oversized = _oversized(partial, rest)
            partial.clear()
        else:
            partial += rest
    if oversized is not None:
        yield oversized
    elif partial:
        yield bytes(partial)


def _oversized(partial: bytearray, piece: bytes) -> OversizedLine:
    line = OversizedLine(len(partial), bytes(partial[:HEAD_BYTES]), bytes(partial[-TAIL_BYTES:]))
    if len(line.head) < HEAD_BYTES:
        line.head += piece[:HEAD_BYTES - len(line.head)]
    line.extend(piece)
    return line


async def capped_sse_lines(read: ReadChunk, limit: int, server_id: str) -> AsyncIterator[bytes]:
    """SSE lines, ending the stream with ReplyTooLarge once one event passes `limit` bytes."""
    event_bytes = 0
    async for line in capped_lines(read, limit):
        if isinstance(line, OversizedLine):
            raise ReplyTooLarge(server_id, limit)
        event_bytes = event_bytes + len(line) if line.strip(b"\r") else 0
        if event_bytes > limit:
            raise ReplyTooLarge(server_id, limit)
        yield line


# Reading whose message an oversized line was, only where the JSON is unambiguous: the plain
# members that open the top-level object (`{"jsonrpc":"2.0","id":7,"method":"..."`), the first
# other member's key, and a closing `,"id":7}` (valid JSON puts nothing nested after it).
_OPEN = re.compile(rb'\s*\{')
_PLAIN_MEMBER = re.compile(rb'\s*"(jsonrpc|id|method)"\s*:\s*("[^"\\]*"|-?\d+)\s*,')
_NEXT_KEY = re.compile(rb'\s*"(result|error|params)"\s*:')
_CLOSING_ID = re.compile(rb',\s*"id"\s*:\s*("[^"\\]*"|-?\d+)\s*(?:,\s*"jsonrpc"\s*:\s*"2\.0"\s*)?\}\s*$')


def sniff_message(line: OversizedLine) -> tuple[str, RequestId] | None:
    """("reply", id) or ("request", id) for an oversized JSON-RPC message when its kind and id can be
    read without parsing it whole; None when they cannot be read for certain."""
    opened = _OPEN.match(line.head)
    if opened is None:
        return None
    members: dict[str, Any] = {}
    pos = opened.end()
    while member := _PLAIN_MEMBER.match(line.head, pos):
        members[member.group(1).decode()] = orjson.loads(member.group(2))
        pos = member.end()
    next_key = _NEXT_KEY.match(line.head, pos)
    if "method" in members:
        return ("request", members["id"]) if "id" in members else None
    if next_key is None or next_key.group(1) == b"params":
        return None
    if "id" in members:
        return "reply", members["id"]
    closing = _CLOSING_ID.search(line.tail)
    return ("reply", orjson.loads(closing.group(1))) if closing else None
