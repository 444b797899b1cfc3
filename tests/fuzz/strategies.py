"""Hypothesis strategies shared by the fuzzers: JSON values, JSON-RPC messages, odd text."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Text that reaches the corners: control characters, surrogate-free astral code points, NUL,
# combining marks (NFC changes), slashes, dots and percent signs (paths), quotes (Cedar literals).
ODD_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("/.%\\\"'\x00\n\r\t :=?[]{}~-_é\u0301\u212b\u2028\ufeff")),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=24,
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(),  # past 64 bits too: JSON allows them, serializers and Cedar do not
    st.floats(allow_nan=False, allow_infinity=False),
    ODD_TEXT,
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(ODD_TEXT, children, max_size=4)),
    max_leaves=16,
)
MCP_METHODS = (
    "initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get", "resources/list",
    "resources/read", "resources/templates/list", "resources/subscribe", "completion/complete",
    "logging/setLevel", "server/discover", "notifications/initialized", "notifications/cancelled",
)
METHODS = st.one_of(st.sampled_from(MCP_METHODS), ODD_TEXT)
IDS = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), ODD_TEXT)


@st.composite
def message_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """JSON-RPC-shaped objects: mostly right, with any one member missing, mistyped or extra."""
    body: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        body["jsonrpc"] = "2.0"
    else:
        body["jsonrpc"] = draw(JSON_VALUES)
    if draw(st.booleans()):
        body["id"] = draw(st.one_of(IDS, JSON_VALUES))
    if draw(st.integers(0, 4)):
        body["method"] = draw(st.one_of(METHODS, JSON_VALUES) if draw(st.integers(0, 5)) == 0 else METHODS)
    if draw(st.booleans()):
        body["params"] = draw(st.one_of(st.dictionaries(ODD_TEXT, JSON_VALUES, max_size=4), JSON_VALUES))
    if draw(st.integers(0, 5)) == 0:
        body[draw(st.sampled_from(["result", "error"]))] = draw(JSON_VALUES)
    extra = draw(st.dictionaries(ODD_TEXT, JSON_VALUES, max_size=2))
    return {**extra, **body}


def nested(depth: int, leaf: Any = 1) -> Any:
    """`leaf` inside `depth` alternating lists and objects."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def wire(body: Any) -> bytes:
    """JSON as an agent could send it (integers of any size, UTF-8 as is)."""
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def as_decoded(value: Any) -> Any:
    """`value` as the gateway reads it back: orjson reads an integer past 64 bits as the nearest double."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value)
    if isinstance(value, dict):
        return {k: as_decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_decoded(v) for v in value]
    return value
