"""The credential stage: for an HTTP upstream, a token minted for this one tool, this upstream and this
argument set (never the agent's own token); a stdio child gets none (its environment holds its secrets)."""

from __future__ import annotations

from gateway.calls.call import Arguments, ToolCall
from gateway.catalog.model import HttpTransport
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.per_turn import PerTurn
from gateway.policy.engine import Decision
from gateway.random_draws import TRANSACTION_ID
from gateway.telemetry import Telemetry
from gateway.upstream.pool import UpstreamPool
from gateway.verifier import argument_digest


class Credential:
    def __init__(self, auth: UpstreamAuth, pool: UpstreamPool, telemetry: Telemetry) -> None:
        self.auth = auth
        self.pool = pool
        self.telemetry = telemetry
        self.signing = PerTurn()  # the tokens asked for in one turn of the loop, signed back to back

    async def __call__(self, call: ToolCall, decision: Decision, arguments: Arguments) -> dict[str, str] | None:
        server = self.pool.catalog.servers[call.entry.server_id]
        if not isinstance(server.transport, HttpTransport):
            return None
        principal = call.principal
        txn = call.request.trace_id or TRANSACTION_ID.take()  # no trace: 128 random bits (secrets.token_hex(16))
        digest = decision.args_digest or argument_digest(arguments)
        if server.credentials.mode == "gateway-token" and not self.telemetry.tracing_enabled:
            # Nothing to wait for and no span to open: the token alone, signed with the turn's others (per_turn.py).
            return await self.signing.run(self.auth.token_headers, server.credentials, principal, call.entry.name,
                                          digest, principal.task_id, txn)
        with self.telemetry.stage("mint"):
            return await self.auth.for_call(server, principal, call.entry.name, digest, principal.task_id, txn)
