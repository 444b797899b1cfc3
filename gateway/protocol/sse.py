"""Server-sent events: encode frames for agents, decode frames from upstreams (both sides use it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]
PING_FRAME = b": ping\n\n"


def encode_event(data: bytes, event_id: str | None = None) -> bytes:
    head = b"event: message\n"
    if event_id is not None:
        head = b"id: " + event_id.encode() + b"\n" + head
    return head + b"data: " + data + b"\n\n"


def encode_retry(event_id: str, retry_ms: int) -> bytes:
    """A priming event: an id to resume from and how long to wait, with no data."""
    return b"id: " + event_id.encode() + b"\nretry: " + str(retry_ms).encode() + b"\ndata: \n\n"


@dataclass(slots=True)
class Event:
    data: str
    id: str | None = None
    event: str = "message"
    retry: int | None = None


async def decode_events(lines: AsyncIterator[bytes]) -> AsyncIterator[Event]:
    """Turn a byte stream of SSE lines into events (per the WHATWG event-stream grammar)."""
    data: list[str] = []
    event_id: str | None = None
    event_type = "message"
    retry: int | None = None
    async for raw in lines:
        # The event-stream grammar decodes UTF-8 with replacement: a bad byte is not the end of the stream.
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data or event_id is not None or retry is not None:
                yield Event("\n".join(data), event_id, event_type, retry)
            data, event_id, event_type, retry = [], None, "message", None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
        elif name == "event":
            event_type = value
        elif name == "retry" and value.isascii() and value.isdigit():  # not "²", which int() refuses
            retry = int(value)
    if data:
        yield Event("\n".join(data), event_id, event_type, retry)
