"""Shared state fixtures' building blocks: a controllable clock and a migrated SQLite store."""

from __future__ import annotations

T0 = 1_800_000_000.0  # a fixed "now" for tests that move time by hand


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
