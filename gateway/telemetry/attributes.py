"""Span and metric attribute names: the only keys Narrowgate puts on its telemetry.

Names from the OpenTelemetry semantic conventions are used where they exist:

* MCP (`docs/gen-ai/mcp.md` in open-telemetry/semantic-conventions-genai, status Development): the server
  span is SERVER kind, named `{mcp.method.name} {target}` where target is `gen_ai.tool.name` or
  `gen_ai.prompt.name` when there is one; `mcp.method.name` is required, `error.type` is set if and only if
  the request failed (the JSON-RPC error code as a string, or `tool_error` for a CallToolResult with isError),
  and the span status is ERROR when `error.type` is present.
* GenAI tool execution (`docs/gen-ai/execute-tool.md`): `gen_ai.operation.name` is `execute_tool` on a
  `tools/call` span and absent otherwise; `gen_ai.tool.name` names the tool.

Everything Narrowgate-specific lives under `narrowgate.*`.

What never goes on a span or a metric: argument values (so no `gen_ai.tool.call.arguments`,
`gen_ai.tool.call.result` or `mcp.resource.uri`, which are request parameters), tokens, secrets, headers.
`RequestSpan.set` and `Telemetry.stage` accept only the keys in `SPAN_ATTRIBUTES` below and drop anything
else (logging the key once), so a stray key cannot leak a value.
"""

from __future__ import annotations

from typing import Final

# -- OpenTelemetry semantic conventions ---------------------------------------------------------------

MCP_METHOD_NAME: Final = "mcp.method.name"
"""The JSON-RPC method of the MCP request (`tools/call`, `tools/list`...). Required on every request span."""
MCP_SESSION_ID: Final = "mcp.session.id"
"""The Mcp-Session-Id of a 2025-11-25 session; absent for the sessionless 2026-07-28 era."""
MCP_PROTOCOL_VERSION: Final = "mcp.protocol.version"
"""The MCP protocol version the request was served under (`2025-11-25`, `2026-07-28`)."""
JSONRPC_REQUEST_ID: Final = "jsonrpc.request.id"
"""The JSON-RPC `id` as a string; not set for notifications or a null id."""
JSONRPC_PROTOCOL_VERSION: Final = "jsonrpc.protocol.version"
"""Only when it is not `2.0` (recommended that way by the conventions)."""
RPC_RESPONSE_STATUS_CODE: Final = "rpc.response.status_code"
"""The JSON-RPC error code of the reply, as a string (`-32602`), when the reply is an error."""
ERROR_TYPE: Final = "error.type"
"""Low-cardinality class of the failure: the JSON-RPC error code as a string, `tool_error`, `timeout`,
`cancelled`, an exception class name. Set if and only if the operation failed."""
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
"""`execute_tool` on `tools/call` request spans (set automatically)."""
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
"""The tool's name as the agent called it."""
GEN_AI_PROMPT_NAME: Final = "gen_ai.prompt.name"
"""The prompt's name for `prompts/get` and prompt completions."""
NETWORK_TRANSPORT: Final = "network.transport"
"""`tcp` for Streamable HTTP, `pipe` for a stdio upstream."""
NETWORK_PROTOCOL_NAME: Final = "network.protocol.name"
"""`http` when HTTP carries the request."""
CLIENT_ADDRESS: Final = "client.address"
"""The agent's address as the gateway sees it (no reverse DNS)."""
CLIENT_PORT: Final = "client.port"
SERVER_ADDRESS: Final = "server.address"
"""On the `upstream_call` span: the upstream host."""
SERVER_PORT: Final = "server.port"

# -- Narrowgate ---------------------------------------------------------------------------------------

AGENT_ID: Final = "narrowgate.agent.id"
"""The registered agent that made the request (from its verified credential)."""
AGENT_OWNER: Final = "narrowgate.agent.owner"
"""The human or team accountable for the agent."""
TASK_ID: Final = "narrowgate.task.id"
"""The task the agent's task token is bound to, when it has one."""
USER_SUB: Final = "narrowgate.user.sub"
"""The person a person's MCP client acts for (their `sub` at their issuer), when there is one."""
USER_ISSUER: Final = "narrowgate.user.issuer"
"""The authorization server that signed that person in."""
TASK_CHAIN: Final = "narrowgate.task.chain"
"""A delegated task's chain: the agent ids from the root task's agent to the caller's (string array)."""
DECISION: Final = "narrowgate.decision"
"""The policy outcome: `allow`, `deny`, `step_up` (approval required)..."""
POLICY_IDS: Final = "narrowgate.policy.ids"
"""The ids of the policies that determined the decision (string array)."""
DECISION_ID: Final = "narrowgate.decision.id"
"""The id of the decision record, which the audit log carries too (join key between trace and audit)."""
UPSTREAM: Final = "narrowgate.upstream"
"""The catalog id of the upstream server a request is routed to."""
APPROVAL_ID: Final = "narrowgate.approval.id"
"""On `approval_wait`: the approval request's id."""
APPROVAL_OUTCOME: Final = "narrowgate.approval.outcome"
"""On `approval_wait`: `approved`, `rejected`, `expired`..."""
CREDENTIAL_KIND: Final = "narrowgate.credential.kind"
"""On `mint`/`authenticate`: the kind of credential (`static`, `jwt`, `spiffe`, `task_token`...),
never the credential itself."""

# -- Values --------------------------------------------------------------------------------------------

