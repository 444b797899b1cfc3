"""Structured logs, and the scrubbing net that keeps tokens out of every log line."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

from gateway.logs import JsonFormatter, ScrubbingTextFormatter, scrub
from tests.support.processes import NARROWGATE, REPO, free_port

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLWJ5dGVz"


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("narrowgate.test", logging.WARNING, __file__, 1, message, args, None)


def test_jwts_and_bearer_values_are_scrubbed_from_messages() -> None:
    assert JWT not in scrub(f"refused {JWT} at once")
    assert "s3cr3t-static-token" not in scrub("Authorization: Bearer s3cr3t-static-token")
    assert scrub("agent a1 suspended by admin:ops") == "agent a1 suspended by admin:ops"


def test_json_lines_carry_level_logger_and_a_scrubbed_message() -> None:
    line = JsonFormatter().format(record("token %s refused for %s", JWT, "agent-a"))
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "narrowgate.test"
    assert entry["message"] == "token [redacted] refused for agent-a"
    assert "time" in entry


def test_text_lines_are_scrubbed_too() -> None:
    line = ScrubbingTextFormatter("%(levelname)s %(message)s").format(record("header Bearer abcdefghijklmnop"))
    assert line == "WARNING header [redacted]"


def test_the_gateway_writes_json_logs_when_asked(tmp_path: Path) -> None:
    (tmp_path / "catalog").mkdir()
    config = tmp_path / "gw.yaml"
    config.write_text(f"listen: 127.0.0.1:{free_port()}\ncatalog: catalog\npolicies: {REPO / 'cedar'}\n"
                      f"state: sqlite:///{tmp_path / 'state.db'}\n")
    process = subprocess.Popen([str(NARROWGATE), "--log-format", "json", "serve", "--config", str(config),
                                "--open-loopback"], stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
    finally:
        process.terminate()
        process.wait(timeout=20)
    entry = json.loads(first)
    assert entry["level"] == "WARNING" and "DEVELOPMENT MODE" in entry["message"]
