"""A bounded cache whose entries also expire: for things verified once and trusted until an expiry.

Bounded by count (least recently used evicted first) and by time (an entry past its expiry is never
returned; expired entries at the old end are dropped as new ones arrive, so a cache of short-lived
tokens stays about as large as the tokens alive now, not as large as its bound). Evicting an entry
only means the thing is verified again next time; a cache like this must never be the only record
of a refusal.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """At most `max_size` entries (0: cache nothing), each good until `expires_at(value)` (epoch s)."""

    def __init__(self, max_size: int, expires_at: Callable[[V], float],
                 clock: Callable[[], float] = time.time) -> None:
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._max_size = max_size
        self._expires_at = expires_at
        self._clock = clock

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is None:
            return None
        if self._clock() >= self._expires_at(value):
            del self._entries[key]  # past expiry: verify afresh, exactly as for an unseen one
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if self._max_size <= 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_size:
            self._entries.popitem(last=False)
        self._drop_expired_oldest()

    def _drop_expired_oldest(self) -> None:
        """Amortized O(1): each entry is dropped at most once, and the loop stops at the first live one."""
        now = self._clock()
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if now < self._expires_at(oldest):
                return
            self._entries.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
