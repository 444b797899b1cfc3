"""The two MCP protocol eras the gateway speaks, on both sides, and the methods that exist in one only."""

from __future__ import annotations

from typing import Final, Literal

Era = Literal["2025-11-25", "2026-07-28"]
LEGACY_ERA: Final = "2025-11-25"  # initialize, Mcp-Session-Id, the GET stream
MODERN_ERA: Final = "2026-07-28"  # stateless: server/discover, mirrored headers, subscriptions/listen

# Methods an agent may only call in one era (any other method: both).
ERA_ONLY: dict[str, Era] = {"ping": LEGACY_ERA, "logging/setLevel": LEGACY_ERA, "resources/subscribe": LEGACY_ERA,
                            "resources/unsubscribe": LEGACY_ERA, "server/discover": MODERN_ERA}
