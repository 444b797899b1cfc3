"""A managed stdio child process speaking MCP (handshake era), restarted with backoff.

All agents share one child, so the gateway assigns its own request ids and progress tokens and
maps replies back. Progress notifications carry the call's token and go to that call's agent. Log
lines and server-to-client requests carry nothing that names a call on a stdio pipe, so they are
never relayed (a request is refused, a log line dropped): guessing would hand one agent's traffic
to another. The child gets a minimal environment (see child_process) and dies with the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.catalog.model import ServerEntry, StdioTransport
from gateway.credentials.secret_sources import SecretResolver, SecretUnavailable
from gateway.json_values import JsonValue
from gateway.protocol.capabilities import GATEWAY_CLIENT_CAPABILITIES, GATEWAY_CLIENT_INFO
from gateway.protocol.eras import LEGACY_ERA
from gateway.protocol.errors import REQUEST_TIMEOUT, UPSTREAM_UNAVAILABLE, RpcError
from gateway.settings.limits import DEFAULT_MAX_UPSTREAM_REPLY_BYTES
from gateway.upstream.base import (
    SESSION_NOTIFICATIONS,
    VERBOSE_LOGGING,
    CallContext,
    SessionEventHandler,
    legacy_params,
    log,
    refusal,
)
from gateway.upstream.child_process import child_environment, die_with_parent
from gateway.upstream.deadlines import Deadlines
from gateway.upstream.reply_limit import (
    CHUNK_BYTES,
    OversizedLine,
    ReplyTooLarge,
    capped_lines,
    sniff_message,
)

RESTART_MIN_S = 0.25
RESTART_MAX_S = 30.0
STABLE_AFTER_S = 30.0  # a child must stay up this long before its restart delay resets
STOP_GRACE_S = 3.0


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[dict[str, Any]]
    ctx: CallContext
    progress_token: JsonValue = None


class StdioUpstream:
    def __init__(self, server: ServerEntry, on_event: SessionEventHandler, secrets: SecretResolver,
                 max_reply_bytes: int = DEFAULT_MAX_UPSTREAM_REPLY_BYTES) -> None:
        assert isinstance(server.transport, StdioTransport)
        self.server_id = server.id
        self.transport = server.transport
        self.credentials = server.credentials
        self.secrets = secrets
        self.on_event = on_event
        self.max_reply_bytes = max_reply_bytes
        self.process: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.pending: dict[int, _Pending] = {}
        self.ids = itertools.count(1)
        self.deadlines = Deadlines()  # the requests' timeouts
        self.supervisor: asyncio.Task[None] | None = None
        self.background: set[asyncio.Task[object]] = set()
        self.closed = False
        self.restarts = 0
        self.last_error: str | None = None  # why the last start failed (no secret values)

    @property
    def available(self) -> bool:
        return self.ready.is_set()

    async def start(self) -> None:
        self.supervisor = asyncio.create_task(self.supervise())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.ready.wait()

    async def close(self) -> None:
        self.closed = True
        if self.supervisor:
            self.supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.supervisor
        await self.stop_process()

    # Process lifecycle -----------------------------------------------------------------------

    async def supervise(self) -> None:
        delay = RESTART_MIN_S
        while not self.closed:
            started = time.monotonic()
            try:
                reader = await self.spawn_and_initialize()
                await reader
            except (OSError, ValueError, RpcError) as exc:
                self.last_error = exc.message if isinstance(exc, RpcError) else None
                log.warning("upstream %s failed to start: %s", self.server_id, exc)
            self.ready.clear()
            self.fail_pending(f"upstream {self.server_id!r} exited")
            await self.stop_process()
            if self.closed:
                return
            self.restarts += 1
            if time.monotonic() - started > STABLE_AFTER_S:
                delay = RESTART_MIN_S  # it ran fine for a while: this is a fresh failure
            log.warning("upstream %s is down; restarting in %.2fs", self.server_id, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX_S)

    async def spawn_and_initialize(self) -> asyncio.Task[None]:
        """Start the child and its reader, and do the handshake; returns the reader task."""
        # Never the gateway's own environment: it holds admin, approver and agent tokens and other
        # upstreams' secrets. Own session: a clean stop ends the child's whole process group.
        env = child_environment(os.environ, self.transport.inherit_env,
                                {**self.transport.env, **await self.secret_env()})
        self.process = await asyncio.create_subprocess_exec(
            self.transport.command, *self.transport.args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=self.transport.cwd, env=env, start_new_session=True, preexec_fn=die_with_parent,
        )
        self.spawn(self.drain_stderr(self.process))
        reader = asyncio.create_task(self.read_loop(self.process))
        try:
            params = {"protocolVersion": LEGACY_ERA, "capabilities": GATEWAY_CLIENT_CAPABILITIES,
                      "clientInfo": GATEWAY_CLIENT_INFO}
            ctx = CallContext(era=LEGACY_ERA, timeout_s=15)
            reply = await self.send_request("initialize", params, ctx)
            if "result" not in reply:
                raise RpcError(UPSTREAM_UNAVAILABLE, f"upstream {self.server_id!r} refused initialize")
            await self.write({"jsonrpc": "2.0", "method": "notifications/initialized"})
            if "logging" in (reply["result"].get("capabilities") or {}):
                await self.write(VERBOSE_LOGGING)
        except BaseException:
            reader.cancel()
            raise
        self.ready.set()
        self.last_error = None
        log.info("upstream %s started (pid %s)", self.server_id, self.process.pid)
        return reader

    async def secret_env(self) -> dict[str, str]:
        """A stdio upstream's per-server secret is read at each (re)start: rotation needs a restart."""
        credentials = self.credentials
        if credentials.mode != "secret" or credentials.secret is None:
            return {}
        try:
            return {credentials.env_var: await self.secrets.value(credentials.secret)}
        except SecretUnavailable as exc:
            raise RpcError(UPSTREAM_UNAVAILABLE, f"credentials for upstream {self.server_id!r}: {exc}") from None

    async def stop_process(self) -> None:
        """SIGTERM to the child's process group (its own children too), SIGKILL after a grace period."""
        process, self.process = self.process, None
        if process is None:
            return
        _signal_group(process, signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                await process.wait()
        except TimeoutError:
            pass
        _signal_group(process, signal.SIGKILL)  # whatever of the group is still there
        await process.wait()

    async def drain_stderr(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            log.debug("upstream %s stderr: %s", self.server_id, line.decode(errors="replace").rstrip())

    # Messages --------------------------------------------------------------------------------

    async def read_loop(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        read = functools.partial(process.stdout.read, CHUNK_BYTES)
        async for line in capped_lines(read, self.max_reply_bytes):
            if isinstance(line, OversizedLine):
                self.discard_oversized(line)
                continue
            if not line.strip():
                continue
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning("upstream %s wrote a line that is not JSON", self.server_id)
                continue
            if isinstance(message, dict):
                await self.dispatch(message)

    async def dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method is None:
            message_id = message.get("id")
            pending = self.pending.pop(message_id, None) if isinstance(message_id, int) else None
            if pending is not None and not pending.future.done():
                pending.future.set_result(message)
            return
        if "id" in message:
            # Sampling, elicitation, roots: nothing on a stdio pipe says which call asked.
            self.spawn(self.refuse_server_request(message["id"], "cannot tie this request to a call"))
        elif method in SESSION_NOTIFICATIONS:
            await self.on_event(self.server_id, message)
        elif method == "notifications/progress":
            await self.relay_progress(message)
        else:
            log.debug("upstream %s: %s names no call; not relayed", self.server_id, method)

    async def relay_progress(self, message: dict[str, Any]) -> None:
        params = message.get("params") or {}
        token = params.get("progressToken")
        pending = self.pending.get(token) if isinstance(token, int) else None
        if pending is None or pending.ctx.sink is None or pending.progress_token is None:
            return
        await pending.ctx.sink.notify({**message, "params": {**params, "progressToken": pending.progress_token}})

    async def refuse_server_request(self, request_id: object, why: str) -> None:
        with contextlib.suppress(RpcError):
            await self.write(refusal(request_id, why))

    def discard_oversized(self, line: OversizedLine) -> None:
        """Fail the call an oversized reply answered, or refuse the oversized request, when the line
        says for certain which it was; otherwise the call it answered ends at its timeout."""
        log.warning("upstream %s sent a %d-byte message, over limits.max_upstream_reply_bytes (%d); "
                    "discarded", self.server_id, line.size, self.max_reply_bytes)
        match sniff_message(line):
            case ("reply", request_id):
                pending = self.pending.pop(request_id, None) if isinstance(request_id, int) else None
                if pending is not None and not pending.future.done():
                    pending.future.set_exception(ReplyTooLarge(self.server_id, self.max_reply_bytes))
            case ("request", request_id):
                self.spawn(self.refuse_server_request(request_id, "refused a request over its size limit"))

    async def write(self, message: dict[str, Any]) -> None:
        process = self.process
        if process is None or process.stdin is None or process.returncode is not None:
            raise RpcError(UPSTREAM_UNAVAILABLE, f"upstream {self.server_id!r} is unavailable")
        process.stdin.write(orjson.dumps(message) + b"\n")
        try:
            await process.stdin.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise RpcError(UPSTREAM_UNAVAILABLE, f"upstream {self.server_id!r} is unavailable") from exc

    async def send_request(self, method: str, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        request_id = next(self.ids)
        params, agent_token = self.own_progress_token(params, request_id)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = _Pending(future, ctx, agent_token)
        try:
            await self.write({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            with self.deadlines.within(ctx.timeout_s):  # asyncio.timeout's behaviour on shared timers
                return await future
        except TimeoutError:
            await self.cancel(request_id, "timed out at the gateway")
            raise RpcError(REQUEST_TIMEOUT, f"upstream {self.server_id!r} did not answer within "
                                            f"{ctx.timeout_s:g}s") from None
        except asyncio.CancelledError:
            await asyncio.shield(self.cancel(request_id, "cancelled by the agent"))
            raise
        finally:
            self.pending.pop(request_id, None)

    @staticmethod
    def own_progress_token(params: dict[str, Any], request_id: int) -> tuple[dict[str, Any], JsonValue]:
        """Swap the agent's progress token for the gateway's request id, which is unique on this pipe."""
        meta = params.get("_meta")
        if not isinstance(meta, dict) or "progressToken" not in meta:
            return params, None
        return {**params, "_meta": {**meta, "progressToken": request_id}}, meta["progressToken"]

    async def cancel(self, request_id: int, reason: str) -> None:
        with contextlib.suppress(RpcError):
            await self.write({"jsonrpc": "2.0", "method": "notifications/cancelled",
                              "params": {"requestId": request_id, "reason": reason}})

    async def call(self, method: str, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        if not self.ready.is_set():
            raise RpcError(UPSTREAM_UNAVAILABLE, f"upstream {self.server_id!r} is unavailable")
        return await self.send_request(method, legacy_params(params), ctx)

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        if self.ready.is_set():
            with contextlib.suppress(RpcError):
                await self.write({"jsonrpc": "2.0", "method": method, "params": params})

    def fail_pending(self, reason: str) -> None:
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_exception(RpcError(UPSTREAM_UNAVAILABLE, reason))
        self.pending.clear()

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


def _signal_group(process: asyncio.subprocess.Process, sig: int) -> None:
    # The child leads its own session (start_new_session): its pid is its process group's id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
