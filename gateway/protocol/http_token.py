"""RFC 9110 5.6.2 token: what an HTTP header name may hold. One definition for the catalog's check of the
headers it sets and the upstream client's check of every header it sends."""

from __future__ import annotations

import re

HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # use with fullmatch
