"""JSON-RPC messages: parse a body once, check its shape and nesting, and build replies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.protocol.errors import INVALID_REQUEST, PARSE_ERROR, RpcError

RequestId = str | int


@dataclass(slots=True)
class Message:
    """One decoded JSON-RPC message from an agent.

    kind is "request", "notification" or "response" (an answer to a request the gateway sent).
    """

    kind: str
    body: dict[str, Any]
    id: RequestId | None
    method: str | None
    params: dict[str, Any] | None


def parse_message(raw: bytes, max_depth: int) -> Message:
    """Decode and classify one message; raise RpcError with the spec's code on bad input."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            # orjson stops at 1024 levels; that is still valid JSON, merely nested too deep.
            raise RpcError(INVALID_REQUEST, f"Invalid Request: JSON nested deeper than {max_depth} levels") from exc
        raise RpcError(PARSE_ERROR, "Parse error: body is not valid JSON") from exc
    if isinstance(body, list):
        raise RpcError(INVALID_REQUEST, "Invalid Request: JSON-RPC batches are not supported")
    if not isinstance(body, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: body must be a JSON-RPC object")
    if body.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    # Every container opens with a bracket, so a body with no more brackets than the limit (brackets
    # inside strings only over-count) cannot nest deeper: the walk is needed only past that.
    if raw.count(b"{") + raw.count(b"[") > max_depth:
        check_depth(body, max_depth)
    return classify(body)


def classify(body: dict[str, Any]) -> Message:
    method = body.get("method")
    has_id = "id" in body
    request_id = body.get("id")
    if has_id and (isinstance(request_id, bool) or not isinstance(request_id, str | int)):
        raise RpcError(INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
    if method is None:
        if has_id and ("result" in body or "error" in body):
            return Message("response", body, request_id, None, None)
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "method" is required')
    if not isinstance(method, str):
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "method" must be a string')
    params = body.get("params")
    if params is not None and not isinstance(params, dict):
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "params" must be an object')
    return Message("request" if has_id else "notification", body, request_id, method, params)


def check_depth(value: object, max_depth: int) -> None:
    """Refuse documents nested deeper than max_depth (they cost stack further down the line)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise RpcError(INVALID_REQUEST, f"Invalid Request: JSON nested deeper than {max_depth} levels")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, dict | list))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))


def error_reply(request_id: object, code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC error response without `data` (for requests the gateway answers itself)."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
