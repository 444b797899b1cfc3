"""Where things live in the console: the one place its paths are spelled (pages, redirects, webhooks,
messages to agents). No web framework imports, so the approval and discovery code can use it too."""

from __future__ import annotations

from urllib.parse import quote

HOME = "/console"


def segment(value: str) -> str:
    """One path segment, every reserved character escaped (upstream tool names are not trusted)."""
    return quote(value, safe="")


def approval_path(approval_id: str) -> str:
    return f"{HOME}/approvals/{segment(approval_id)}"


def tool_path(server_id: str, name: str) -> str:
    return f"{HOME}/catalog/{segment(server_id)}/{segment(name)}"


def resource_path(review_id: str) -> str:
    """One upstream resource's or template's review (by review id: URIs and templates hold slashes)."""
    return f"{HOME}/resources/{segment(review_id)}"
