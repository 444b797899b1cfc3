"""What an HTTP header may hold: a name is an RFC 9110 5.6.2 token, a value holds no CR, LF or NUL. One
definition for the catalog's check of the headers it sets and the upstream client's check of every header
it sends."""

from __future__ import annotations

import re

HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # use with fullmatch


def breaks_header(value: str) -> bool:
    """Whether a header value holds CR, LF or NUL: it could end the header (or the head) early."""
    return "\n" in value or "\r" in value or "\0" in value
