"""Every Redis key and channel under one configurable prefix, so deployments can share one Redis."""

from __future__ import annotations


class KeySpace:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        """`prefix:part:part...`; parts come from the gateway (ids it minted or validated), never raw input."""
        return ":".join((self.prefix, *parts))

    def channel(self, topic: str) -> str:
        """The pub/sub channel of a notice topic."""
        return self.key("notices", topic)
