"""Exceptions `narrowgate`'s main() reports, kept apart so the parser can catch them without importing
what raises them."""

from __future__ import annotations


class AdminClientError(Exception):
    """The admin API refused a request or could not be reached: `narrowgate: <message>`, exit status 1.
    `status`: the HTTP status of a refusal (None when the gateway was not reached); `problems`: the
    answer's problem list, if it had one."""

    def __init__(self, message: str, status: int | None = None, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problems = problems or []
