"""The one error every secret source raises: where the secret should have come from, never its value."""

from __future__ import annotations


class SecretUnavailable(Exception):
    """The secret could not be read; the message says from where, never the value."""
