"""Canonical arguments: the one spelling of a tool call's arguments that policies see.

Cedar's `like` compares characters, not meanings: `/data/public/../secret/x` matches
`like "/data/public/*"`, and an NFD "é" does not equal an NFC one. So before evaluation every
string is NFC-normalized and every path-like string has its dot segments resolved, and numbers are
given the type the tool's JSON Schema declares. The gateway should forward these canonical
arguments upstream too, so the call that runs is the call that was decided.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PATH_FORMATS = frozenset({"path", "uri", "uri-reference", "iri", "iri-reference"})
PATH_NAME = re.compile(r"(path|file|dir|url|uri|folder)", re.IGNORECASE)
PATH_PREFIXES = ("/", "./", "../", "~/")
# A URL scheme of two or more characters, so a Windows drive letter ("C:") is not taken for one.
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")
# Percent-encoded unreserved characters (RFC 3986 section 6.2.2.2): "%2e%2e" is "..".
PERCENT_UNRESERVED = re.compile(r"%(2[dDeE]|5[fF]|7[eE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA])")
MAX_DEPTH = 64


class CanonicalizationError(ValueError):
    """The arguments have no single canonical form (two keys that are equal after NFC)."""


def canonicalize(arguments: dict[str, Any] | None, input_schema: dict[str, Any] | None) -> dict[str, Any]:
    """A new dict: NFC strings and keys, normalized paths, numbers typed by `input_schema`.

    Raises CanonicalizationError when two keys of one object collide after NFC, because then
    the policy and the upstream could read different values for "the same" argument.
    """
    if not arguments:
        return {}
    schema = input_schema if isinstance(input_schema, dict) else {}
    return _object(arguments, schema, 0)


def normalize_path(value: str) -> str:
    """Resolve `.`, `..` and `//` in a path, or in the path part of a URL; never climb above the root."""
    if URL_SCHEME.match(value):
        return _normalize_url(value)
    return _normalize_plain_path(value)


def _value(value: Any, schema: dict[str, Any], path_hint: bool, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise CanonicalizationError("arguments are nested too deeply")
    if isinstance(value, str):
        return _string(value, schema, path_hint)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return _number(value, schema)
    if isinstance(value, dict):
        return _object(value, schema, depth + 1)
    if isinstance(value, list | tuple):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        return [_value(item, items, path_hint, depth + 1) for item in value]
    return value


def _object(value: dict[str, Any], schema: dict[str, Any], depth: int) -> dict[str, Any]:
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    result: dict[str, Any] = {}
    for raw_key, item in value.items():
        key = unicodedata.normalize("NFC", raw_key) if isinstance(raw_key, str) else raw_key
        if key in result:
            raise CanonicalizationError(f"argument {key!r} appears twice once Unicode is normalized")
        sub = properties.get(key) or properties.get(raw_key) or {}
        sub = sub if isinstance(sub, dict) else {}
        hint = isinstance(key, str) and PATH_NAME.search(key) is not None
        result[key] = _value(item, sub, hint, depth)
    return result


def _string(value: str, schema: dict[str, Any], path_hint: bool) -> str:
    text = unicodedata.normalize("NFC", value)
    if path_hint or schema.get("format") in PATH_FORMATS or text.startswith(PATH_PREFIXES):
        return normalize_path(text)
    return text


def _number(value: int | float, schema: dict[str, Any]) -> int | float:
    declared = _declared_type(schema)
    # An integral float ("3.0") is the same number as 3; typing it as int lets it fit a Long.
    if declared in ("integer", "number") and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _declared_type(schema: dict[str, Any]) -> str | None:
    declared = schema.get("type")
    if isinstance(declared, list):
        non_null = [t for t in declared if t != "null"]
        return non_null[0] if len(non_null) == 1 else None
    return declared if isinstance(declared, str) else None


def _normalize_url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed "[" in the host: no URL parser agrees on what it names
        raise CanonicalizationError("a URL that cannot be parsed (an unclosed '[' in its host)") from None
    if not parts.path:
        return value
    path = PERCENT_UNRESERVED.sub(lambda m: chr(int(m.group(1), 16)), parts.path)
    return urlunsplit(parts._replace(path=_normalize_plain_path(path)))


def _normalize_plain_path(value: str) -> str:
    if value.startswith("~/"):
        root, rest = "~/", value[2:]
    elif value.startswith("/"):
        root, rest = "/", value
    else:
        root, rest = "", value
    segments: list[str] = []
    for segment in rest.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments and segments[-1] != "..":
                segments.pop()
            elif not root:
                segments.append("..")  # a relative path may climb; it cannot be resolved here
            continue
        segments.append(segment)
    joined = root + "/".join(segments)
    trailing = value.endswith("/") and segments and not joined.endswith("/")
    if not joined:
        return "."
    return joined + "/" if trailing else joined
