"""What listings found, remembered: per (policy set, principal, listing context), each tool's visibility.

A tool's visibility depends only on the listing policies, the principal's entities, the part of the
context those policies read, and the tool's own entities (its Tool, Action and McpServer JSON); a
listing's entity set holds nothing else. So the memo is keyed by exactly those strings: another
listing with the same key evaluates only tools it has not seen, and a catalog change re-evaluates
only the tools whose entities changed. Bounded: the least recently used keys are dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

MEMO_KEYS = 64  # distinct (policy set, principal, context) listings kept

# A singular tool: its Tool, Action and McpServer entity JSON; a class of tools: its signature
# (gateway.policy.listing_classes).
# tuple[str, str, str] | Signature once gateway/policy/engine.py types its `keys` list as list[ListingKey].
ListingKey = tuple[Any, ...]
MemoKey = tuple[str, str, str]  # policy set digest, principal entity JSON (id renamed where shared), context JSON


class ListingMemo:
    def __init__(self, limit: int = MEMO_KEYS) -> None:
        self.limit = limit
        self._entries: OrderedDict[MemoKey, dict[ListingKey, bool]] = OrderedDict()

    def entry(self, key: MemoKey) -> dict[ListingKey, bool]:
        """The (mutable) visibility map for `key`, created empty if unknown."""
        found = self._entries.get(key)
        if found is None:
            found = self._entries[key] = {}
            if len(self._entries) > self.limit:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return found

    def clear(self) -> None:
        self._entries.clear()
