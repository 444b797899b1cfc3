"""Canonical arguments: the one spelling of a tool call's arguments that policies see.

Cedar's `like` compares characters, not meanings: `/data/public/../secret/x` matches
`like "/data/public/*"`, and an NFD "é" does not equal an NFC one. So before evaluation every
string is NFC-normalized, every path-, URI- or URL-shaped string is put in its canonical form
(gateway.policy.paths: decoded once, dot segments resolved, ambiguous encodings refused), and
numbers are given the type the tool's JSON Schema declares. The gateway forwards these canonical
arguments upstream, so the call that runs is the call that was decided.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

from gateway.json_values import JsonValue
from gateway.policy.paths import CanonicalizationError, canonical_path

__all__ = ["CanonicalizationError", "canonicalize", "is_path_name", "normalize_path"]

PATH_FORMATS = frozenset({"path", "uri", "uri-reference", "iri", "iri-reference"})
# A property is path-like when a word of its name is one of these ("file_path", "sourceUrl", "dir")...
PATH_WORDS = frozenset({"path", "paths", "pathname", "file", "files", "filename", "filenames", "filepath",
                        "dir", "dirs", "dirname", "directory", "directories", "folder", "folders",
                        "url", "urls", "uri", "uris", "iri", "href"})
# ...unless its last word says it holds something else ("file_content", "url_template").
NOT_PATH_LAST_WORDS = frozenset({"content", "contents", "text", "body", "data", "bytes", "base64", "size",
                                 "length", "count", "type", "mime", "mimetype", "mode", "encoding", "hash",
                                 "checksum", "digest", "id", "ids", "template", "templates"})
NAME_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
PATH_PREFIXES = ("/", "./", "../", "~/")
URL_SHAPED = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]+://|file:)", re.IGNORECASE)
MAX_DEPTH = 64
PATH_NAME_CACHE = 4096  # distinct argument names remembered


def canonicalize(arguments: dict[str, Any] | None, input_schema: dict[str, Any] | None) -> dict[str, Any]:
    """A new dict: NFC strings and keys, normalized paths, numbers typed by `input_schema`.

    Raises CanonicalizationError when two keys of one object collide after NFC (the policy and
    the upstream could read different values for "the same" argument), or when a path-shaped
    value has no single meaning (see gateway.policy.paths); the message names the argument.
    """
    if not arguments:
        return {}
    schema = input_schema if isinstance(input_schema, dict) else {}
    return _object(arguments, schema, 0)


def normalize_path(value: str) -> str:
    """The canonical form of one path, URI or URL (gateway.policy.paths.canonical_path)."""
    return canonical_path(value)


@functools.lru_cache(maxsize=PATH_NAME_CACHE)
def is_path_name(name: str) -> bool:
    """Whether a property name says it holds a path, file, directory or URL (remembered: the same
    argument names come call after call, and splitting them into words costs more than the rest)."""
    words = [w.lower() for w in NAME_WORD.findall(name)]
    return bool(words) and words[-1] not in NOT_PATH_LAST_WORDS and any(w in PATH_WORDS for w in words)


def _value(value: object, schema: dict[str, Any], path_hint: bool, depth: int) -> JsonValue:
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
        items = given if isinstance(given := schema.get("items"), dict) else {}
        return [_value(item, items, path_hint, depth + 1) for item in value]
    return value


def _object(value: dict[str, Any], schema: dict[str, Any], depth: int) -> dict[str, Any]:
    properties = given if isinstance(given := schema.get("properties"), dict) else {}
    result: dict[str, Any] = {}
    for raw_key, item in value.items():
        key = unicodedata.normalize("NFC", raw_key) if isinstance(raw_key, str) else raw_key
        if key in result:
            raise CanonicalizationError(f"argument {key!r} appears twice once Unicode is normalized")
        sub = properties.get(key) or properties.get(raw_key) or {}
        sub = sub if isinstance(sub, dict) else {}
        hint = isinstance(key, str) and is_path_name(key)
        try:
            # (a string, the most common argument, straight to _string: what _value does with one at this depth)
            result[key] = _string(item, sub, hint) if type(item) is str and depth <= MAX_DEPTH else _value(
                item, sub, hint, depth)
        except CanonicalizationError as exc:
            raise CanonicalizationError(f"{key}: {exc}" if isinstance(key, str) else str(exc)) from None
    return result


def _string(value: str, schema: dict[str, Any], path_hint: bool) -> str:
    text = unicodedata.normalize("NFC", value)
    # (URL_SHAPED needs a ":": a text without one is not matched against it at all)
    if (path_hint or schema.get("format") in PATH_FORMATS or text.startswith(PATH_PREFIXES)
            or (":" in text and URL_SHAPED.match(text))):
        return canonical_path(text)
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
