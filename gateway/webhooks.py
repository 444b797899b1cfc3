"""Signed JSON webhooks (detections, approval requests): fire and forget, never blocking a request.

Each POST carries `X-Narrowgate-Timestamp` (epoch seconds) and `X-Narrowgate-Signature:
sha256=<hex HMAC>` over `<timestamp>.<body>` with the shared secret from an environment variable,
so a receiver can check both origin and freshness (reject stale timestamps to stop replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from typing import Any

import aiohttp
import orjson

log = logging.getLogger("narrowgate.webhooks")
WEBHOOK_TIMEOUT_S = 5.0


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookSender:
    def __init__(self, url: str | None, secret_env: str | None, label: str) -> None:
        self.url = url
        self.secret_env = secret_env
        self.label = label  # for log lines: "detection", "approval"
        self.http: aiohttp.ClientSession | None = None
        self.background: set[asyncio.Task[None]] = set()

    def send(self, payload: dict[str, Any]) -> None:
        """Post in the background; failures are logged (without the URL's secrets or the body)."""
        if not self.url:
            return
        task = asyncio.get_running_loop().create_task(self.post(payload))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def post(self, payload: dict[str, Any]) -> None:
        assert self.url is not None
        body = orjson.dumps(payload)
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Narrowgate-Timestamp": timestamp}
        secret = os.environ.get(self.secret_env or "", "")
        if secret:
            headers["X-Narrowgate-Signature"] = signature(secret, timestamp, body)
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S))
        try:
            async with self.http.post(self.url, data=body, headers=headers) as response:
                if response.status >= 300:
                    log.warning("%s webhook answered HTTP %s", self.label, response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("%s webhook failed: %s", self.label, type(exc).__name__)

    async def close(self) -> None:
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.http is not None:
            await self.http.close()
