"""DNS-rebinding defence: check Host and Origin before anything else reads the request."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.config import Settings
from gateway.settings.network import is_loopback_host

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


class OriginPolicy:
    def __init__(self, settings: Settings) -> None:
        self.loopback_only = settings.is_loopback_bind()
        self.allowed_origins = frozenset(o.rstrip("/") for o in settings.allowed_origins)
        public = urlsplit(settings.base_url)
        self.public_host = public.hostname or ""

    def host_ok(self, host: str | None) -> bool:
        """On a loopback bind, a Host naming anything else is a rebinding attempt."""
        if not self.loopback_only:
            return True
        if not host:
            return False
        name = urlsplit(f"//{host}").hostname or ""
        return is_loopback_host(name) or name == self.public_host

    def origin_ok(self, origin: str | None) -> bool:
        if origin is None:
            return True  # not a browser, or same-origin
        origin = origin.rstrip("/")
        if origin in self.allowed_origins:
            return True
        name = urlsplit(origin).hostname or ""
        return is_loopback_host(name)
