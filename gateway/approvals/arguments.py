"""The arguments of a held call as the people who decide it see them.

Unlike the audit log's short preview, an approver must see the call itself: every key and value,
nested ones too, nothing cut silently. What stays hidden is a secret: every value of a tool whose
data classes mark it as handling secrets or credentials, values under secret-looking keys
(password, token, api key...) and values that look like credentials themselves. Whatever is
hidden or shortened says so in place. Only people who may decide the request (and admins) see it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.audit.redact import is_sensitive_key, looks_like_credential
from gateway.json_values import JsonValue

SECRET_CLASSES = frozenset({"secret", "secrets", "credentials", "credential"})
MAX_STRING = 4000  # characters shown of one string; the rest is counted, not dropped silently
MAX_ITEMS = 200  # items shown of one list or object
MAX_DEPTH = 32
HIDDEN = "[hidden: secret]"


def approver_view(arguments: Mapping[str, Any] | None, data_classes: Sequence[str]) -> JsonValue:
    if not isinstance(arguments, Mapping):
        return None
    secret_tool = any(str(c).strip().lower() in SECRET_CLASSES for c in data_classes)
    return _object(arguments, secret_tool, 0)


def _value(value: object, key: str | None, secret_tool: bool, depth: int) -> JsonValue:
    if depth > MAX_DEPTH:
        return f"[nested deeper than {MAX_DEPTH} levels: not shown]"
    if key is not None and is_sensitive_key(key):
        return HIDDEN  # everything under a secret-looking key, lists and objects too
    if isinstance(value, Mapping):
        return _object(value, secret_tool, depth + 1)
    if isinstance(value, list | tuple):
        shown = [_value(v, None, secret_tool, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            shown.append(f"[{len(value) - MAX_ITEMS} more items not shown]")
        return shown
    if secret_tool:
        return HIDDEN
    if isinstance(value, str):
        if looks_like_credential(value):
            return HIDDEN
        if len(value) > MAX_STRING:
            return value[:MAX_STRING] + f"[... {len(value) - MAX_STRING} more characters not shown]"
    return value


def _object(value: Mapping[str, Any], secret_tool: bool, depth: int) -> dict[str, Any]:
    keys = list(value)
    shown = {str(k): _value(value[k], str(k), secret_tool, depth) for k in keys[:MAX_ITEMS]}
    if len(keys) > MAX_ITEMS:
        shown["[not shown]"] = f"{len(keys) - MAX_ITEMS} more keys"
    return shown


SUMMARY_CHARS = 120  # one line of an inbox row
SUMMARY_VALUE_CHARS = 40


def argument_summary(preview: object, limit: int = SUMMARY_CHARS) -> str:
    """One short line from an approver_view preview (secrets already hidden), e.g.
    `amount=120, currency="EUR", to="acme"`: enough to tell two requests of one tool apart."""
    if not isinstance(preview, Mapping):
        return ""
    parts = [f"{key}={_short(value)}" for key, value in preview.items()]
    line = ", ".join(parts) if parts else "(no arguments)"
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _short(value: object) -> str:
    if value == HIDDEN:
        return "[hidden]"
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= SUMMARY_VALUE_CHARS else text[:SUMMARY_VALUE_CHARS - 1] + "…"
