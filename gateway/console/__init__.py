"""The approver web console at `/console` (see gateway.console.pages and docs/console.md)."""

from gateway.console.pages import Console

__all__ = ["Console"]
