"""A tiny HTTP server that keeps every webhook POST (headers, body), for detection and approval tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def posts(self) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return list(self.received)

    def wait_for(self, matches: Callable[[dict[str, Any]], bool],
                 timeout_s: float = 10) -> tuple[dict[str, str], bytes]:
        """The first POST whose JSON body `matches`; AssertionError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for headers, body in self.posts():
                if matches(json.loads(body)):
                    return headers, body
            time.sleep(0.05)
        raise AssertionError("no matching webhook POST arrived")

    @staticmethod
    def signature_ok(headers: dict[str, str], body: bytes, secret: str) -> bool:
        """Check `X-Narrowgate-Signature` (HMAC-SHA256 over `<timestamp>.<body>`) and the timestamp's freshness."""
        timestamp = headers.get("x-narrowgate-timestamp", "")
        if not timestamp.isdigit() or abs(int(timestamp) - time.time()) > 300:
            return False
        expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(headers.get("x-narrowgate-signature", ""), f"sha256={expected}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
