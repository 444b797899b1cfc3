"""What the gateway does about a chain-monitoring detection: record it, announce it, and at or above
the configured severity, suspend the agent (the kill switch), which also ends its tasks.

Every detection becomes an audit record, a log line, a metric and (when configured) a signed
webhook. The suspension is recorded as done by `narrowgate`, with the detector and its message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from typing import Any

import aiohttp
import orjson

from gateway.audit import AuditEvent, AuditLog
from gateway.chain.settings import MonitoringSettings, triggers_kill_switch
from gateway.chain.tracker import Detection
from gateway.registry.errors import RegistryError
from gateway.registry.service import Registry
from gateway.telemetry import Telemetry
from gateway.transport.sessions import SPARED_REQUEST

log = logging.getLogger("narrowgate.monitoring")
WEBHOOK_TIMEOUT_S = 5.0


class DetectionResponder:
    def __init__(self, audit: AuditLog, registry: Registry, telemetry: Telemetry, settings: MonitoringSettings,
                 webhook_url: str | None = None, webhook_secret_env: str | None = None) -> None:
        self.audit = audit
        self.registry = registry
        self.telemetry = telemetry
        self.settings = settings
        self.webhook_url = webhook_url
        self.webhook_secret_env = webhook_secret_env
        self.http: aiohttp.ClientSession | None = None
        self.background: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.http is not None:
            await self.http.close()

    async def respond(self, detections: list[Detection]) -> bool:
        """Act on detections; True when the kill switch suspended the agent (the call must stop)."""
        killed = False
        for detection in detections:
            log.warning("detection %s (%s): agent %s, task %s, tool %s: %s", detection.detector,
                        detection.severity, detection.agent_id, detection.task_id, detection.tool, detection.message)
            self.telemetry.record_detection(detection.detector, detection.severity)
            self.audit.record(AuditEvent(
                kind="monitoring", action=detection.detector, actor="narrowgate", agent_id=detection.agent_id,
                task_id=detection.task_id, tool=detection.tool,
                detail={"severity": detection.severity, "message": detection.message},
            ))
            self.send_webhook(detection)
            if triggers_kill_switch(self.settings, detection.severity):
                killed = await self.suspend(detection) or killed
        return killed

    async def suspend(self, detection: Detection) -> bool:
        reason = f"kill switch: {detection.detector} ({detection.severity}): {detection.message}"
        spared = SPARED_REQUEST.set(asyncio.current_task())  # this request answers; the others are cancelled
        try:
            await self.registry.suspend(detection.agent_id, "narrowgate", reason)
        except RegistryError as exc:  # already suspended or retired: the switch has nothing left to do
            log.info("kill switch for %s: %s", detection.agent_id, exc)
            return True
        finally:
            SPARED_REQUEST.reset(spared)
        log.error("KILL SWITCH: agent %s suspended (%s)", detection.agent_id, reason)
        return True

    def send_webhook(self, detection: Detection) -> None:
        if not self.webhook_url:
            return
        task = asyncio.create_task(self.post_webhook(detection))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def post_webhook(self, detection: Detection) -> None:
        """POST the detection as JSON; `X-Narrowgate-Signature: sha256=<hmac>` over the body."""
        assert self.webhook_url is not None
        body = orjson.dumps({"type": "detection", "detector": detection.detector, "severity": detection.severity,
                             "agent_id": detection.agent_id, "task_id": detection.task_id,
                             "tool": detection.tool, "message": detection.message})
        headers: dict[str, Any] = {"Content-Type": "application/json"}
        secret = os.environ.get(self.webhook_secret_env or "", "")
        if secret:
            digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Narrowgate-Signature"] = f"sha256={digest}"
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S))
        try:
            async with self.http.post(self.webhook_url, data=body, headers=headers) as response:
                if response.status >= 300:
                    log.warning("detection webhook answered HTTP %s", response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("detection webhook failed: %s", type(exc).__name__)
