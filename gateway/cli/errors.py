"""Exceptions `narrowgate`'s main() reports, kept apart so the parser can catch them without importing
what raises them."""

from __future__ import annotations


class AdminClientError(Exception):
    """The admin API refused a request or could not be reached: `narrowgate: <message>`, exit status 1."""
