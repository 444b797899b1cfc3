"""Logging that keeps writes off the event loop, in text or structured JSON, with secrets scrubbed.

Records go through a queue to a writer thread, which formats them; the request path only enqueues.
Whatever a message says, anything shaped like a bearer token or a JWT is replaced before it is
written: code never logs tokens on purpose, and this is the net under that rule.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.handlers
import queue
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"
SECRET_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"  # JWT
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"  # Authorization values
    r"|\b(?:sk-|ghp_|gho_|github_pat_|xox[abp]-)[A-Za-z0-9_-]{8,}|\bAKIA[0-9A-Z]{16}\b"  # well-known API keys
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
)


def scrub(text: str) -> str:
    return SECRET_SHAPES.sub(REDACTED, text)


class ScrubbingTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class _DeferredFormatting(logging.handlers.QueueHandler):
    """Hand the record over as it is: the writer thread formats it, not the request path.

    Safe here because the gateway logs only immutable values (strings, numbers) as arguments.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:
            record = super().prepare(record)  # tracebacks cannot cross threads unformatted
            record.msg = scrub(record.msg)
        return record


def configure(level: str, log_format: str = "text") -> None:
    """Root logging to stderr via a background thread, so a slow terminal never stalls a request."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(JsonFormatter() if log_format == "json" else ScrubbingTextFormatter(TEXT_FORMAT))
    listener = logging.handlers.QueueListener(records, writer, respect_handler_level=False)
    root = logging.getLogger()
    root.handlers[:] = [_DeferredFormatting(records)]
    root.setLevel(getattr(logging, level.upper()))
    listener.start()
    atexit.register(listener.stop)
    _writers[:] = [listener]


_writers: list[logging.handlers.QueueListener] = []  # the writer `configure` started, if any


@contextlib.contextmanager
def writer_paused() -> Iterator[None]:
    """No writer thread across a fork (gateway.supervisor): a fork copies only the forking thread, so
    the writer stops before and starts again after, in the parent and in the child."""
    for writer in _writers:
        writer.stop()
    try:
        yield
    finally:
        for writer in _writers:
            writer.start()


def flush_and_stop() -> None:
    """Write what is queued and stop the writer: a process leaving by os._exit runs no atexit."""
    for writer in _writers:
        writer.stop()
