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

_EXTENSION: Callable[..., list[str]] | None = getattr(getattr(cedarpy, "_internal", None), "is_authorized_batch",
                                                        None)


def is_authorized_batch(requests: Sequence[dict[str, Any]], policies: cedarpy.PolicySet,
                        entities: str | cedarpy.Entities) -> list[cedarpy.AuthzResult]:
    """Cedar's answer to each request (whose context is JSON text). Raises ValueError or RuntimeError
    as cedarpy does for a request or entity set Cedar cannot read; the caller denies."""
    if _EXTENSION is None:
        return cedarpy.is_authorized_batch(list(requests), policies, entities)
    handle = entities._inner if isinstance(entities, cedarpy.Entities) else entities
    return [cedarpy.AuthzResult(orjson.loads(answer)) for answer in _EXTENSION(list(requests), policies, handle,
                                                                                None, False)]
