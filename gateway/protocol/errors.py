"""Every JSON-RPC error code the gateway sends or reads, each named once, and the exception that carries one.

RpcError is the one base for refusals: anything that ends a request with a JSON-RPC error the agent may
see raises it (or a subclass), and the transport turns it into the reply.
"""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REQUEST_TIMEOUT = -32001
RESOURCE_NOT_FOUND = -32002
# MCP 2026-07-28: a mirrored header that disagrees with the body; a capability the method needs.
HEADER_MISMATCH = -32020
MISSING_REQUIRED_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022
REQUEST_CANCELLED = -32800  # MCP 2025-11-25: the agent cancelled the request (notifications/cancelled)
# Implementation-defined range (-32000..-32099): the gateway's own outcomes.
UPSTREAM_UNAVAILABLE = -32010
UPSTREAM_ERROR = -32011
RATE_LIMITED = -32029
ACCESS_DENIED = -32030
APPROVAL_REQUIRED = -32031
# RFC 9470: the person must sign in again (recently / more strongly); over HTTP a 401 with the challenge.
REAUTHENTICATION_REQUIRED = -32032
URL_ELICITATION_REQUIRED = -32042  # MCP 2025-11-25: send the user to a URL, then retry
SHUTTING_DOWN = -32050  # the gateway stopped (SIGTERM/SIGINT) while the request was open

# How the modern (2026-07-28) transport maps error codes onto HTTP statuses.
HTTP_STATUS_FOR_CODE: dict[int, int] = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    MISSING_REQUIRED_CLIENT_CAPABILITY: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}


class RpcError(Exception):
    """An outcome that ends a request with a JSON-RPC error the agent may see."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error
