"""What the gateway does about a chain-monitoring detection: record it, announce it, and at or above
the configured severity, suspend the agent (the kill switch), which also ends its tasks.

Every detection becomes an audit record and a metric. At or above `monitoring.alert_severity`
(default medium) it is also a WARNING log line and (when configured) a signed webhook; below it, a
DEBUG line only, so low-severity hints such as `novel_sequence` do not flood logs and pagers. The
suspension is recorded as done by `narrowgate`, with the detector and its message.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.audit import AuditEvent, AuditLog
from gateway.chain.detectors import Detection
from gateway.registry.errors import RegistryError
from gateway.registry.service import Registry
from gateway.registry.spared import SPARED_REQUEST
from gateway.settings.monitoring import MonitoringSettings, triggers_kill_switch, worth_alerting
from gateway.telemetry import Telemetry
from gateway.webhooks import WebhookSender

log = logging.getLogger("narrowgate.monitoring")


class DetectionResponder:
    def __init__(self, audit: AuditLog, registry: Registry, telemetry: Telemetry, settings: MonitoringSettings,
                 webhook_url: str | None = None, webhook_secret_env: str | None = None) -> None:
        self.audit = audit
        self.registry = registry
        self.telemetry = telemetry
        self.settings = settings
        self.webhook = WebhookSender(webhook_url, webhook_secret_env, "detection")

    async def close(self) -> None:
        await self.webhook.close()

    async def respond(self, detections: list[Detection]) -> bool:
        """Act on detections; True when the kill switch suspended the agent (the call must stop)."""
        killed = False
        for detection in detections:
            alert = worth_alerting(self.settings, detection.severity)
            log.log(logging.WARNING if alert else logging.DEBUG,
                    "detection %s (%s): agent %s, task %s, person %s, tool %s: %s", detection.detector,
                    detection.severity, detection.agent_id, detection.task_id, detection.user, detection.tool,
                    detection.message)
            self.telemetry.record_detection(detection.detector, detection.severity)
            self.audit.record(AuditEvent(
                kind="monitoring", action=detection.detector, actor="narrowgate", agent_id=detection.agent_id,
                task_id=detection.task_id, tool=detection.tool,
                detail=detection_detail(detection),
            ))
            if alert:
                self.send_webhook(detection)
            if triggers_kill_switch(self.settings, detection.severity):
                killed = await self.suspend(detection) or killed
        return killed

    async def suspend(self, detection: Detection) -> bool:
        person = f" (a call for person {detection.user})" if detection.user is not None else ""
        reason = f"kill switch: {detection.detector} ({detection.severity}): {detection.message}{person}"
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
        self.webhook.send({"type": "detection", "detector": detection.detector, "severity": detection.severity,
                           "agent_id": detection.agent_id, "task_id": detection.task_id, "tool": detection.tool,
                           "message": detection.message, **person_of(detection)})


def person_of(detection: Detection) -> dict[str, str]:
    """The person a detection's call was made for (their `sub` and issuer, as decision records name them)."""
    if detection.user is None:
        return {}
    return {"user": detection.user, "user_issuer": detection.user_issuer or ""}


def detection_detail(detection: Detection) -> dict[str, str]:
    return {"severity": detection.severity, "message": detection.message, **person_of(detection)}
