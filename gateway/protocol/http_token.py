"""What an HTTP header may hold: a name is an RFC 9110 5.6.2 token, a value holds no CR, LF or NUL. One
definition for the catalog's check of the headers it sets and the upstream client's check of every header
it sends."""

from __future__ import annotations

import functools
import re

HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # use with fullmatch
# How a message is framed: the upstream client's alone, never a header the catalog or a call sets.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})


@functools.lru_cache(maxsize=1024)  # the same few names on every call: checked once each
def is_token(name: str) -> bool:
    """Whether `name` is an HTTP token (what a header name must be)."""
    return HTTP_TOKEN.fullmatch(name) is not None


def breaks_header(value: str) -> bool:
    """Whether a header value holds CR, LF or NUL: it could end the header (or the head) early."""
    return "\n" in value or "\r" in value or "\0" in value
