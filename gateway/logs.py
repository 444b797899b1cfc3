"""Logging that keeps writes off the event loop: records go through a queue to a writer thread."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _DeferredFormatting(logging.handlers.QueueHandler):
    """Hand the record over as it is: the writer thread formats it, not the request path.

    Safe here because the gateway logs only immutable values (strings, numbers) as arguments.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:
            record = super().prepare(record)  # tracebacks cannot cross threads unformatted
        return record


def configure(level: str) -> None:
    """Root logging to stderr via a background thread, so a slow terminal never stalls a request."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(logging.Formatter(FORMAT))
    listener = logging.handlers.QueueListener(records, writer, respect_handler_level=False)
    root = logging.getLogger()
    root.handlers[:] = [_DeferredFormatting(records)]
    root.setLevel(getattr(logging, level.upper()))
    listener.start()
    atexit.register(listener.stop)
