"""Short, safe previews of call arguments for the audit log.

The audit log is read by more people than the data a tool touches, so the preview shows the
shape of a call (which keys, roughly what) and never a value that might be a secret: all values
of tools handling sensitive data classes, values under sensitive-looking keys, and values that
look like credentials themselves are replaced by "[redacted]". Nested structures are summarized,
never shown, so a secret nested deep under an innocent key cannot leak either. The full
arguments stay provable through the args digest (gateway.verifier.argument_digest).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.json_values import JsonValue

REDACTED = "[redacted]"
SENSITIVE_CLASSES = frozenset({"secret", "secrets", "credentials", "pii", "financial", "phi"})
MAX_KEYS = 20  # more keys than this are counted, not listed
MIN_VALUE_CHARS = 8  # so many keys still leave a recognizable start of each value
MAX_KEY_CHARS = 64

# Matched against the key lowercased with "-", "_", "." and spaces removed (apiKey, api-key, API_KEY).
_SENSITIVE_KEY_PARTS = (
    "password", "passwd", "passphrase", "secret", "token", "apikey", "accesskey", "privatekey",
    "authorization", "credential", "cookie", "sessionid", "cardnumber", "creditcard", "cardno",
    "accountnumber", "iban", "routingnumber", "socialsecurity",
)
# Matched against whole words of the key, where substrings would hit innocent keys
# ("classname" contains "ssn", "discard" contains "card").
_SENSITIVE_KEY_WORDS = frozenset({"ssn", "pin", "cvv", "cvc", "otp", "card", "pwd", "jwt", "bearer", "auth"})
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# Values that are credentials whatever their key: bearer/basic headers, JWTs, PEM keys, well-known token prefixes.
_CREDENTIAL_VALUE = re.compile(
    r"^\s*(?:bearer|basic)\s+\S"
    r"|eyJ[\w-]{4,}\.[\w-]{4,}\."
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|\b(?:gh[pousr]_|github_pat_|sk-|sk_live_|rk_live_|xox[abpr]-|AKIA|ASIA|AIza)[\w-]{8,}",
    re.IGNORECASE,
)
# A literal part each branch of _CREDENTIAL_VALUE needs, lowercased: ASCII text whose lowercase holds none of them
# cannot match, so the pattern is not run on it. ASCII only: IGNORECASE also folds a few non-ASCII letters to
# ASCII ones (the long s to "s", the Kelvin sign to "k"), so other text always runs the pattern.
_CREDENTIAL_MARK = re.compile(r"bearer|basic|eyj|-----begin |gh[pousr]_|github_pat_|sk-|sk_live_|rk_live_|xox[abpr]-"
                              r"|akia|asia|aiza")


def redacted_preview(
    arguments: Mapping[str, Any] | None, data_classes: Sequence[str], *, max_chars: int = 200
) -> dict[str, Any] | None:
    """A short preview of `arguments` that is safe to keep in the audit log; None when there are none."""
    if type(arguments) is not dict and not isinstance(arguments, Mapping):
        return None
    redact_all = is_sensitive_tool(data_classes)
    count = len(arguments)
    budget = max(MIN_VALUE_CHARS, max_chars // max(1, min(count, MAX_KEYS)))
    preview: dict[str, Any] = {}
    for key, value in itertools.islice(arguments.items(), MAX_KEYS):
        text = key if type(key) is str else str(key)
        name = text if len(text) <= MAX_KEY_CHARS else _short(text, MAX_KEY_CHARS)
        preview[name] = REDACTED if redact_all or is_sensitive_key(text) else _preview_value(value, budget)
    if count > MAX_KEYS:
        preview["..."] = f"{count - MAX_KEYS} more keys"
    return preview


_STR_ONLY = frozenset({str})


def is_sensitive_tool(data_classes: Sequence[str]) -> bool:
    # A catalog entry's tuple of str: the same few call after call. Only exact str members are cached: an equal
    # member of another type (a str enum) could have another str() and so another answer.
    if type(data_classes) is tuple and _STR_ONLY.issuperset(map(type, data_classes)):
        return _is_sensitive_classes(data_classes)
    return _any_sensitive(data_classes)


def _any_sensitive(data_classes: Sequence[str]) -> bool:
    return any(str(data_class).strip().lower() in SENSITIVE_CLASSES for data_class in data_classes)


_is_sensitive_classes = functools.lru_cache(maxsize=1024)(_any_sensitive)


# Argument names repeat call after call; bounded, so made-up names cannot grow it without limit.
@functools.lru_cache(maxsize=4096)
def is_sensitive_key(key: str) -> bool:
    squashed = re.sub(r"[-_.\s]", "", key.lower())
    if any(part in squashed for part in _SENSITIVE_KEY_PARTS):
        return True
    words = {word.lower() for word in _WORD_SPLIT.split(key) if word}
    return not words.isdisjoint(_SENSITIVE_KEY_WORDS)


def looks_like_credential(text: str) -> bool:
    # str's own methods: a str subclass cannot answer for the characters the pattern reads
    if str.isascii(text) and _CREDENTIAL_MARK.search(str.lower(text)) is None:
        return False  # none of the literal parts every credential pattern needs (see _CREDENTIAL_MARK)
    return _CREDENTIAL_VALUE.search(text) is not None


def _preview_value(value: object, budget: int) -> JsonValue:
    # The JSON types by identity first: isinstance of a union or an ABC costs more, per argument per call.
    if type(value) is str:
        return REDACTED if looks_like_credential(value) else value if len(value) <= budget else _short(value, budget)
    if value is None or type(value) is int or type(value) is float or type(value) is bool:
        return value
    if type(value) is dict:
        return _counted(len(value), "{", "key", "}")
    if type(value) is list:
        return _counted(len(value), "[", "item", "]")
    return _summary(value, budget)


def _summary(value: object, budget: int) -> JsonValue:
    """_preview_value for any type (subclasses of the JSON types included), by isinstance."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return REDACTED if looks_like_credential(value) else _short(value, budget)
    if isinstance(value, Mapping):
        return _counted(len(value), "{", "key", "}")
    if isinstance(value, list | tuple):
        return _counted(len(value), "[", "item", "]")
    # Anything else (bytes, objects) is summarized by type only: its text could be anything.
    return f"<{type(value).__name__}>"


def _counted(count: int, start: str, noun: str, end: str) -> str:
    """A nested value's size, never its content: "{2 keys}", "[1 item]"."""
    return f"{start}{count} {noun}{'' if count == 1 else 's'}{end}"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"
