"""The Mcp-Param-* check of a 2026-07-28 tools/call, skipped for tools whose schema declares none.

`validate_mcp_param_headers` walks the tool's whole input schema on every call. Most tools declare no
`x-mcp-header` anywhere: then it has no annotated position to compare and always answers None
(a stray or duplicated Mcp-Param-* header is only checked against declared positions). Whether a
schema declares any is worked out once per schema object and remembered, so such calls skip the walk.
"""

from __future__ import annotations

from collections.abc import Mapping

from mcp.shared.inbound import X_MCP_HEADER_KEY, InboundLadderRejection, validate_mcp_param_headers

from gateway.json_values import JsonValue

MAX_REMEMBERED = 4096  # schemas; the tool catalog's size, cleared whole past it

# id(schema) -> (the schema itself, whether any mapping in it has the key). The schema is held, so its
# id cannot be reused by another object while the entry exists; identity is checked on every hit.
_declares: dict[int, tuple[object, bool]] = {}


def check_param_headers(input_schema: JsonValue, arguments: Mapping[str, JsonValue],
                        headers: Mapping[str, str]) -> InboundLadderRejection | None:
    """validate_mcp_param_headers(input_schema, arguments, headers), without the schema walk when the
    schema has no x-mcp-header key at any depth."""
    if not declares_param_headers(input_schema):
        return None
    return validate_mcp_param_headers(input_schema, arguments, headers)


def declares_param_headers(input_schema: JsonValue) -> bool:
    known = _declares.get(id(input_schema))
    if known is not None and known[0] is input_schema:
        return known[1]
    found = _has_key(input_schema)
    if len(_declares) >= MAX_REMEMBERED:
        _declares.clear()
    _declares[id(input_schema)] = (input_schema, found)
    return found


def _has_key(value: object) -> bool:
    """Whether any mapping inside `value` has the x-mcp-header key (a superset of the schema positions the
    SDK looks at, so False means it has none to check)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if X_MCP_HEADER_KEY in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False
