"""One call into Cedar: cedarpy's extension function directly, its answers parsed with orjson.

cedarpy's public `is_authorized_batch` only converts dict contexts (the engine always sends JSON text)
and re-parses each answer with the stdlib json module, about a tenth of a decision's CPU once the
context is small (measured in bench/policy.py). The extension function it wraps takes the same
arguments and raises the same errors; should a cedarpy release drop it, the public wrapper is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cedarpy
import orjson

_DECISIONS = {d.value: d for d in cedarpy.Decision}
_METRICS = ',"metrics":'  # cedarpy's timings, after the diagnostics: never read, so never parsed


class Answer(cedarpy.AuthzResult):
    """Cedar's answer as cedarpy's AuthzResult gives it, its decision looked up once (AuthzResult makes
    an Enum from the text on every read). Read-only, since one Answer serves every call whose answer text
    was the same (_read): its reasons and errors are tuples and no attribute can be set once it is made."""

    __slots__ = ("decision",)  # a slot in place of AuthzResult's property
    decision: cedarpy.Decision

    def __init__(self, answer: dict[str, Any]) -> None:
        diagnostics = answer.get("diagnostics", {})
        reasons, errors = _texts(diagnostics, "reason"), _texts(diagnostics, "errors")
        raw = answer.get("decision")  # a list or a dict is unhashable: no lookup, ValueError below
        decision = _DECISIONS.get(raw) if isinstance(raw, str) else None
        if decision is None:  # ValueError, as for any answer Cedar's caller cannot read: the engine denies
            raise ValueError(f"Cedar answered no known decision: {str(answer.get('decision'))[:64]!r}")
        for key, texts in (("reason", reasons), ("errors", errors)):
            if key in diagnostics:  # (an absent one reads as empty, as cedarpy reads it)
                diagnostics[key] = texts
        super().__init__(answer)
        object.__setattr__(self, "decision", decision)  # made: from here on read-only

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "decision"):  # (set last in __init__, whatever AuthzResult's own __init__ sets before)
            raise AttributeError(f"a Cedar answer is read-only (it is shared), so {name} cannot be set")
        object.__setattr__(self, name, value)


def _texts(diagnostics: object, key: str) -> tuple[str, ...]:
    """The diagnostics' list of texts under `key` as a tuple; ValueError for anything else (the engine denies)."""
    if not isinstance(diagnostics, dict):
        raise ValueError("Cedar's answer has diagnostics that are not a JSON object")
    texts = diagnostics.get(key, ())
    if not isinstance(texts, (list, tuple)) or not all(isinstance(text, str) for text in texts):
        raise ValueError(f"Cedar's answer has {key} that are not a list of texts")
    return tuple(texts)


# Answer texts read before, by their text up to the metrics: Cedar writes the same few texts call after call (one
# per outcome and set of determining policies or errors), and reading one again gives an equal Answer. This keeps
# the parse, never the answer: Cedar answers every request, and its text of this call is what is looked up. Errors
# can quote the agent's own values, so the texts kept are bounded in number and length.
ANSWERS_KEPT = 512
ANSWER_CHARS_KEPT = 2048
_read: dict[str, Answer] = {}


def read_answer(text: str) -> Answer:
    """One answer of cedarpy's extension, without its metrics (the text up to them, closed: cedarpy writes
    them last, after the diagnostics). `,"metrics":` cannot occur inside a JSON string (a quote there is
    escaped) nor as a key of the diagnostics (policy ids), so the cut is structural; should it ever not be,
    the parse fails and the caller denies. Without its decision or diagnostics the cut is not used.
    An Answer is shared by every call whose text was the same (_read): read it, never change it."""
    cut = text.find(_METRICS)
    if cut <= 0:
        return _answer(orjson.loads(text))
    head = text[:cut]
    known = _read.get(head)
    if known is not None:
        return known
    answer = orjson.loads(head + "}")
    # (fail closed: never an answer without its errors; the whole text when the decision came later)
    if not isinstance(answer, dict) or "decision" not in answer or "diagnostics" not in answer:
        return _answer(orjson.loads(text))
    read = _answer(answer)
    if len(head) <= ANSWER_CHARS_KEPT:  # (a text that came with the whole, or raised, is never kept)
        if len(_read) >= ANSWERS_KEPT:
            _read.clear()  # bounded; the few texts in use come straight back
        _read[head] = read
    return read


def _answer(answer: object) -> Answer:
    if not isinstance(answer, dict):
        raise ValueError("Cedar's answer is not a JSON object")
    return Answer(answer)


_EXTENSION: Callable[..., list[str]] | None = getattr(getattr(cedarpy, "_internal", None), "is_authorized_batch",
                                                        None)


def is_authorized_batch(requests: Sequence[dict[str, Any]], policies: cedarpy.PolicySet,
                        entities: str | cedarpy.Entities) -> list[cedarpy.AuthzResult]:
    """Cedar's answer to each request (whose context is JSON text). Raises ValueError or RuntimeError
    as cedarpy does for a request or entity set Cedar cannot read; the caller denies."""
    if _EXTENSION is None:
        return cedarpy.is_authorized_batch(list(requests), policies, entities)
    handle = entities._inner if isinstance(entities, cedarpy.Entities) else entities
    return [read_answer(answer) for answer in _EXTENSION(list(requests), policies, handle, None, False)]


def is_authorized(request: dict[str, Any], policies: cedarpy.PolicySet,
                  entities: cedarpy.Entities) -> cedarpy.AuthzResult:
    """Cedar's answer to one request: is_authorized_batch of one, without the lists around it (a decision's path)."""
    if _EXTENSION is None:
        (result,) = cedarpy.is_authorized_batch([request], policies, entities)
        return result
    (answer,) = _EXTENSION([request], policies, entities._inner, None, False)
    return read_answer(answer)
