"""Writing replies to agents: plain JSON, or an SSE stream once side traffic has to go out first."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.types import Receive, Send

from gateway.protocol.eras import MODERN_ERA
from gateway.protocol.errors import HTTP_STATUS_FOR_CODE, METHOD_NOT_FOUND, REQUEST_TIMEOUT, RpcError
from gateway.protocol.jsonrpc import error_reply
from gateway.protocol.log_levels import log_allowed
from gateway.protocol.sse import PING_FRAME, SSE_HEADERS, encode_event
from gateway.state.sessions import StreamLog
from gateway.transport.sessions import AgentSession

ASK_TIMEOUT_S = 600.0
# Which client capability a relayed server-to-client request needs.
ASK_CAPABILITY = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation",
                  "roots/list": "roots"}
RETRY_MS = 1000
# A held reply whose connection closed waits this long for the agent to resume its stream (Last-Event-ID).
RESUME_GRACE_S = 10.0
RESUME_POLL_S = 0.25


# The content-type header of every reply the gateway writes, encoded once.
CONTENT_TYPES = {name: (b"content-type", name.encode()) for name in ("application/json", "text/plain")}


async def send_bytes(
    send: Send, status: int, body: bytes, content_type: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [CONTENT_TYPES.get(content_type) or (b"content-type", content_type.encode()),
               (b"content-length", b"%d" % len(body))]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_json_error(send: Send, status: int, request_id: object, error: RpcError) -> None:
    body = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "error": error.to_error()})
    await send_bytes(send, status, body, "application/json")


class ResponseChannel:
    """The reply path of one agent request; also the CallSink its upstream call reports into."""

    def __init__(
        self, send: Send, accepts_sse: bool, session: AgentSession | None, era: str, log_level: str | None,
        receive: Receive | None = None,
    ) -> None:
        self.send = send
        self.receive = receive  # the request's own connection, watched by gone()
        self.accepts_sse = accepts_sse
        self.session = session
        self.era = era
        self.log_level = log_level
        self.streaming = False
        # Handshake-era streams are logged in the session so the agent can resume them.
        self.log: StreamLog | None = None

    async def start_stream(self) -> None:
        if self.streaming:
            return
        self.streaming = True
        await self.send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        if self.session is not None:
            self.log = self.session.open_post_stream()
            await self.send({"type": "http.response.body", "body": self.log.priming_frame(RETRY_MS),
                             "more_body": True})

    async def keepalive(self) -> None:
        """A comment frame on the SSE stream, so a long wait (an approval) is not cut off as idle."""
        if not self.accepts_sse:
            return
        await self.start_stream()
        await self.send({"type": "http.response.body", "body": PING_FRAME, "more_body": True})

    async def gone(self) -> None:
        """Return once nobody can receive this reply any more: the request's connection closed and no
        stream resumed with Last-Event-ID (at any replica) has followed it for RESUME_GRACE_S. Without a connection to
        watch (the 2026-07-28 era, whose disconnect cancels the request outright), never returns."""
        if self.receive is None:
            await asyncio.Event().wait()
            return
        await wait_disconnect(self.receive)
        unheard_since = time.monotonic()
        while self.log is not None and time.monotonic() - unheard_since < RESUME_GRACE_S:
            if self.log.listened():
                unheard_since = time.monotonic()
            await asyncio.sleep(RESUME_POLL_S)

    async def frame(self, data: bytes, final: bool = False) -> bytes:
        return await self.log.append(data, final) if self.log is not None else encode_event(data)

    async def write_event(self, message: dict[str, Any]) -> None:
        await self.start_stream()
        await self.send({"type": "http.response.body", "body": await self.frame(orjson.dumps(message)),
                         "more_body": True})

    async def notify(self, message: dict[str, Any]) -> None:
        if not self.accepts_sse:
            return  # a JSON-only agent cannot receive side traffic
        if not log_allowed(message, self.log_level, when_unset=self.era != MODERN_ERA):
            return
        await self.write_event(message)

    async def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        upstream_id = message["id"]
        refusal = self.refusal(message)
        if refusal is not None:
            return error_reply(upstream_id, METHOD_NOT_FOUND, refusal)
        assert self.session is not None
        ask_id = self.session.next_ask_id()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.session.asks[ask_id] = future
        try:
            await self.write_event({**message, "id": ask_id})
            async with asyncio.timeout(ASK_TIMEOUT_S):
                reply = await future
        except TimeoutError:
            return error_reply(upstream_id, REQUEST_TIMEOUT, "The agent did not answer in time")
        finally:
            self.session.asks.pop(ask_id, None)
        return {**reply, "id": upstream_id}

    def refusal(self, message: dict[str, Any]) -> str | None:
        if self.session is None or not self.accepts_sse:
            return "The agent's connection cannot carry requests from the server"
        capability = ASK_CAPABILITY.get(message.get("method", ""))
        if capability is None or capability not in self.session.client_capabilities:
            return f"The agent does not support {message.get('method')}"
        return None

    async def finish(self, request_id: object, reply: dict[str, Any]) -> None:
        payload: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        if "error" in reply:
            payload["error"] = reply["error"]
        else:
            payload["result"] = reply.get("result")
        body = orjson.dumps(payload)
        if self.streaming:
            frame = await self.frame(body, final=True)
            await self.send({"type": "http.response.body", "body": frame, "more_body": False})
            return
        status = 200
        if self.era == MODERN_ERA and "error" in reply:
            status = HTTP_STATUS_FOR_CODE.get(reply["error"].get("code"), 200)
        await send_bytes(self.send, status, body, "application/json")
