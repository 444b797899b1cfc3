"""A 2026-07-28 request's envelope against its headers: the cheap checks that let the common request past.

The SDK's ladder (`mcp.shared.inbound.classify_inbound_request`) decides whether a request's `_meta`
envelope and its mirrored headers agree; it is the one source of every rejection and its wording. Most
requests agree plainly (a string version the gateway serves, in the header too; the method and the name
in their headers as they are in the body), and proving that takes a few dict reads: `plainly_agrees` is
True only then, and anything else goes to the ladder. Likewise `names_repeat` tells, by comparing the header
dict's size with the raw header list's, that no header name was sent twice, so the duplicate checks run only
when one may have been.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.shared.inbound import MCP_METHOD_HEADER, MCP_NAME_HEADER, MCP_PROTOCOL_VERSION_HEADER, NAME_BEARING_METHODS
from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

# An Mcp-Name header starting so may be base64-wrapped (the SDK's `=?base64?...?=`): its decoding is the ladder's.
WRAPPED_PREFIX = "=?"


def plainly_agrees(body: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    """True only where the SDK's ladder accepts `body` with `headers` (lowercase names): an envelope carrying
    client capabilities and a served version string, the same version in MCP-Protocol-Version, the body's
    method in Mcp-Method and, for a method that names something, the name unwrapped in Mcp-Name. False
    says nothing: ask the ladder."""
    params = body.get("params")
    if type(params) is not dict:
        return False
    meta = params.get("_meta")
    if type(meta) is not dict or CLIENT_CAPABILITIES_META_KEY not in meta:
        return False
    version = meta.get(PROTOCOL_VERSION_META_KEY)
    if type(version) is not str or version not in MODERN_PROTOCOL_VERSIONS:
        return False
    method = body.get("method")
    if headers.get(MCP_PROTOCOL_VERSION_HEADER) != version or type(method) is not str \
            or headers.get(MCP_METHOD_HEADER) != method:
        return False
    name_key = NAME_BEARING_METHODS.get(method)
    if name_key is None:
        return True
    named = params.get(name_key)
    if named is None:
        return True
    header = headers.get(MCP_NAME_HEADER)
    return header is not None and header == named and not header.startswith(WRAPPED_PREFIX)


def names_repeat(headers: Mapping[str, str], raw_headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether two raw header names are one name once lowercased, as the duplicate checks lowercase them:
    `headers` keys every raw name that way (HeaderNames), so fewer keys than raw names means a repeat.
    False means no header of any kind was sent twice."""
    return len(headers) != len(raw_headers)


def duplicated_param_header(raw_headers: list[tuple[str, str]]) -> str | None:
    """An Mcp-Param-* header sent more than once: the checked copy and the one an intermediary reads
    could differ, and `headers` (one value per name) has already kept only the last."""
    seen: set[str] = set()
    for name, _ in raw_headers:
        key = name.lower()
        if key.startswith("mcp-param-"):
            if key in seen:
                return key
            seen.add(key)
    return None