EXECUTE_TOOL: Final = "execute_tool"
OTHER: Final = "_OTHER"
"""The conventions' fallback value; used for method names Narrowgate does not know (keeps metrics bounded)."""

STAGE_NAMES: Final = frozenset({"authenticate", "policy", "approval_wait", "mint", "upstream_call"})

SPAN_ATTRIBUTES: Final = frozenset({
    MCP_METHOD_NAME, MCP_SESSION_ID, MCP_PROTOCOL_VERSION, JSONRPC_REQUEST_ID, JSONRPC_PROTOCOL_VERSION,
    RPC_RESPONSE_STATUS_CODE, ERROR_TYPE, GEN_AI_OPERATION_NAME, GEN_AI_TOOL_NAME, GEN_AI_PROMPT_NAME,
    NETWORK_TRANSPORT, NETWORK_PROTOCOL_NAME, CLIENT_ADDRESS, CLIENT_PORT, SERVER_ADDRESS, SERVER_PORT,
    AGENT_ID, AGENT_OWNER, TASK_ID, TASK_CHAIN, USER_SUB, USER_ISSUER, DECISION, POLICY_IDS, DECISION_ID, UPSTREAM,
    APPROVAL_ID, APPROVAL_OUTCOME, CREDENTIAL_KIND,
})
"""Every key a span may carry. Anything else handed to `set`/`stage` is dropped."""

ALIASES: Final = {
    "agent_id": AGENT_ID,
    "agent_owner": AGENT_OWNER,
    "owner": AGENT_OWNER,
    "task_id": TASK_ID,
    "user_sub": USER_SUB,
    "user_issuer": USER_ISSUER,
    "task_chain": TASK_CHAIN,
    "decision": DECISION,
    "policy_ids": POLICY_IDS,
    "decision_id": DECISION_ID,
    "upstream": UPSTREAM,
    "tool_name": GEN_AI_TOOL_NAME,
    "prompt_name": GEN_AI_PROMPT_NAME,
    "session_id": MCP_SESSION_ID,
    "protocol_version": MCP_PROTOCOL_VERSION,
    "request_id": JSONRPC_REQUEST_ID,
    "error_type": ERROR_TYPE,
    "status_code": RPC_RESPONSE_STATUS_CODE,
    "approval_id": APPROVAL_ID,
    "approval_outcome": APPROVAL_OUTCOME,
    "credential_kind": CREDENTIAL_KIND,
    "server_address": SERVER_ADDRESS,
    "server_port": SERVER_PORT,
}
"""Keyword-friendly spellings: `span.set(agent_id="a")` is `span.set(**{AGENT_ID: "a"})`."""

# -- Metrics -------------------------------------------------------------------------------------------

METRIC_REQUESTS: Final = "narrowgate.requests"
"""Counter, `{request}`: MCP requests served; attrs mcp.method.name, narrowgate.decision, narrowgate.upstream,
error.type. Prometheus: `narrowgate_requests_total`."""
METRIC_REQUEST_DURATION: Final = "narrowgate.request.duration"
"""Histogram, seconds, same attributes. Prometheus: `narrowgate_request_duration_seconds_*`."""
METRIC_POLICY_EVALUATION_DURATION: Final = "narrowgate.policy.evaluation.duration"
"""Histogram, seconds; attr narrowgate.decision."""
METRIC_UPSTREAM_ERRORS: Final = "narrowgate.upstream.errors"
METRIC_DETECTIONS: Final = "narrowgate.detections"  # chain-monitoring detections, by detector and severity
DETECTOR: Final = "narrowgate.detector"
SEVERITY: Final = "narrowgate.severity"
"""Counter, `{error}`; attrs narrowgate.upstream, error.type."""
METRIC_APPROVALS_PENDING: Final = "narrowgate.approvals.pending"
"""Gauge, `{approval}`: approvals waiting for a human now."""
METRIC_TOOLS_QUARANTINED: Final = "narrowgate.tools.quarantined"
"""Gauge, `{tool}`: tools quarantined now."""
METRIC_VERSIONS: Final = "narrowgate.versions"
"""Gauge, always 1 (info style); attrs narrowgate.replica, narrowgate.policy.version, narrowgate.catalog.version:
replicas that disagree show different labels. Prometheus: `narrowgate_versions`."""
METRIC_GRANTED_TOOLS_UNUSED: Final = "narrowgate.granted_tools.unused"
"""Gauge, ratio 0..1: the share of an agent's granted tools (reach allow or step_up) it did not call with an
allow in the right-sizing window; attr narrowgate.agent.id, and `*` for the whole fleet. No series while the
window holds no recorded decision. Prometheus: `narrowgate_granted_tools_unused`."""
FLEET: Final = "*"
REPLICA: Final = "narrowgate.replica"
POLICY_VERSION: Final = "narrowgate.policy.version"
CATALOG_VERSION: Final = "narrowgate.catalog.version"

KNOWN_METHODS: Final = frozenset({
    "initialize", "ping", "server/discover", "subscriptions/listen",
    "tools/list", "tools/call", "prompts/list", "prompts/get",
    "resources/list", "resources/templates/list", "resources/read", "resources/subscribe",
    "resources/unsubscribe", "completion/complete", "logging/setLevel",
    "notifications/initialized", "notifications/cancelled", "notifications/progress",
    "notifications/roots/list_changed", "elicitation/create", "sampling/createMessage", "roots/list",
})
"""Methods recorded by name in metrics; any other method is recorded as `_OTHER` so an agent sending
made-up method names cannot grow the metric series without bound."""
