"""Canonical JSON, fast: orjson where it writes exactly the bytes stdlib `json` writes, stdlib otherwise.

The audit chain (gateway.audit.chain) and the argument digest (gateway.verifier.argument_digest) are
defined by `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`, encoded as
UTF-8 ("surrogatepass" for lone surrogates). orjson with OPT_SORT_KEYS writes the same bytes, at a
fraction of the cost, for plain JSON values: keys sorted by code point, the same string escapes, the
same shortest float spelling at or above 1e-4 in magnitude, integers within 64 bits (checked over a
million random floats and in tests/test_audit_bytes.py). It writes different bytes, or refuses, for:
floats below 1e-4 in magnitude (`0.00001` where stdlib writes `1e-05`), NaN and infinities (`null`
where stdlib writes `NaN`), integers beyond 64 bits, lone surrogates, non-string keys, and types it
serializes natively that stdlib does not (datetime, dataclasses, enums, numpy). `is_plain` admits
only values with none of those; everything else takes the stdlib path, so the bytes never change.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from gateway.json_values import JsonValue

_STDLIB = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
MIN_PLAIN_FLOAT = 1e-4  # below this (but not 0) orjson spells a float without an exponent, stdlib with one
_INT_RANGE = range(-(2**63), 2**64)  # what orjson writes as an integer (i64 and u64)


def is_plain(value: JsonValue) -> bool:
    """True when orjson's canonical spelling of `value` is stdlib's (see the module docstring)."""
    if type(value) is not dict:
        return _walked(value)
    # A dict, most often flat (an audit record's detail, a redacted preview): one pass, no stack.
    for key, item in value.items():
        if type(key) is not str:
            return False
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int or kind is float:
            if not plain_number(item):
                return False
        elif not _walked(item):
            return False
    return True


def _walked(value: JsonValue) -> bool:
    """is_plain for any value: every item looked at."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    return False
            extend(item.values())
        elif kind is list or kind is tuple:
            extend(item)
        elif kind is int or kind is float:
            if not plain_number(item):
                return False
        else:
            return False
    return True


def plain_number(number: int | float) -> bool:
    """An int or a float (not a subclass) that orjson spells as stdlib does."""
    if type(number) is int:
        return number in _INT_RANGE
    return number == 0.0 or MIN_PLAIN_FLOAT <= abs(number) < math.inf  # NaN fails both


def canonical_bytes(value: object) -> bytes:
    """`json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` as UTF-8 bytes."""
    if is_plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # a lone surrogate: stdlib keeps it (surrogatepass)
            pass
    return _STDLIB.encode(value).encode("utf-8", "surrogatepass")


def canonical_text(value: object) -> str:
    """canonical_bytes as text (lone surrogates kept, as stdlib `json.dumps` keeps them)."""
    if is_plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")
        except orjson.JSONEncodeError:
            pass
    return _STDLIB.encode(value)


def json_normalized(value: dict[str, Any]) -> dict[str, Any]:
    """`value` as JSON types, the way `json.loads(json.dumps(value, default=str))` gives it back (valid
    UTF-8: a lone surrogate becomes "?"), so what is hashed now is what the database returns later."""
    normalized: dict[str, Any]
    if is_plain(value):
        try:
            normalized = orjson.loads(orjson.dumps(value))
            return normalized
        except orjson.JSONEncodeError:
            pass
    # default=str: a datetime or an enum in `detail` becomes its text instead of failing the write.
    text = json.dumps(value, default=str, ensure_ascii=False)
    normalized = json.loads(text.encode("utf-8", "replace").decode("utf-8"))
    return normalized
