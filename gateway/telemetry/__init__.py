"""OpenTelemetry tracing and metrics for the gateway (see `setup.Telemetry` and `attributes`)."""

from gateway.telemetry.setup import NOOP_SPAN, RequestSpan, Telemetry

__all__ = ["NOOP_SPAN", "RequestSpan", "Telemetry"]
