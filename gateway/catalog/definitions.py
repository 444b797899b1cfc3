"""Pinned tool definitions: which fields a pin covers, their hash, and diffs for reviewers.

A pin must change whenever anything the model reads changes, so nothing here normalizes text:
a zero-width space added to a description changes the hash. Only `_meta` and fields outside
DEFINITION_FIELDS are dropped, because upstreams vary those freely without changing the tool.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import unicodedata
from collections.abc import Mapping
from typing import Any, Final

from gateway.json_values import JsonValue

DEFINITION_FIELDS = ("name", "description", "inputSchema", "outputSchema", "annotations", "title")
SCHEMA_FIELDS = ("inputSchema", "outputSchema")
# Schemas from an upstream are untrusted; past this depth a subtree is compared as one value.
MAX_DEPTH = 64
MAX_PLAIN_DEPTH = 128  # copying/hashing deeper than this is refused (stack safety), not attempted

# Code points that render as nothing (or reorder what is shown) yet reach the model as text.
HIDDEN_RANGES: tuple[tuple[int, int], ...] = (
    (0x200B, 0x200F),  # zero-width space/joiners, LRM/RLM
    (0x2060, 0x2064),  # word joiner, invisible operators
    (0xFEFF, 0xFEFF),  # zero-width no-break space (BOM)
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2066, 0x2069),  # bidi isolates
    (0xE0000, 0xE007F),  # tag characters: invisible ASCII ("ASCII smuggling")
    (0xE0100, 0xE01EF),  # supplementary variation selectors: invisible data carriers
    (0x115F, 0x1160),  # Hangul fillers render blank
    (0x3164, 0x3164),
    (0xFFA0, 0xFFA0),
)
# Format, private-use, control and surrogate code points, plus the invisible line separators.
HIDDEN_CATEGORIES = frozenset({"Cf", "Co", "Cc", "Cs", "Zl", "Zp"})
_VISIBLE_CONTROLS = frozenset("\n\t\r")
_MISSING: Final = object()  # a key absent from one side of a diff


def definition_of(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an MCP tool definition (camelCase, as listed by tools/list) that a pin covers."""
    return {field: _plain(tool[field]) for field in DEFINITION_FIELDS if field in tool}


def claimed_risk(definition: Mapping[str, Any]) -> str:
    """The risk tier a tool's annotations claim: destructiveHint -> destructive, readOnlyHint -> read, else write.

    The upstream's word, not a review: a quarantined tool carries it until a person decides, and
    `narrowgate catalog discover` drafts it for the owner to check.
    """
    annotations = given if isinstance(given := definition.get("annotations"), dict) else {}
    if annotations.get("destructiveHint") is True:
        return "destructive"
    if annotations.get("readOnlyHint") is True:
        return "read"
    return "write"


def canonical_json(value: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8 without escapes: one byte string per value."""
    text = json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # json.loads accepts lone surrogates ("\ud800"); they must hash, not crash.
    return text.encode("utf-8", "surrogatepass")


def definition_hash(tool: Mapping[str, Any]) -> str:
    """`sha256:<hex>` of the canonical JSON of definition_of(tool)."""
    return "sha256:" + hashlib.sha256(canonical_json(definition_of(tool))).hexdigest()


def definition_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per changed field: {"field", "change": added|removed|changed, "old", "new"}.

    Schema fields also carry "changes": [{"path", "change", "old", "new"}] with JSON-pointer
    paths, found recursively through objects (lists are compared whole). Absent values are None;
    "change" tells an absent value from a JSON null.
    """
    before = definition_of(old) if old is not None else {}
    after = definition_of(new)
    entries = []
    for field in DEFINITION_FIELDS:
        entry = _field_entry(field, before.get(field, _MISSING), after.get(field, _MISSING))
        if entry is not None:
            entries.append(entry)
    return entries


def unified_text_diff(old: str, new: str, *, reveal: bool = True) -> str:
    """A unified diff of two descriptions; hidden characters shown as [U+XXXX] unless reveal=False."""
    if reveal:
        # Otherwise a line that gained a zero-width space shows as two identical lines.
        old, new = reveal_hidden(old), reveal_hidden(new)
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), "before", "after", lineterm="")
    diff = "\n".join(lines)
    if not diff and old != new:
        return "(the texts differ only in line endings)"
    return diff


def description_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """The unified diff of two definitions' descriptions; "" when they are the same."""
    old_text = str((old or {}).get("description") or "")
    new_text = str(new.get("description") or "")
    return unified_text_diff(old_text, new_text) if old_text != new_text else ""


def is_hidden(char: str) -> bool:
    """Whether a character is invisible or reorders text (newline, tab and CR are not)."""
    if char in _VISIBLE_CONTROLS:
        return False
    code = ord(char)
    if code < 0x80:  # fast path: descriptions are mostly ASCII, where only controls hide
        return code < 0x20 or code == 0x7F
    if any(low <= code <= high for low, high in HIDDEN_RANGES):
        return True
    return unicodedata.category(char) in HIDDEN_CATEGORIES


def reveal_hidden(text: str) -> str:
    """`text` with every hidden character written as [U+XXXX]."""
    return "".join(f"[U+{ord(char):04X}]" if is_hidden(char) else char for char in text)


def pointer_join(path: str, key: str) -> str:
    """Append one JSON Pointer (RFC 6901) segment."""
    return f"{path}/{key.replace('~', '~0').replace('/', '~1')}"


def _field_entry(field: str, old: object, new: object) -> dict[str, Any] | None:
    if old is _MISSING and new is _MISSING:
        return None
    if old is not _MISSING and new is not _MISSING and _same(old, new):
        return None
    entry = {"field": field, "change": _change_kind(old, new), "old": _absent_none(old), "new": _absent_none(new)}
    if field in SCHEMA_FIELDS:
        # An added or removed schema is diffed against {} so reviewers still see its paths.
        entry["changes"] = _path_changes({} if old is _MISSING else old, {} if new is _MISSING else new, "", 0)
    return entry


def _path_changes(old: object, new: object, path: str, depth: int) -> list[dict[str, Any]]:
    if isinstance(old, dict) and isinstance(new, dict) and depth < MAX_DEPTH:
        changes = []
        for key in sorted(old.keys() | new.keys()):
            sub = pointer_join(path, key)
            changes += _path_changes(old.get(key, _MISSING), new.get(key, _MISSING), sub, depth + 1)
        return changes
    if old is not _MISSING and new is not _MISSING and _same(old, new):
        return []
    return [{"path": path, "change": _change_kind(old, new), "old": _absent_none(old), "new": _absent_none(new)}]


def _same(old: object, new: object) -> bool:
    # Compared as the hash sees them: True != 1 and 10 != 10.0 here too.
    return canonical_json(old) == canonical_json(new)


def _change_kind(old: object, new: object) -> str:
    if old is _MISSING:
        return "added"
    return "removed" if new is _MISSING else "changed"


def _absent_none(value: object) -> JsonValue:
    return None if value is _MISSING else value


class DefinitionTooDeep(ValueError):
    """A definition nested deeper than anyone writes by hand: not analysed, so never approved by itself."""


def _plain(value: object, depth: int = 0) -> JsonValue:
    """A JSON-ready deep copy: any Mapping becomes a dict, any list or tuple a list."""
    if depth > MAX_PLAIN_DEPTH:
        raise DefinitionTooDeep(f"a tool definition nested more than {MAX_PLAIN_DEPTH} levels deep")
    if isinstance(value, Mapping):
        return {key: _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, depth + 1) for item in value]
    return value
