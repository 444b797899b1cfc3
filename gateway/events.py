"""The one way a part of the gateway tells others that something happened: a typed observer list.

An event source owns a public `on_<event>` list, `Observers[[...]]` for handlers it calls in order
(plain functions) or `AsyncObservers[[...]]` for handlers it awaits in order; whoever wants to hear
appends a handler (gateway/app.py does, in one place). The source decides what a failing handler
means for the rest. A hook whose answer the source uses (the pool's `reconcile`, `resource_status`)
is not an event: it is a constructor argument. A leaf: imports nothing of the gateway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeAlias

P = ParamSpec("P")

Observers: TypeAlias = list[Callable[P, None]]
AsyncObservers: TypeAlias = list[Callable[P, Awaitable[None]]]
