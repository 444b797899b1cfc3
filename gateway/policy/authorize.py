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
    an Enum from the text on every read)."""

    __slots__ = ("decision",)  # a slot in place of AuthzResult's property
    decision: cedarpy.Decision

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer)
        raw = answer.get("decision")  # a list or a dict is unhashable: no lookup, ValueError below
        decision = _DECISIONS.get(raw) if isinstance(raw, str) else None
        if decision is None:  # ValueError, as for any answer Cedar's caller cannot read: the engine denies
            raise ValueError(f"Cedar answered no known decision: {str(answer.get('decision'))[:64]!r}")
        self.decision = decision


def read_answer(text: str) -> Answer:
    """One answer of cedarpy's extension, without its metrics (the text up to them, closed: cedarpy writes
    them last, after the diagnostics). `,"metrics":` cannot occur inside a JSON string (a quote there is
    escaped) nor as a key of the diagnostics (policy ids), so the cut is structural; should it ever not be,
    the parse fails and the caller denies. Without its decision or diagnostics the cut is not used."""
    cut = text.find(_METRICS)
    answer = orjson.loads(text[:cut] + "}") if cut > 0 else None
    # (fail closed: never an answer without its errors; the whole text when the decision came later)
    if answer is None or "decision" not in answer or "diagnostics" not in answer:
        answer = orjson.loads(text)
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
