"""The forward stage: the decided request on to its upstream, with the trace and the caller's client
envelope; a tool call with exactly the arguments the policy judged (paths normalized, NFC)."""

from __future__ import annotations

from typing import Any

from mcp.shared.inbound import mcp_param_headers

from gateway.approvals.step_up import without_approval_round
from gateway.calls.call import Arguments, Reply, RequestContext, ToolCall
from gateway.catalog.model import ServerEntry
from gateway.protocol.errors import RpcError
from gateway.telemetry import Telemetry
from gateway.upstream.base import CallContext
from gateway.upstream.pool import UpstreamPool


class Forward:
    def __init__(self, pool: UpstreamPool, telemetry: Telemetry) -> None:
        self.pool = pool
        self.telemetry = telemetry

    async def tool(self, call: ToolCall, arguments: Arguments, auth: dict[str, str] | None) -> Reply:
        entry, view = call.entry, call.view
        server = self.pool.catalog.servers[entry.server_id]
        call_ctx = self.call_context(call.request, server, auth)
        if view.param_headers:
            call_ctx.headers.update(mcp_param_headers(view.param_headers, arguments or {}))
        upstream_params = {**without_approval_round(call.params), "name": entry.name}
        if arguments is not None:
            upstream_params["arguments"] = arguments
        with self.telemetry.stage("upstream_call", upstream=server.id):
            self.telemetry.inject(call_ctx.headers)
            try:
                return await self.pool.call(entry.server_id, "tools/call", upstream_params, call_ctx)
            except RpcError as exc:
                self.telemetry.record_upstream_error(server.id, str(exc.code))
                raise

    async def request(self, request: RequestContext, server_id: str, method: str, params: dict[str, Any]) -> Reply:
        """An authorized prompt, resource, completion or subscription request, with the trace."""
        call_ctx = self.call_context(request, self.pool.catalog.servers[server_id])
        self.telemetry.inject(call_ctx.headers)
        return await self.pool.call(server_id, method, params, call_ctx)

    @staticmethod
    def call_context(request: RequestContext, server: ServerEntry, auth: dict[str, str] | None = None) -> CallContext:
        """How to call `server` for this request (the caller adds the trace where its span is current)."""
        request.record.upstream = server.id
        return CallContext(era=request.era, timeout_s=server.timeout_s, sink=request.sink,
                           client_capabilities=request.client_capabilities, client_info=request.client_info,
                           auth=auth)
