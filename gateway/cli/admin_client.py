"""The CLI's side of the admin API: the client and the output helpers `agents`, `tasks`, `keys`, `approvals`
and `catalog review` share."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.cli.errors import AdminClientError

TIMEOUT_S = 30.0  # how long a command waits for its answer (`policy replay` takes --timeout)


class AdminClient:
    def __init__(self, base_url: str, token: str | None) -> None:
        if not token:
            raise AdminClientError("an admin token is required: --admin-token or NARROWGATE_ADMIN_TOKEN")
        self.base_url = base_url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                timeout_s: float = TIMEOUT_S) -> Any:
        return json.loads(self.request_bytes(method, path, body, timeout_s) or b"null")

    def request_bytes(self, method: str, path: str, body: dict[str, Any] | None = None,
                      timeout_s: float = TIMEOUT_S) -> bytes:
        """The answer's body as it came (e.g. an SVG); AdminClientError with the status when refused."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base_url}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                answer: bytes = response.read()
                return answer
        except urllib.error.HTTPError as exc:
            text, problems = _error_body(exc)
            raise AdminClientError(f"HTTP {exc.code}: {text}", exc.code, problems) from None
        except urllib.error.URLError as exc:
            raise AdminClientError(f"cannot reach the gateway at {self.base_url}: {exc.reason}") from None
        except TimeoutError:
            raise AdminClientError(f"the gateway at {self.base_url} did not answer within {timeout_s:g} s") from None


def _error_body(exc: urllib.error.HTTPError) -> tuple[str, list[str]]:
    """The answer's `error` text and `problems` list (the HTTP reason if it has none)."""
    try:
        body = json.loads(exc.read())
        return str(body.get("error")), [str(p) for p in body.get("problems") or []]
    except (ValueError, AttributeError, TypeError):
        return exc.reason, []


def state_change(event: dict[str, Any]) -> str:
    return f"{event['from_state'] or '-'} -> {event['to_state']}"


def print_with_history(record: dict[str, Any], heading: str, describe: Callable[[dict[str, Any]], str]) -> int:
    """A record as JSON, then its events: time, what changed, who and why."""
    events = record.pop("events", [])
    print(json.dumps(record, indent=2))
    print(heading)
    for event in events:
        print(f"  {when(event['at'])}  {describe(event)}  by {event['actor']}: {event['reason']}")
    return 0


def client(args: argparse.Namespace) -> AdminClient:
    return AdminClient(args.gateway, args.admin_token)


def when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
