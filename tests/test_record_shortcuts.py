"""The recording path's shortcuts give exactly what the general code gives: the credential pattern's prefilter, the
preview's type dispatch and is_plain's one-pass check of a dict (each is a faster way to the same answer, so a
redacted value or a chain's bytes never depend on which way was taken)."""

from __future__ import annotations

import enum
import math
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.audit.canonical import _walked, is_plain
from gateway.audit.redact import (
    _CREDENTIAL_VALUE,
    MAX_KEY_CHARS,
    MAX_KEYS,
    MIN_VALUE_CHARS,
    REDACTED,
    SENSITIVE_CLASSES,
    _preview_value,
    _summary,
    is_sensitive_key,
    is_sensitive_tool,
    looks_like_credential,
    redacted_preview,
)

# Pieces of every credential shape the pattern knows, in odd cases, with the non-ASCII letters IGNORECASE folds to
# ASCII ones (long s, Kelvin sign, dotted and dotless i), so generated text sits on both sides of each branch.
_PIECES = ["Bearer ", "basic  x", " bearer\tt", "eyJ", "eYj", "abcd.", "efgh.", "-----BEGIN ", "-----begin RSA ",
           "PRIVATE KEY-----", "ghp_", "GHO_", "github_pat_", "sk-", "SK_LIVE_", "rk_live_", "xoxb-", "XOXP-", "AKIA",
           "asia", "AIza", "0123456789", "\u017fk-", "\u212aey", "\u0130", "\u0131", "gh", "high", "Asia", "é", " "]
_TEXT = st.lists(st.sampled_from(_PIECES) | st.text(max_size=4), max_size=8).map("".join)


@settings(max_examples=2000, deadline=None)
@given(_TEXT)
@example("\u017fk-0123456789ab")  # the long s folds to "s": non-ASCII text always runs the pattern
@example("Bearer abc")
@example("x eyJhbGciOi.eyJzdWIiOi.sig")
def test_credential_prefilter_answers_as_the_pattern(text: str) -> None:
    assert looks_like_credential(text) is (_CREDENTIAL_VALUE.search(text) is not None)


class _Number(enum.IntEnum):
    ONE = 1


class _Text(str):
    pass


_VALUES = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | _TEXT
           | st.builds(_Text, _TEXT) | st.just(_Number.ONE) | st.binary(max_size=3)
           | st.dictionaries(st.text(max_size=2), st.integers(), max_size=3) | st.lists(st.integers(), max_size=3)
           | st.tuples(st.integers()) | st.frozensets(st.integers(), max_size=2))


@settings(max_examples=1000, deadline=None)
@given(_VALUES, st.integers(min_value=1, max_value=40))
def test_preview_value_dispatch_is_the_general_summary(value: Any, budget: int) -> None:
    fast, general = _preview_value(value, budget), _summary(value, budget)
    assert type(fast) is type(general)
    assert fast == general or (isinstance(fast, float) and math.isnan(fast) and math.isnan(general))


_LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.floats(min_value=-1e-3, max_value=1e-3)
           | st.text(max_size=3) | st.just(_Number.ONE) | st.builds(_Text, st.text(max_size=2)))
_KEYS = st.text(max_size=3) | st.integers(min_value=0, max_value=3)
_JSONISH = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner)
                        | st.dictionaries(_KEYS, inner, max_size=4), max_leaves=10)


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(_KEYS, _JSONISH, max_size=5) | _JSONISH)
def test_is_plain_of_a_dict_is_the_walk(value: Any) -> None:
    assert is_plain(value) is _walked(value)


class _Disguised(str):
    """A str subclass whose own methods hide what it holds (review finding)."""

    def lower(self) -> str:
        return ""

    def isascii(self) -> bool:
        return True


def test_the_prefilter_reads_the_characters_not_a_subclass_s_methods() -> None:
    assert looks_like_credential(_Disguised("ghp_abcdefghijklmnopqrstuvwxyz0123456789"))


class _Class(str, enum.Enum):  # noqa: UP042 (a StrEnum's str() is its value: this one's is not)
    PII = "pii"


def test_a_data_class_equal_to_a_sensitive_one_but_spelled_otherwise_does_not_decide_for_it() -> None:
    """(_Class.PII,) == ("pii",) and hashes alike, but str() differs: a cached answer for one must not answer
    for the other (review finding)."""
    assert is_sensitive_tool((_Class.PII,)) is any(str(c).strip().lower() == "pii" for c in (_Class.PII,))
    assert is_sensitive_tool(("pii",)) is True


def _general_preview(arguments: dict[Any, Any], data_classes: list[str], max_chars: int) -> dict[str, Any]:
    """redacted_preview as the general code spells it: every key looked up, every value through _summary."""
    keys = list(arguments)
    budget = max(MIN_VALUE_CHARS, max_chars // max(1, min(len(keys), MAX_KEYS)))
    preview: dict[str, Any] = {}
    for key in keys[:MAX_KEYS]:
        text = str(key)
        name = text if len(text) <= MAX_KEY_CHARS else text[:MAX_KEY_CHARS - 1] + "…"
        sensitive = any(str(c).strip().lower() in SENSITIVE_CLASSES for c in data_classes) or is_sensitive_key(text)
        preview[name] = REDACTED if sensitive else _summary(arguments[key], budget)
    if len(keys) > MAX_KEYS:
        preview["..."] = f"{len(keys) - MAX_KEYS} more keys"
    return preview


_ARGUMENT_KEYS = st.sampled_from(["path", "token", "apiKey", "card", "discard", "x" * 70]) | st.text(max_size=5)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_ARGUMENT_KEYS | st.integers(0, 3), _VALUES, max_size=24),
       st.lists(st.sampled_from(["public", "internal", "PII", " secrets "]), max_size=2),
       st.integers(min_value=20, max_value=400))
def test_the_preview_is_the_general_preview(arguments: dict[Any, Any], data_classes: list[str], max_chars: int) -> None:
    fast = redacted_preview(arguments, tuple(data_classes), max_chars=max_chars)
    general = _general_preview(arguments, data_classes, max_chars)
    assert list(fast or {}) == list(general)  # the same keys, in the same order
    for key, value in general.items():
        got = (fast or {})[key]
        assert type(got) is type(value)
        assert got == value or (isinstance(got, float) and math.isnan(got) and math.isnan(value))
