"""DNS-rebinding defence: check Host and Origin before anything else reads the request."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.config import Settings
from gateway.settings.network import is_loopback_host

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
MAX_REMEMBERED_HOSTS = 64  # Host values are the client's to choose: remember only so many verdicts


class OriginPolicy:
    def __init__(self, settings: Settings) -> None:
        self.loopback_only = settings.is_loopback_bind()
        self.allowed_origins = frozenset(o.rstrip("/") for o in settings.allowed_origins)
        public = urlsplit(settings.base_url)
        self.public_host = public.hostname or ""
        # Every request sends the same Host or two: its verdict is parsed once (URL split, IP parse).
        self.hosts: dict[str, bool] = {}

    def host_ok(self, host: str | None) -> bool:
        """On a loopback bind, a Host naming anything else is a rebinding attempt."""
        if not self.loopback_only:
            return True
        if not host:
            return False
        verdict = self.hosts.get(host)
        if verdict is None:
            name = urlsplit(f"//{host}").hostname or ""
            verdict = is_loopback_host(name) or name == self.public_host
            if len(self.hosts) < MAX_REMEMBERED_HOSTS:
                self.hosts[host] = verdict
        return verdict

    def origin_ok(self, origin: str | None) -> bool:
        if origin is None:
            return True  # not a browser, or same-origin
        origin = origin.rstrip("/")
        if origin in self.allowed_origins:
            return True
        name = urlsplit(origin).hostname or ""
        return is_loopback_host(name)
