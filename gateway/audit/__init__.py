"""The tamper-evident audit log: events, redacted previews, the hash chain and its writer."""

from gateway.audit.chain import GENESIS_HASH, ChainProblem, record_hash, verify_chain
from gateway.audit.log import AuditLog
from gateway.audit.model import AuditEvent, AuditUnavailable
from gateway.audit.redact import SENSITIVE_CLASSES, redacted_preview

__all__ = [
    "GENESIS_HASH", "SENSITIVE_CLASSES", "AuditEvent", "AuditLog", "AuditUnavailable", "ChainProblem",
    "record_hash", "redacted_preview", "verify_chain",
]
