"""What the gateway declares about itself: as a server to agents, and as a client to upstreams."""

from __future__ import annotations

from typing import Any

from gateway import __version__

# To agents.
SERVER_INFO = {"name": "narrowgate", "title": "Narrowgate", "version": __version__}
SERVER_CAPABILITIES: dict[str, Any] = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "completions": {},
    "logging": {},
}
# 2026-07-28 drops logging and per-resource subscribe (subscriptions/listen replaces them).
MODERN_CAPABILITIES: dict[str, Any] = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"listChanged": True},
    "completions": {},
}
INSTRUCTIONS = "Tools are served through Narrowgate; each call is checked and recorded."

# To upstreams.
GATEWAY_CLIENT_INFO = {"name": "narrowgate", "version": __version__}
# The gateway relays these to the agent that caused them.
GATEWAY_CLIENT_CAPABILITIES: dict[str, Any] = {
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True},
}
